"""Step aggregation before and after: the loop over every step of every window that
``aggregate_steps`` used to run, against the block's ``aggregate_steps`` (a difference array for
``mean``, doubling runs for ``min``), for both combine rules.

Cases: 10 s at 16 kHz with 1 s windows every 1 ms (9001 windows of 1000 steps each), and 1 h at
16 kHz with 2 s windows (the block's default) every 1 s. Three labels of interest. The loops run
once (they are slow); the block's code runs ``--repeat`` times and reports the fastest. Each case
also checks that both give the same step scores (to float32 precision: the loop multiplied
float32 scores in float32).

Usage: python benchmarks/bench_aggregate.py [--repeat 5] [--skip-before] [--out results.json]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402

from common import emit  # noqa: E402
from labeler.timeline import aggregate_steps, ms_to_ix, plan_windows  # noqa: E402

RATE_HZ = 16000
LABELS_OF_INTEREST = 3
CASES = {  # name: (seconds, window ms, stride ms)
    "10s_1ms_stride_1s_window": (10, 1000, 1),
    "1h_1s_stride_2s_window": (3600, 2000, 1000),
}


def loop_mean(windows, scores, values_count, step):
    """The former ``mean``: every step of every window, one at a time."""
    n_steps = math.ceil(values_count / step)
    sums = np.zeros((n_steps, scores.shape[1]))
    weights = np.zeros(n_steps)
    for window, row in zip(windows, scores):
        for k in range(window.start_ix // step, math.ceil(window.stop_ix / step)):
            overlap = min(window.stop_ix, (k + 1) * step, values_count) - max(window.start_ix, k * step)
            if overlap > 0:
                sums[k] += overlap * row
                weights[k] += overlap
    return sums / weights[:, None]


def loop_min(windows, scores, values_count, step):
    """The former ``min``: one slice minimum per window."""
    lowest = np.full((math.ceil(values_count / step), scores.shape[1]), np.inf)
    for window, row in zip(windows, scores):
        first_k, last_k = window.start_ix // step, math.ceil(window.stop_ix / step)
        np.minimum(lowest[first_k:last_k], row, out=lowest[first_k:last_k])
    return lowest


BEFORE = {"mean": loop_mean, "min": loop_min}


def timed(fn, *args) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def bench_case(seconds: int, win_ms: int, stride_ms: int, repeat: int, skip_before: bool) -> dict:
    values_count = seconds * RATE_HZ
    windows = plan_windows(values_count, RATE_HZ, win_ms, stride_ms)
    step = ms_to_ix(stride_ms, RATE_HZ)
    scores = np.random.default_rng(0).random((len(windows), LABELS_OF_INTEREST)).astype(np.float32)
    out = {"windows": len(windows), "steps": math.ceil(values_count / step)}
    for combine, before in BEFORE.items():
        after_s, after = min((timed(aggregate_steps, windows, scores, values_count, step, combine)
                              for _ in range(repeat)), key=lambda t: t[0])
        out[f"{combine}_after_s"] = round(after_s, 4)
        if not skip_before:
            before_s, expected = timed(before, windows, scores, values_count, step)
            out[f"{combine}_before_s"] = round(before_s, 4)
            out[f"{combine}_speedup"] = round(before_s / after_s, 1)
            out[f"{combine}_same_result"] = bool(np.allclose(after, expected, rtol=1e-6, atol=0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-before", action="store_true", help="time only the block's code")
    parser.add_argument("--out")
    args = parser.parse_args()
    results = {name: bench_case(*case, args.repeat, args.skip_before) for name, case in CASES.items()}
    emit(results, args.out)


if __name__ == "__main__":
    main()

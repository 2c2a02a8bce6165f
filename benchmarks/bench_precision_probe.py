"""What ``--dtype auto``'s bf16 probe costs on the full-size AST (random weights, ASTConfig defaults).

The probe runs only on CPUs whose cpuinfo lists avx512_bf16 or amx_bf16. To time it anywhere, this
script hands the probe a cpuinfo text with the flag (production never does) and an empty cache
folder per repeat, so every repeat measures. On a CPU without the flag, bf16 runs in software: the
ratio it reports is that slow path, not what a bf16 CPU would show.

Usage: python benchmarks/bench_precision_probe.py [--threads 2] [--batch 8] [--repeat 3] [--past-the-screen]
       [--out results.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_local import make_full_size_model  # noqa: E402
from common import emit  # noqa: E402
from labeler.classifiers import precision  # noqa: E402
from labeler.classifiers.local import LocalClassifier  # noqa: E402

FORCED_CPUINFO = "flags : avx512_bf16\n"  # makes the probe run on any CPU; benchmarks only


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=None)
    parser.add_argument("--past-the-screen", action="store_true",
                        help="never stop after the one-window screen: times the budgeted whole probe with this "
                             "CPU's (software) bf16, as a CPU where bf16 passes the screen would run it")
    args = parser.parse_args()
    if args.past_the_screen:
        precision.HOPELESS_SPEEDUP = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_full_size_model(Path(tmp) / "ast-full")
        classifier = LocalClassifier(str(model_dir), "cpu", "float32", batch_size=args.batch, threads=args.threads)
        with precision.rows_seen(classifier._model) as seen:  # what the block records on its test window
            classifier.classify([np.zeros(16000, dtype=np.float32)])
        layer, rows = precision.busiest_layer(seen)
        runs = []
        for i in range(args.repeat):
            started = time.perf_counter()
            verdict = precision.choose_cpu_dtype(classifier._model, args.batch, seen, cpuinfo=FORCED_CPUINFO,
                                                 folder=str(Path(tmp) / f"verdicts-{i}"))
            runs.append({"probe_s": round(time.perf_counter() - started, 2),
                         "fp32_over_bf16": round(verdict.speedup, 3),
                         "picked": verdict.dtype, "why": verdict.why, "warning": verdict.warning})
        measure = precision.layer_timer(layer, rows, args.batch)
        fp32_pass_s = statistics.median([measure("float32", args.batch) for _ in range(4)][1:])  # 1st warms up
        gflop = 2 * args.batch * rows * layer.in_features * layer.out_features / 1e9
    emit({"machine": f"{cpu_model()}, flags that matter: {sorted(precision.cpu_flags()) or 'none'}, "
                     f"{args.threads} threads, torch {torch.__version__}",
          "probed_layer": f"Linear {layer.in_features}x{layer.out_features} on batch {args.batch} x {rows} rows",
          "fp32_pass_s": round(fp32_pass_s, 3), "fp32_gflop_per_s": round(gflop / fp32_pass_s, 1),
          # where bf16 passes the screen, the probe runs 8 whole-batch passes: about this, if bf16 ran as fp32
          "full_probe_if_bf16_as_fast_s": round(8 * fp32_pass_s + 4 * fp32_pass_s / args.batch, 2),
          "runs": runs}, args.out)


if __name__ == "__main__":
    main()

"""How much the block's written labels move with the precision: int8 and bf16 against fp32.

One fixed evaluation set: 500 windows of the inference emulator's synthetic classes (near-silence,
broadband noise, 440 Hz / 1 kHz / 3 kHz tones of 0.2-1.2 s at random levels; tests/tiny_models.py
``synthetic_window``, seed 20), labels of interest = the classes the test AST was trained on,
threshold 0.2, and per window the label the block writes (``timeline.winning_specs``: the best
label of interest at or above its threshold, else other). Models:

  trained   the trained test AST (tests/tiny_models.py ``make_trained_ast``, as the test fixture
            builds it): weights that respond to the audio, so equal labels mean something
  full      the full-size AST (ASTConfig defaults, 527 classes) with random weights: the real
            model's shapes and depth, its first 15 classes as labels of interest

Reports max and mean |score difference| over the labels of interest and all classes, and the number
and share of windows whose written label is equal to fp32's.
Usage: python benchmarks/bench_precision_accuracy.py [--models trained,full] [--full-windows 500] [--out r.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402

from bench_local import make_full_size_model  # noqa: E402
from common import emit  # noqa: E402
from inference_emulator import LABELS  # noqa: E402
from labeler.classifiers import int8, local  # noqa: E402
from labeler.core import Settings  # noqa: E402
from labeler.labels import parse_label_specs  # noqa: E402
from labeler.timeline import class_index, winning_specs  # noqa: E402
from tiny_models import make_trained_ast, synthetic_window  # noqa: E402

EVAL_WINDOWS, EVAL_SEED, THRESHOLD = 500, 20, 0.2
PRECISIONS = ("bfloat16", "int8")


def evaluation_set(n: int = EVAL_WINDOWS) -> list[np.ndarray]:
    rng = np.random.default_rng(EVAL_SEED)
    return [synthetic_window(rng) for _ in range(n)]


def written_labels(scores: np.ndarray, class_names, interest) -> np.ndarray:
    """Per window, the index of the label of interest the block writes, or -1 (other)."""
    specs = parse_label_specs("\\n".join(interest), class_names)
    settings = Settings(specs, "other", 1000, 1000, THRESHOLD, "eval")
    index = class_index(class_names)
    return winning_specs(scores[:, [index[s.model_label.lower()] for s in specs]], specs, settings)


def compare(model: str, windows, interest, bf16_windows: int | None = None) -> dict:
    """Each precision against fp32 on ``windows`` (bf16 on the first ``bf16_windows``: slow without native bf16)."""
    started = time.perf_counter()
    fp32_clf = local.LocalClassifier(model, "cpu", "float32")
    fp32 = fp32_clf.classify(windows)
    names, out = fp32_clf.class_names, {"fp32_s": time.perf_counter() - started}
    columns = [class_index(names)[n.lower()] for n in interest]
    reference = written_labels(fp32, names, interest)
    for dtype in PRECISIONS:
        started = time.perf_counter()
        n = min(len(windows), bf16_windows or len(windows)) if dtype == "bfloat16" else len(windows)
        scores = local.LocalClassifier(model, "cpu", dtype).classify(windows[:n])
        diff = np.abs(scores - fp32[:n])
        equal = int((written_labels(scores, names, interest) == reference[:n]).sum())
        out[dtype] = {"max_abs_diff_interest": float(diff[:, columns].max()),
                      "mean_abs_diff_interest": float(diff[:, columns].mean()),
                      "max_abs_diff_all": float(diff.max()), "mean_abs_diff_all": float(diff.mean()),
                      "windows": n, "equal_labels": equal, "equal_share": equal / n,
                      "seconds": time.perf_counter() - started}
    out["windows"] = len(windows)
    out["windows_other_in_fp32"] = int((reference == -1).sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="trained,full")
    parser.add_argument("--full-windows", type=int, default=EVAL_WINDOWS,
                        help="the first N windows of the set for the full-size AST (about 1 s each per precision "
                             "on 2 vCPUs)")
    parser.add_argument("--full-bf16-windows", type=int, default=None,
                        help="fewer windows for bf16 on the full-size AST (6x slower than fp32 without native bf16)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    windows = evaluation_set()
    results = {"threshold": THRESHOLD, "eval_windows": len(windows), "cpus": local.available_cpus(),
               "native_bf16": local.cpu_has_native_bf16()}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[int8.CACHE_ENV] = str(Path(tmp) / "cache")
        if "trained" in args.models:
            trained = make_trained_ast(Path(tmp) / "trained")
            results["trained_ast"] = compare(str(trained.path), windows, LABELS)
        if "full" in args.models:
            full = make_full_size_model(Path(tmp) / "full")
            results["full_size_random_ast"] = compare(str(full), windows[: args.full_windows],
                                                      [f"Class {i}" for i in range(len(LABELS))],
                                                      args.full_bf16_windows)
    emit(results, args.out)


if __name__ == "__main__":
    main()

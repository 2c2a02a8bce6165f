"""Local-backend throughput, side by side in one run, with a full-size AST (random weights).

Speed does not depend on the weight values, so a randomly initialised full-size AST
(ASTConfig defaults, 527 classes) stands in for MIT/ast-finetuned-audioset-10-10-0.4593.
Compared on the same windows:

  (a) bare model      ASTFeatureExtractor + forward, fp32, best batch size: the fp32 ceiling
  (b) naive pipeline  pipeline("audio-classification") called once per window
  (c) the block       transform.main --backend local against the Studio emulator, fp32 and bf16

Also: fp32-vs-bf16 agreement of window scores and labels, and where the machine's time goes.
Usage: python benchmarks/bench_local.py [--windows 16] [--device cpu|cuda] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import (ASTConfig, ASTFeatureExtractor, ASTForAudioClassification,  # noqa: E402
                          AutoFeatureExtractor, AutoModelForAudioClassification, pipeline)

from labeler.classifiers import local  # noqa: E402
from common import emit, run_block_timed  # noqa: E402
from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, noise, silence, tone  # noqa: E402
from studio_emulator import EmuSample, StudioEmulator  # noqa: E402

KEY = "ei_benchmark_key"
WIN_S = 2
AUDIOSET_LIKE = [f"Class {i}" for i in range(527)]


def make_full_size_model(path: Path) -> Path:
    config = ASTConfig(id2label=dict(enumerate(AUDIOSET_LIKE)), label2id={n: i for i, n in enumerate(AUDIOSET_LIKE)})
    torch.manual_seed(0)
    ASTForAudioClassification(config).eval().save_pretrained(path)
    ASTFeatureExtractor().save_pretrained(path)
    return path


def make_windows(n: int) -> list[np.ndarray]:
    makers = [lambda i: tone(SPEECH_HZ, WIN_S, 16000), lambda i: tone(MUSIC_HZ, WIN_S, 16000),
              lambda i: noise(WIN_S, 16000, seed=i), lambda i: tone(DOG_HZ, WIN_S, 16000),
              lambda i: silence(WIN_S, 16000)]
    return [makers[i % len(makers)](i) for i in range(n)]


def bare_model(model_dir: Path, windows, device: str, batch: int) -> float:
    """Windows/s for the reference extractor + model forward, fp32."""
    fe = AutoFeatureExtractor.from_pretrained(model_dir)
    model = AutoModelForAudioClassification.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    with torch.inference_mode():
        model(**fe(windows[:batch], sampling_rate=16000, return_tensors="pt").to(device))  # warm up
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for i in range(0, len(windows), batch):
            inputs = fe(windows[i:i + batch], sampling_rate=16000, return_tensors="pt").to(device)
            model(**inputs).logits.sigmoid().cpu()
    return len(windows) / (time.perf_counter() - started)


def naive_pipeline(model_dir: Path, windows, device: str) -> float:
    clf = pipeline("audio-classification", model=str(model_dir), device=device)
    clf(windows[0], top_k=527, function_to_apply="sigmoid")  # warm up
    started = time.perf_counter()
    for w in windows:
        clf(w, top_k=527, function_to_apply="sigmoid")
    return len(windows) / (time.perf_counter() - started)


def block_end_to_end(model_dir: Path, n_windows: int, dtype: str, device: str, tmp: Path) -> dict:
    """Windows/s of transform.main labeling samples from the Studio emulator.

    windows_per_s covers the labeling (download, decode, features, inference, writes); start-up
    (imports, Studio connect, model load) is reported apart, as it is paid once per run.
    """
    per_sample = 4  # 8 s samples with 2 s windows
    with StudioEmulator(KEY) as studio:
        for i in range(max(1, n_windows // per_sample)):
            audio = concat(*make_windows(per_sample))
            studio.state.add(EmuSample(1000 + i, f"b{i}.wav", 16000, [audio]))
        ids = tmp / "ids.json"
        ids.write_text(json.dumps(sorted(studio.state.samples)))
        code, total, labeling = run_block_timed(
            ["--data-ids-file", str(ids), "--audioset-labels", "Class 0\\nClass 1\\nClass 2", "--backend", "local",
             "--model", str(model_dir), "--dtype", dtype, "--device", device, "--win-size-ms", str(WIN_S * 1000)],
            {"EI_PROJECT_API_KEY": KEY, "EI_API_ENDPOINT": studio.endpoint})
        windows = len(studio.state.samples) * per_sample
    assert code == 0, f"block exited {code}"
    return {"windows": windows, "seconds_total": total, "startup_s": total - labeling,
            "windows_per_s": windows / labeling, "windows_per_s_with_startup": windows / total}


def short_vs_long(model_dir: Path, n_windows: int, device: str, tmp: Path) -> dict:
    """The same number of 1 s windows as many 1 s samples or as two long samples (batch filling on)."""
    out = {}
    for name, per_sample in (("short_1s_samples", 1), ("long_samples", n_windows // 2)):
        with StudioEmulator(KEY) as studio:
            for i in range(n_windows // per_sample):
                studio.state.add(EmuSample(2000 + i, f"s{i}.wav", 16000, [concat(*make_windows(per_sample * 2))[
                    : per_sample * 16000]]))
            ids = tmp / "ids.json"
            ids.write_text(json.dumps(sorted(studio.state.samples)))
            code, _, labeling = run_block_timed(
                ["--data-ids-file", str(ids), "--audioset-labels", "Class 0", "--model", str(model_dir),
                 "--dtype", "float32", "--device", device, "--win-size-ms", "1000"],
                {"EI_PROJECT_API_KEY": KEY, "EI_API_ENDPOINT": studio.endpoint})
            assert code == 0
        out[name] = {"samples": n_windows // per_sample, "windows": n_windows, "windows_per_s": n_windows / labeling}
    return out


def agreement(model_dir: Path, windows, device: str) -> dict:
    fp32 = local.LocalClassifier(str(model_dir), device, "float32").classify(windows)
    low = "bfloat16"
    other = local.LocalClassifier(str(model_dir), device, low).classify(windows)
    interest = [0, 1, 2, 137, 74]  # a handful of labels of interest
    def labels(scores):
        picked = scores[:, interest]
        return np.where(picked.max(axis=1) >= 0.2, picked.argmax(axis=1), -1)
    return {"windows": len(windows), "max_abs_score_diff": float(np.abs(fp32 - other).max()),
            "top1_agreement_all_classes": float((fp32.argmax(1) == other.argmax(1)).mean()),
            "label_agreement_5_labels": float((labels(fp32) == labels(other)).mean())}


def feature_check(windows) -> float:
    fe = ASTFeatureExtractor()
    reference = fe(windows, sampling_rate=16000, return_tensors="np")["input_values"]
    return float(np.abs(local.TorchFbank(fe, "cpu")(windows).numpy() - reference).max())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--repeat", type=int, default=2, help="runs of (a) and (c fp32); the best counts")
    parser.add_argument("--bf16-windows", type=int, default=None,
                        help="windows for the bf16 runs (slow on CPUs without native bf16)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--only-short-vs-long", action="store_true")
    args = parser.parse_args()
    if args.only_short_vs_long:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = make_full_size_model(Path(tmp) / "ast-full")
            emit(short_vs_long(model_dir, args.windows, args.device, Path(tmp)), args.out)
        return
    torch.set_num_threads(local.available_cpus())
    windows = make_windows(args.windows)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_full_size_model(Path(tmp) / "ast-full")
        results = {"machine": f"{platform.processor() or platform.machine()}, {local.available_cpus()} CPUs, "
                              f"torch {torch.__version__}, device {args.device}, "
                              f"native bf16: {local.cpu_has_native_bf16()}",
                   "windows": args.windows}
        results["feature_max_abs_diff"] = feature_check(windows[:8])
        # This machine is shared and noisy: interleave repeats of the fp32 contenders, keep each one's best.
        bare, block_runs = {}, []
        for _ in range(args.repeat):
            for b in map(int, args.batches.split(",")):
                bare[b] = max(bare.get(b, 0.0), bare_model(model_dir, windows, args.device, b))
            block_runs.append(block_end_to_end(model_dir, args.windows, "float32", args.device, Path(tmp)))
        results["a_bare_fp32_by_batch"] = bare
        best = max(bare.values())
        results["b_naive_pipeline"] = naive_pipeline(model_dir, windows, args.device)
        results["c_block_fp32"] = max(block_runs, key=lambda r: r["windows_per_s"])
        bf16_windows = args.bf16_windows or args.windows
        results["c_block_bf16"] = block_end_to_end(model_dir, bf16_windows, "bfloat16", args.device, Path(tmp))
        results["bf16_vs_fp32"] = agreement(model_dir, windows[:bf16_windows], args.device)
    results["ratios"] = {
        "block_fp32_vs_bare": results["c_block_fp32"]["windows_per_s"] / best,
        "block_bf16_vs_bare_fp32": results["c_block_bf16"]["windows_per_s"] / best,
        "naive_pipeline_vs_bare": results["b_naive_pipeline"] / best,
    }
    emit(results, args.out)


if __name__ == "__main__":
    main()

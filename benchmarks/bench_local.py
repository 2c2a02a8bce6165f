"""Local-backend throughput, side by side in one run, with a full-size AST (random weights).

Speed does not depend on the weight values, so a randomly initialised full-size AST
(ASTConfig defaults, 527 classes) stands in for MIT/ast-finetuned-audioset-10-10-0.4593.
Compared on the same windows, each in its own child process (so each peak RSS is its own):

  bare_fp32       ASTFeatureExtractor + forward, fp32, batch 8: what plain transformers does
  block:<dtype>   transform.main --backend local against the Studio emulator, in auto, float32,
                  int8 and bfloat16 (windows/s of the labeling, start-up excluded)

Also: the machine (CPU model string, the flags that matter, threads, load), the host's fp32
ceiling (matmul GFLOP/s over AST's ~261 GFLOP per window), and the int8 conversion command's time
and the converted model's size. ``--only-short-vs-long``: many 1 s samples against two long ones.
Usage: python benchmarks/bench_local.py [--windows 16] [--bf16-windows 8] [--device cpu|cuda] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
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
                          AutoFeatureExtractor, AutoModelForAudioClassification)

from labeler.classifiers import int8, local  # noqa: E402
from common import emit, run_block_timed  # noqa: E402
from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, noise, silence, tone  # noqa: E402
from studio_emulator import EmuSample, StudioEmulator  # noqa: E402

KEY = "ei_benchmark_key"
WIN_S = 2
AUDIOSET_LIKE = [f"Class {i}" for i in range(527)]
AST_GFLOP_PER_WINDOW = 261  # full-size AST, 1214 tokens through 12 layers, per 10.24 s window
CPU_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni")


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


def feature_check(windows) -> float:
    fe = ASTFeatureExtractor()
    reference = fe(windows, sampling_rate=16000, return_tensors="np")["input_values"]
    return float(np.abs(local.TorchFbank(fe, "cpu")(windows).numpy() - reference).max())


def machine() -> dict:
    """What decides the speed: CPU model string, the flags that matter, threads, the load meanwhile."""
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    return {"cpu": model, "flags": {f: f in flags for f in CPU_FLAGS}, "threads": local.available_cpus(),
            "torch": torch.__version__, "load_average_1min_at_start": os.getloadavg()[0]}


def fp32_ceiling(repeats: int = 5) -> dict:
    """The host's fp32 matmul rate (AST's MLP shape) and the windows/s it allows at AST's GFLOP per window."""
    a, b = torch.randn(1024, 768), torch.randn(768, 3072)
    a @ b  # warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(10):
            a @ b
        best = min(best, (time.perf_counter() - started) / 10)
    gflops = 2 * 1024 * 768 * 3072 / best / 1e9
    return {"matmul_gflop_per_s": gflops, "ast_gflop_per_window": AST_GFLOP_PER_WINDOW,
            "ceiling_windows_per_s": gflops / AST_GFLOP_PER_WINDOW}


def convert_int8(model_dir: Path) -> dict:
    """The block's conversion command on the full-size model: its time and the converted model's size."""
    started = time.perf_counter()
    code = int8.main([str(model_dir)])
    assert code == 0, f"conversion exited {code}"
    stored = next((model_dir / "int8").glob("*.onnx"))
    return {"conversion_command_s": time.perf_counter() - started, "int8_model_mb": stored.stat().st_size / 1e6}


def one_contender(name: str, model_dir: Path, n_windows: int, device: str) -> dict:
    """Run in a child process: windows/s of one contender, and the child's peak RSS."""
    if name == "bare_fp32":
        result = {"windows": n_windows, "windows_per_s": bare_model(model_dir, make_windows(n_windows), device, 8)}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = block_end_to_end(model_dir, n_windows, name.split(":")[1], device, Path(tmp))
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM): ``ru_maxrss`` would also count the parent's memory at the fork."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def in_child(name: str, model_dir: Path, n_windows: int, device: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", name, "--model-dir", str(model_dir), "--windows",
                          str(n_windows), "--device", device], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16-windows", type=int, default=None,
                        help="windows for the bf16 run (6x slower than fp32 on CPUs without native bf16)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--only-short-vs-long", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process measuring one contender
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(local.available_cpus())
    if args.one:
        print(json.dumps(one_contender(args.one, Path(args.model_dir), args.windows, args.device)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[int8.CACHE_ENV] = str(Path(tmp) / "cache")
        model_dir = make_full_size_model(Path(tmp) / "ast-full")
        if args.only_short_vs_long:
            emit(short_vs_long(model_dir, args.windows, args.device, Path(tmp)), args.out)
            return
        results = {"machine": machine(), "windows": args.windows, "fp32_ceiling": fp32_ceiling(),
                   "feature_max_abs_diff": feature_check(make_windows(8))}
        results["int8_conversion"] = convert_int8(model_dir)  # stored beside the model: the int8 run finds it
        runs = {}
        for name in ("bare_fp32", "block:float32", "block:auto", "block:int8", "block:bfloat16"):
            n = args.bf16_windows or args.windows if name == "block:bfloat16" else args.windows
            runs[name] = in_child(name, model_dir, n, args.device)
        results["runs"] = runs
    bare = runs["bare_fp32"]["windows_per_s"]
    results["ratios"] = {f"{name}_vs_bare_fp32": r["windows_per_s"] / bare for name, r in runs.items()}
    results["ratios"]["block_auto_vs_block_fp32"] = runs["block:auto"]["windows_per_s"] / \
        runs["block:float32"]["windows_per_s"]
    results["ratios"]["block_int8_vs_block_fp32"] = runs["block:int8"]["windows_per_s"] / \
        runs["block:float32"]["windows_per_s"]
    results["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    emit(results, args.out)


if __name__ == "__main__":
    main()

"""Relative CPU cost per window of each model shape the block can run, all in one process.

Speed does not depend on the weight values, so every model is built from its config with random
weights (nothing is downloaded) in the shape of a hub checkpoint:

  AST 10-10 (default)   ASTConfig(): MIT/ast-finetuned-audioset-10-10-0.4593, 1024 frames, 527 labels
  AST 12-12/14-14/16-16 the same with larger patch strides (MIT/ast-finetuned-audioset-12-12-0.447, ...)
  AST speech commands   ASTConfig(max_length=128), 35 labels: MIT/ast-finetuned-speech-commands-v2
  HuBERT base           HubertConfig(), 12 labels: superb/hubert-base-superb-ks; fed 1 s (a keyword
                        clip) and 10.24 s (what the default AST hears), since its cost grows with length
  Whisper base          WhisperForAudioClassification with the whisper-base encoder (d_model 512,
                        6 layers), 102 labels: its extractor pads every window to 30 s

A window's cost is its features (what the block computes them with: the block's batched torch
fbank for AST, the model's own transformers extractor otherwise) plus the forward pass, fp32, in
torch.inference_mode, on ``--threads`` threads. The shapes are measured in turns within each
repeat (one warm-up, then the median of ``--repeats``), so a machine shared with other work
slows them all alike. Process CPU time is reported beside wall time because a busy machine
inflates it far less (docs/models.md quotes the CPU-time ratios). Relative cost is to the default
AST, per window (higher = dearer). About 4 to 6 minutes on the shared 2-vCPU development machine.

Usage: python benchmarks/bench_models.py [--batch 4] [--repeats 3] [--threads 2] [--out results.json]
May import: labeler (the block's AST features), transformers, torch, numpy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, HubertConfig,  # noqa: E402
                          HubertForSequenceClassification, Wav2Vec2FeatureExtractor, WhisperConfig,
                          WhisperFeatureExtractor, WhisperForAudioClassification)

from labeler.classifiers.local import TorchFbank  # noqa: E402

RATE_HZ = 16000
AST_WINDOW_S = 10.24  # what the default AST hears: 1024 frames of 10 ms
SPEECH_COMMANDS_MEAN, SPEECH_COMMANDS_STD = -6.845978, 5.5654526  # its extractor's statistics
WHISPER_BASE = dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048,
                    decoder_layers=6, decoder_attention_heads=8, decoder_ffn_dim=2048, num_mel_bins=80)
WHISPER_LANG_ID_LABELS = 102  # FLEURS languages, as a Whisper language-id classifier has


@dataclass
class Shape:
    name: str
    window_s: float  # the audio fed per window
    heard: str  # what the model hears of it
    model: torch.nn.Module
    features: Callable[[list[np.ndarray]], dict]
    wall_s: list[float]
    cpu_s: list[float]

    @property
    def params_m(self) -> float:
        return sum(p.numel() for p in self.model.parameters()) / 1e6


def labels(n: int) -> dict:
    return {"id2label": {i: f"class {i}" for i in range(n)}, "label2id": {f"class {i}": i for i in range(n)}}


def ast_shape(name: str, window_s: float, heard: str, n_labels: int, **config) -> Shape:
    extractor = ASTFeatureExtractor(max_length=config.get("max_length", 1024),
                                    **({"mean": SPEECH_COMMANDS_MEAN, "std": SPEECH_COMMANDS_STD}
                                       if config.get("max_length") == 128 else {}))
    fbank = TorchFbank(extractor, "cpu")
    model = ASTForAudioClassification(ASTConfig(**config, **labels(n_labels)))
    return Shape(name, window_s, heard, model, lambda w: {"input_values": fbank(w)}, [], [])


def hubert_shape(window_s: float) -> Shape:
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=RATE_HZ, do_normalize=True,
                                         return_attention_mask=False)
    model = HubertForSequenceClassification(HubertConfig(**labels(12)))
    return Shape(f"HuBERT base, {window_s:g} s window", window_s, f"{window_s:g} s", model,
                 lambda w: extractor(w, sampling_rate=RATE_HZ, return_tensors="pt"), [], [])


def whisper_shape(window_s: float) -> Shape:
    extractor = WhisperFeatureExtractor(feature_size=WHISPER_BASE["num_mel_bins"])
    model = WhisperForAudioClassification(WhisperConfig(**WHISPER_BASE, **labels(WHISPER_LANG_ID_LABELS)))
    return Shape("Whisper base encoder + head", window_s, "30 s (padded)", model,
                 lambda w: {"input_features": extractor(w, sampling_rate=RATE_HZ, return_tensors="pt").input_features},
                 [], [])


def build_shapes() -> list[Shape]:
    shapes = [ast_shape("AST 10-10 (default)", AST_WINDOW_S, "10.24 s", 527)]
    shapes += [ast_shape(f"AST {s}-{s}", AST_WINDOW_S, "10.24 s", 527, frequency_stride=s, time_stride=s)
               for s in (12, 14, 16)]
    shapes += [ast_shape("AST speech commands", 1.0, "1.28 s (padded)", 35, max_length=128),
               hubert_shape(1.0), hubert_shape(AST_WINDOW_S), whisper_shape(AST_WINDOW_S)]
    for shape in shapes:
        shape.model.eval()
    return shapes


def windows_for(shape: Shape, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    n = round(shape.window_s * RATE_HZ)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for _ in range(batch)]


def run_once(shape: Shape, windows: list[np.ndarray]) -> tuple[float, float]:
    """(wall s, process CPU s) of features + forward for one batch."""
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        logits = shape.model(**shape.features(windows)).logits
    assert logits.shape[0] == len(windows)
    return time.perf_counter() - wall, time.process_time() - cpu


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine(threads: int) -> dict:
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": threads,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "load_avg_1m_start": os.getloadavg()[0]}


def results(shapes: list[Shape], batch: int) -> list[dict]:
    base = shapes[0]
    base_wall, base_cpu = statistics.median(base.wall_s) / batch, statistics.median(base.cpu_s) / batch
    rows = []
    for s in shapes:
        wall, cpu = statistics.median(s.wall_s) / batch, statistics.median(s.cpu_s) / batch
        rows.append({"shape": s.name, "window_s": s.window_s, "heard": s.heard, "params_m": round(s.params_m, 1),
                     "windows_per_s": round(1 / wall, 2), "ms_per_window": round(wall * 1000),
                     "cpu_ms_per_window": round(cpu * 1000), "relative_wall": round(wall / base_wall, 3),
                     "relative_cpu": round(cpu / base_cpu, 3), "repeats": len(s.wall_s)})
    return rows


def print_table(info: dict, rows: list[dict], batch: int) -> None:
    print(f"\nMachine: {info['cpu']}, {info['logical_cpus']} logical CPUs, torch threads {info['torch_threads']}, "
          f"torch {info['torch']}, transformers {info['transformers']}, Python {info['python']}; "
          f"load average (1 min) {info['load_avg_1m_start']:.2f} at start, {info['load_avg_1m_end']:.2f} at end; "
          f"fp32, batch {batch}, median of {rows[0]['repeats']} after one warm-up; {info['seconds']:.0f} s in all\n")
    print("| model shape | window fed | heard | params (M) | windows/s | ms/window | CPU ms/window "
          "| relative cost (wall) | relative cost (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['window_s']:g} s | {r['heard']} | {r['params_m']} | {r['windows_per_s']} "
              f"| {r['ms_per_window']} | {r['cpu_ms_per_window']} | {r['relative_wall']:.2f} "
              f"| {r['relative_cpu']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4, help="windows per forward pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per shape (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    info = machine(args.threads)
    shapes = build_shapes()
    rng = np.random.default_rng(0)
    inputs = [windows_for(s, args.batch, rng) for s in shapes]
    for shape, windows in zip(shapes, inputs):  # warm-up: first calls allocate and pick kernels
        run_once(shape, windows)
    for repeat in range(args.repeats):  # in turns, so background load hits every shape alike
        for shape, windows in zip(shapes, inputs):
            wall, cpu = run_once(shape, windows)
            shape.wall_s.append(wall)
            shape.cpu_s.append(cpu)
        print(f"repeat {repeat + 1}/{args.repeats} done at {time.perf_counter() - started:.0f} s", flush=True)
    info["load_avg_1m_end"] = os.getloadavg()[0]
    info["seconds"] = time.perf_counter() - started
    rows = results(shapes, args.batch)
    print_table(info, rows, args.batch)
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": info, "batch": args.batch, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

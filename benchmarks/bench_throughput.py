"""Throughput at dataset scale against the emulators (remote backend), side by side in one run.

  remote     20 samples x 10 s at 16 kHz, 1 s windows (200 windows), endpoint latency 100 ms,
             Studio latency 10 ms: the block at its default concurrency vs a sequential
             one-request-per-window baseline (what the original block did) vs the latency bound.
  short      2,000 samples of 1 s: samples/s, and where a sample's time goes.
  memory     peak RSS labeling 2,000 samples vs 20 samples.
  body       request body size of a 1 s window as WAV vs FLAC (base64 in JSON), and encode time.

The block runs in a child process (as in Studio); the emulators run in this one.
Usage: python benchmarks/bench_throughput.py [--short 2000] [--out results.json]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402

from common import emit  # noqa: E402
import requests  # noqa: E402
import soundfile  # noqa: E402

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, noise, silence, tone  # noqa: E402
from inference_emulator import InferenceEmulator  # noqa: E402
from studio_emulator import EmuSample, StudioEmulator  # noqa: E402

KEY, TOKEN = "ei_throughput_bench", "hf_throughput_bench"
INFERENCE_LATENCY_S, STUDIO_LATENCY_S = 0.100, 0.010
REPEATS = 5

# Runs the block, timing its stages; prints one JSON line. Stage times add up across threads.
# Peak RSS is VmHWM: ru_maxrss would also count the parent's memory at the fork before exec.
CHILD = r"""
import json, sys, time, collections
sys.path.insert(0, {root!r})
import transform
from labeler import pipeline, studio
from labeler.classifiers import remote
stages = collections.defaultdict(float)
def timed(owner, name, stage):
    original = getattr(owner, name)
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            stages[stage] += time.perf_counter() - t0
    setattr(owner, name, wrapper)
timed(studio.Studio, "read_sample", "studio_read_sample")
timed(studio.Studio, "download_wav", "studio_download_wav")
timed(studio.Studio, "set_metadata", "studio_write_metadata")
timed(studio.Studio, "set_labels", "studio_write_labels")
timed(studio, "decode_wav_file_16k", "decode_and_resample")
timed(remote.RemoteClassifier, "classify", "inference_wait")
timed(remote.RemoteClassifier, "_body", "encode_request")
timed(pipeline, "label_sample", "labels_from_scores")
timed(transform, "run", "labeling")
code = transform.main(sys.argv[1:])
print("RESULT " + json.dumps({{"code": code, "stages_s": stages,
      "maxrss_mb": next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")) / 1024}}),
      flush=True)
"""


def run_block(studio, hf, tmp: Path, *extra: str) -> dict:
    ids = tmp / "ids.json"
    ids.write_text(json.dumps(sorted(studio.state.samples)))
    env = {**os.environ, "EI_PROJECT_API_KEY": KEY, "EI_API_ENDPOINT": studio.endpoint, "HF_TOKEN": TOKEN,
           "HF_ENDPOINT": hf.hub}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), "--data-ids-file", str(ids),
                           "--audioset-labels", "Speech\\nMusic\\nDog", "--backend", "remote",
                           "--inference-url", hf.url, "--win-size-ms", "1000", *extra],
                          env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line and proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(line[len("RESULT "):])
    result["process_wall_s"] = wall
    return result


def sequential_baseline(studio, hf) -> float:
    """One request per window, in order, as the original block did (but in memory, no temp files)."""
    session = requests.Session()
    studio_headers = {"x-api-key": KEY}
    started = time.perf_counter()
    for sid in sorted(studio.state.samples):
        base = f"{studio.endpoint}/api/12345/raw-data/{sid}"
        sample = session.get(base, params={"limitPayloadValues": 1}, headers=studio_headers, timeout=30).json()
        audio, rate = soundfile.read(io.BytesIO(session.get(f"{base}/wav", params={"axisIx": 0},
                                                            headers=studio_headers, timeout=30).content),
                                     dtype="float32")
        labels = []
        for start in range(0, len(audio), rate):
            buf = io.BytesIO()
            soundfile.write(buf, audio[start:start + rate], rate, format="WAV", subtype="PCM_16")
            body = {"inputs": base64.b64encode(buf.getvalue()).decode(), "parameters": {"top_k": 15}}
            scores = session.post(hf.url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
            end = min(start + rate, len(audio)) - 1
            labels.append({"startIndex": start, "endIndex": end, "label": scores[0]["label"]})
        session.post(f"{base}/structured-labels", json={"structuredLabels": labels}, headers=studio_headers,
                     timeout=30)
        session.post(f"{base}/metadata", json={"metadata": sample["sample"]["metadata"]}, headers=studio_headers,
                     timeout=30)
    return time.perf_counter() - started


def ten_second_samples(studio, n: int = 20) -> None:
    studio.state.samples.clear()
    parts = [tone(SPEECH_HZ, 2, 16000), tone(MUSIC_HZ, 3, 16000), silence(1, 16000), tone(DOG_HZ, 2, 16000),
             noise(2, 16000)]
    for i in range(n):
        studio.state.add(EmuSample(1 + i, f"ten-{i}.wav", 16000, [concat(*parts[i % 5:], *parts[:i % 5])]))


def short_samples(studio, n: int) -> None:
    studio.state.samples.clear()
    sounds = [tone(SPEECH_HZ, 1, 16000), tone(MUSIC_HZ, 1, 16000), tone(DOG_HZ, 1, 16000), silence(1, 16000)]
    for i in range(n):
        studio.state.add(EmuSample(1 + i, f"short-{i}.wav", 16000, [sounds[i % 4]]))


def remote_comparison(tmp: Path) -> dict:
    with StudioEmulator(KEY) as studio, InferenceEmulator(TOKEN) as hf:
        studio.state.latency_s, hf.state.latency_s = STUDIO_LATENCY_S, INFERENCE_LATENCY_S
        runs = []
        for _ in range(REPEATS):  # a shared 2-CPU machine is noisy: report the median run
            ten_second_samples(studio)
            runs.append(run_block(studio, hf, tmp)["stages_s"]["labeling"])
        ten_second_samples(studio)
        baseline = sequential_baseline(studio, hf)
    windows, concurrency = 200, 16  # the block's default --concurrency
    # Unavoidable Studio time: one sample's reads before the first request and its writes after the last.
    studio_s = (2 + 2) * STUDIO_LATENCY_S  # read, download; labels, done mark (fresh samples)
    bound = windows * INFERENCE_LATENCY_S / concurrency + studio_s
    labeling = float(np.median(runs))
    return {"windows": windows, "concurrency": concurrency, "block_labeling_s": labeling,
            "block_labeling_runs_s": runs, "sequential_baseline_s": baseline,
            "latency_bound_s": bound, "speedup_vs_sequential": baseline / labeling,
            "ratio_to_latency_bound": labeling / bound}


def short_run(n: int, tmp: Path) -> dict:
    with StudioEmulator(KEY) as studio, InferenceEmulator(TOKEN) as hf:
        short_samples(studio, n)
        result = run_block(studio, hf, tmp)
        assert all(s.structured_labels for s in studio.state.samples.values())
    labeling = result["stages_s"]["labeling"]
    per_sample_ms = {k: round(v / n * 1000, 2) for k, v in result["stages_s"].items() if k != "labeling"}
    return {"samples": n, "labeling_s": labeling, "samples_per_s": n / labeling,
            "process_wall_s": result["process_wall_s"], "maxrss_mb": round(result["maxrss_mb"], 1),
            "stage_ms_per_sample_summed_over_threads": per_sample_ms}


def body_sizes() -> dict:
    windows = {"tone": tone(MUSIC_HZ, 1, 16000), "noise": noise(1, 16000), "tone+noise": tone(SPEECH_HZ, 1, 16000)
               + noise(1, 16000, amplitude=0.05)}
    out = {}
    for name, audio in windows.items():
        sizes = {}
        for fmt in ("WAV", "FLAC"):
            started = time.perf_counter()
            for _ in range(50):
                buf = io.BytesIO()
                soundfile.write(buf, audio, 16000, format=fmt, subtype="PCM_16")
            sizes[fmt] = {"bytes": len(buf.getvalue()), "base64_bytes": len(base64.b64encode(buf.getvalue())),
                          "encode_ms": round((time.perf_counter() - started) / 50 * 1000, 3)}
        out[name] = sizes
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--short", type=int, default=2000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {"machine": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
                   "remote": remote_comparison(Path(tmp)),
                   "short": short_run(args.short, Path(tmp)),
                   "memory_20_samples": short_run(20, Path(tmp))["maxrss_mb"],
                   "body_sizes_1s_window": body_sizes()}
    results["memory_growth_mb_20_to_n"] = round(results["short"]["maxrss_mb"] - results["memory_20_samples"], 1)
    emit(results, args.out)


if __name__ == "__main__":
    main()

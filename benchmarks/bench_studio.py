"""Thousands of short clips against a slow Studio, and long multi-channel samples, measured end to end.

  clips      300 and 3,000 one-second 16 kHz samples, Studio answering every call in 100 ms, the
             inference endpoint in 30 ms (remote backend): samples/s, Studio calls per sample, the
             peak number of Studio requests in flight (counted by the emulated Studio) and the
             block's peak RSS. Each size runs twice in this one run: the block as it is (one
             adaptive Studio budget, --studio-concurrency 32) and the old fixed design (4 samples
             downloaded ahead, 4 writer threads, the labeling pre-mark on every sample), which the
             child process rebuilds with three patches (see LEGACY).
  long       one and four 1-hour 48 kHz stereo WAV samples: the block's peak RSS.
  before     the block as it was before the Studio budget (commit OLD_COMMIT, extracted with
             git archive): 300 clips and one 1-hour 48 kHz stereo sample, as a check on LEGACY.

The block runs in a child process (as in Studio); the emulators run in this one.
Usage: python benchmarks/bench_studio.py [--sizes 300 3000] [--skip-long] [--skip-before] [--out results.json]
"""

from __future__ import annotations

import argparse
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
import soundfile  # noqa: E402

from common import emit  # noqa: E402

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, tone  # noqa: E402
from inference_emulator import InferenceEmulator  # noqa: E402
import studio_emulator  # noqa: E402
from studio_emulator import EmuSample, StudioEmulator  # noqa: E402

KEY, TOKEN = "ei_studio_bench", "hf_studio_bench"
STUDIO_LATENCY_S, INFERENCE_LATENCY_S = 0.100, 0.030
LONG_SECONDS, LONG_RATE_HZ = 3600, 48_000
OLD_COMMIT = "a9f76eb"  # the last commit with the fixed 4 + 4 design

# The old design, rebuilt in the child: 4 samples loaded ahead and 4 writer threads (the pipeline
# sizes both from the target's `parallel`), every sample bracketed by 3 writes, and the client's
# own connection pool. The budget (8) never binds: 4 + 4 threads never have more in flight.
LEGACY = r"""
from labeler import studio as _studio
_target_init, _write_result = _studio.StudioTarget.__init__, _studio.write_result
def _legacy_init(self, *a, **k):
    _target_init(self, *a, **k)
    self.parallel = 4
def _legacy_write(studio, info, labeling, settings, job_id):
    if job_id is None and info.metadata.get(_studio.STATUS_KEY) != _studio.STATUS_DONE:
        studio.set_metadata(info.sample_id, _studio.block_metadata(info.metadata, settings, _studio.STATUS_LABELING))
    _write_result(studio, info, labeling, settings, job_id)
_studio.StudioTarget.__init__, _studio.write_result = _legacy_init, _legacy_write
"""

# Runs the block; prints one JSON line with the labeling time and the peak RSS. The peak is VmHWM
# (this process's own address space): ru_maxrss would also count the parent's memory at the fork
# before exec, and the parent holds the emulated Studio's audio.
CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import transform
{legacy}
timing = {{}}
original_run = transform.run
def timed_run(*a, **k):
    t0 = time.perf_counter()
    try:
        return original_run(*a, **k)
    finally:
        timing["labeling_s"] = time.perf_counter() - t0
transform.run = timed_run
code = transform.main(sys.argv[1:])
print("RESULT " + json.dumps({{"code": code, "labeling_s": timing.get("labeling_s"),
      "maxrss_mb": next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")) / 1024}}),
      flush=True)
"""


def run_child(studio, hf, tmp: Path, legacy: bool, *extra: str, root: Path = ROOT) -> dict:
    ids = tmp / "ids.json"
    ids.write_text(json.dumps(sorted(studio.state.samples)))
    env = {**os.environ, "EI_PROJECT_API_KEY": KEY, "EI_API_ENDPOINT": studio.endpoint, "HF_TOKEN": TOKEN,
           "HF_ENDPOINT": hf.hub}
    code = CHILD.format(root=str(root), legacy=LEGACY if legacy else "")
    proc = subprocess.run([sys.executable, "-c", code, "--data-ids-file", str(ids),
                           "--audioset-labels", "Speech\\nMusic\\nDog", "--backend", "remote",
                           "--inference-url", hf.url, *extra],
                          env=env, capture_output=True, text=True, timeout=3600)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line and proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    result["summary"] = next(x for x in proc.stdout.splitlines() if x.startswith("Done:"))
    return result


def clips(studio, n: int) -> None:
    studio.state.samples.clear()
    sounds = [tone(SPEECH_HZ, 1, 16000), tone(MUSIC_HZ, 1, 16000), tone(DOG_HZ, 1, 16000)]
    for i in range(n):
        studio.state.add(EmuSample(1 + i, f"clip-{i}.wav", 16000, [sounds[i % 3]]))


def clip_run(n: int, legacy: bool, tmp: Path, old_root: Path | None = None) -> dict:
    with StudioEmulator(KEY) as studio, InferenceEmulator(TOKEN) as hf:
        clips(studio, n)
        studio.state.latency_s, hf.state.latency_s = STUDIO_LATENCY_S, INFERENCE_LATENCY_S
        extra = ["--win-size-ms", "1000"] + (["--studio-concurrency", "8"] if legacy else [])
        result = run_child(studio, hf, tmp, legacy, *extra, root=old_root or ROOT)
        assert all(s.structured_labels for s in studio.state.samples.values())
        calls = len([r for r in studio.state.requests if "/raw-data/" in r.path])
        design = f"code of {OLD_COMMIT}" if old_root else "old fixed 4 + 4" if legacy else \
            "budget (--studio-concurrency 32)"
        return {"design": design, "samples": n,
                "labeling_s": round(result["labeling_s"], 2), "samples_per_s": round(n / result["labeling_s"], 1),
                "studio_calls_per_sample": round(calls / n, 2), "peak_studio_in_flight": studio.state.max_in_flight,
                "studio_connections": len(studio.state.connections), "peak_rss_mb": round(result["maxrss_mb"], 1)}


def stereo_hour_wav() -> bytes:
    """1 hour of 48 kHz 16-bit stereo (speech-like tone left, music-like tone right), built in blocks."""
    buf = io.BytesIO()
    t = np.arange(LONG_RATE_HZ * 60) / LONG_RATE_HZ
    minute = np.stack([0.4 * np.sin(2 * np.pi * SPEECH_HZ * t), 0.4 * np.sin(2 * np.pi * MUSIC_HZ * t)], axis=1)
    with soundfile.SoundFile(buf, "w", LONG_RATE_HZ, 2, "PCM_16", format="WAV") as fh:
        for _ in range(LONG_SECONDS // 60):
            fh.write(minute)
    return buf.getvalue()


def covers_every_index(labels: list[dict], values_count: int) -> list[dict]:
    """The emulator's label check, in O(segments) instead of O(samples) for 172.8 M-sample files."""
    end = -1
    for item in sorted(labels, key=lambda x: x["startIndex"]):
        if item["startIndex"] > end + 1 or item["endIndex"] >= values_count:
            raise ValueError(f"structuredLabels: gap or overflow at index {end + 1}")
        end = max(end, item["endIndex"])
    if end != values_count - 1:
        raise ValueError(f"structuredLabels: index {end + 1} does not have a label")
    return labels


def long_run(count: int, wav: bytes, tmp: Path, old_root: Path | None = None) -> dict:
    studio_emulator.validate_structured_labels = covers_every_index
    with StudioEmulator(KEY) as studio, InferenceEmulator(TOKEN) as hf:
        for i in range(count):
            # The emulated Studio describes the sample by one axis; the served file is the stereo WAV.
            studio.state.add(_HourSample(1 + i, f"hour-{i}.wav", LONG_RATE_HZ, [np.zeros(0, np.float32)],
                                         wav_override=wav))
        started = time.perf_counter()
        result = run_child(studio, hf, tmp, False, "--win-size-ms", "10000", "--concurrency", "32",
                           root=old_root or ROOT)
        assert all(s.structured_labels for s in studio.state.samples.values())
    return {"code": f"{OLD_COMMIT}" if old_root else "this tree", "samples": count, "audio": "1 h, 48 kHz, stereo, 16-bit WAV each", "wav_mb_each": round(len(wav) / 2**20),
            "peak_rss_mb": round(result["maxrss_mb"], 1), "wall_s": round(time.perf_counter() - started, 1)}


class _HourSample(EmuSample):
    """An EmuSample that reports an hour of frames without holding them (the WAV is served as is)."""

    @property
    def values_count(self) -> int:
        return LONG_SECONDS * LONG_RATE_HZ


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 3000])
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--skip-before", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results: dict = {"machine": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
                     "studio_latency_s": STUDIO_LATENCY_S, "inference_latency_s": INFERENCE_LATENCY_S, "clips": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            for legacy in (False, True):
                results["clips"].append(clip_run(n, legacy, Path(tmp)))
                print(json.dumps(results["clips"][-1]), file=sys.stderr, flush=True)
        wav = None if args.skip_long else stereo_hour_wav()
        if wav is not None:
            results["long"] = [long_run(1, wav, Path(tmp)), long_run(4, wav, Path(tmp))]
        if not args.skip_before:
            old_root = Path(tmp) / "before"
            old_root.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_COMMIT], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(old_root)], input=archive.stdout, check=True)
            results["before"] = [clip_run(300, False, Path(tmp), old_root)]
            if wav is not None:
                results["before"].append(long_run(1, wav, Path(tmp), old_root))
    emit(results, args.out)


if __name__ == "__main__":
    main()

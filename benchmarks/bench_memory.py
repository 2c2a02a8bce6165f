"""Peak memory of the block labeling long samples (local backend), measured as the child's max RSS.

Audio handling does not depend on the model's size, so a tiny AST keeps this fast; the full-size
model adds its weights (~330 MB in fp32) on top.

  studio   a 1-minute and a 1-hour 16 kHz Studio sample: the difference is what the long sample
           itself costs (its audio held once, as 16 kHz float32; the download goes to a temporary
           file and is decoded in blocks), with no per-window copies.
  folder   --input-dir with one and with four 1-hour 48 kHz stereo WAV files (16-bit, 691 MB each;
           the four are hard links to one generated file), 10 s windows: the block as it is, and
           (unless --skip-before) the block at BEFORE_COMMIT, which read each folder file whole,
           extracted with git archive and measured in this same run.

Usage: python benchmarks/bench_memory.py [--cases studio folder] [--skip-before] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import soundfile  # noqa: E402

from common import emit  # noqa: E402

from audio import MUSIC_HZ, SPEECH_HZ  # noqa: E402
from conftest import make_tiny_ast  # noqa: E402
from inference_emulator import LABELS  # noqa: E402
from studio_emulator import EmuSample, StudioEmulator  # noqa: E402

KEY = "ei_memory_benchmark"
BEFORE_COMMIT = "e3bc34b"  # the last commit whose folder target read each file whole (soundfile.read)
FOLDER_SECONDS, FOLDER_RATE_HZ = 3600, 48_000

# Prints the child's peak RSS after running the block, so each measurement is its own process.
# VmHWM, not ru_maxrss: ru_maxrss also counts the parent's memory at the fork before exec, and the
# parent holds the emulated Studio's audio.
CHILD = """
import sys
sys.path.insert(0, {root!r})
import transform
code = transform.main(sys.argv[1:])
print("MAXRSS_KB", next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")),
      flush=True)
sys.exit(code)
"""


def long_audio(seconds: int, rate: int = 16000) -> np.ndarray:
    """Alternating 5 s speech-like and music-like tones, built in place to keep this process small."""
    audio = np.empty(seconds * rate, dtype=np.float32)
    t = np.arange(5 * rate) / rate
    blocks = [0.5 * np.sin(2 * np.pi * f * t).astype(np.float32) for f in (SPEECH_HZ, MUSIC_HZ)]
    for i in range(0, len(audio), 5 * rate):
        chunk = blocks[(i // (5 * rate)) % 2]
        audio[i:i + len(chunk)] = chunk[: len(audio) - i]
    return audio


def peak_rss_mb(stdout: str) -> float:
    return round(int(next(line.split()[1] for line in stdout.splitlines() if line.startswith("MAXRSS_KB"))) / 1024, 1)


def measure(seconds: int, model: Path, tmp: Path) -> dict:
    with StudioEmulator(KEY) as studio:
        studio.state.add(EmuSample(7, f"long-{seconds}s.wav", 16000, [long_audio(seconds)]))
        ids = tmp / "ids.json"
        ids.write_text("[7]")
        env = {**os.environ, "EI_PROJECT_API_KEY": KEY, "EI_API_ENDPOINT": studio.endpoint}
        proc = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), "--data-ids-file", str(ids),
                               "--audioset-labels", "Speech\\nMusic", "--model", str(model), "--win-size-ms", "2000"],
                              env=env, capture_output=True, text=True, timeout=3600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        segments = len(studio.state.samples[7].structured_labels)
    return {"seconds_of_audio": seconds, "windows": seconds // 2, "segments": segments,
            "peak_rss_mb": peak_rss_mb(proc.stdout)}


def stereo_hour_wav(path: Path) -> Path:
    """An hour of 48 kHz stereo, 16-bit, written a minute at a time; the channels differ
    (speech and music tones in opposite turns, 5 s each)."""
    t = np.arange(5 * FOLDER_RATE_HZ) / FOLDER_RATE_HZ
    speech, music = (0.4 * np.sin(2 * np.pi * f * t) for f in (SPEECH_HZ, MUSIC_HZ))
    minute = np.concatenate([np.stack([speech, music], axis=1), np.stack([music, speech], axis=1)] * 6)
    with soundfile.SoundFile(path, "w", FOLDER_RATE_HZ, 2, "PCM_16") as sf:
        for _ in range(FOLDER_SECONDS // 60):
            sf.write(minute)
    return path


def measure_folder(files: int, wav: Path, model: Path, tmp: Path, root: Path = ROOT) -> dict:
    folder = tmp / f"folder-{files}-{root.name}"
    folder.mkdir()
    for i in range(files):
        os.link(wav, folder / f"hour-{i}.wav")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EI_")}
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=str(root)), "--data-ids-file", "",
                           "--input-dir", str(folder), "--audioset-labels", "Speech\\nMusic", "--model", str(model),
                           "--win-size-ms", "10000"],
                          env=env, capture_output=True, text=True, timeout=3 * 3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    labeled = len(json.loads((folder / "info.labels").read_text())["files"])
    return {"files": files, "hours_of_audio": files * FOLDER_SECONDS / 3600, "labeled": labeled,
            "peak_rss_mb": peak_rss_mb(proc.stdout)}


def folder_cases(model: Path, tmp: Path, before: bool) -> dict:
    wav = stereo_hour_wav(tmp / "hour.wav")
    results = {"after": [measure_folder(1, wav, model, tmp), measure_folder(4, wav, model, tmp)]}
    if before:
        old_root = tmp / "before"
        old_root.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE_COMMIT], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old_root)], input=archive.stdout, check=True)
        results[f"before ({BEFORE_COMMIT})"] = [measure_folder(1, wav, model, tmp, old_root),
                                                measure_folder(4, wav, model, tmp, old_root)]
    return results


def studio_cases(model: Path, tmp: Path) -> dict:
    short, long = measure(60, model, tmp), measure(3600, model, tmp)
    one_hour_mb = 3600 * 16000 * 4 / 2**20  # float32 samples at 16 kHz
    return {"one_minute": short, "one_hour": long,
            "difference_mb": round(long["peak_rss_mb"] - short["peak_rss_mb"], 1),
            "one_hour_audio_as_float32_mb": round(one_hour_mb, 1)}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.machine())
    memory_gb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    return f"{os.cpu_count()} CPUs ({cpu}), {memory_gb:.0f} GB, Python {sys.version.split()[0]}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", nargs="+", choices=["studio", "folder"], default=["studio", "folder"])
    parser.add_argument("--skip-before", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_ast(Path(tmp) / "tiny", [0.0] * len(LABELS))
        if "studio" in args.cases:
            results["studio"] = studio_cases(model, Path(tmp))
        if "folder" in args.cases:
            results["folder"] = folder_cases(model, Path(tmp), not args.skip_before)
    emit(results, args.out)


if __name__ == "__main__":
    main()

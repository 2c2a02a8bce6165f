"""Peak memory of the block labeling long samples (local backend), measured as the child's max RSS.

Audio handling does not depend on the model's size, so a tiny AST keeps this fast; the full-size
model adds its weights (~330 MB in fp32) on top. Compares a 1-minute and a 1-hour 16 kHz sample
in one run: the difference is what the long sample itself costs (its audio held once, as 16 kHz
float32; the download goes to a temporary file and is decoded in blocks), with no per-window copies.
Usage: python benchmarks/bench_memory.py [--out results.json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from common import emit  # noqa: E402

from audio import MUSIC_HZ, SPEECH_HZ  # noqa: E402
from conftest import make_tiny_ast  # noqa: E402
from inference_emulator import LABELS  # noqa: E402
from studio_emulator import EmuSample, StudioEmulator  # noqa: E402

KEY = "ei_memory_benchmark"

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
    rss_kb = int(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("MAXRSS_KB")))
    return {"seconds_of_audio": seconds, "windows": seconds // 2, "segments": segments,
            "peak_rss_mb": round(rss_kb / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_ast(Path(tmp) / "tiny", [0.0] * len(LABELS))
        short, long = measure(60, model, Path(tmp)), measure(3600, model, Path(tmp))
    one_hour_mb = 3600 * 16000 * 4 / 2**20  # float32 samples at 16 kHz
    results = {"one_minute": short, "one_hour": long,
               "difference_mb": round(long["peak_rss_mb"] - short["peak_rss_mb"], 1),
               "one_hour_audio_as_float32_mb": round(one_hour_mb, 1)}
    emit(results, args.out)


if __name__ == "__main__":
    main()

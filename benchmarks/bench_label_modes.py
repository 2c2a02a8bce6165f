"""Frame accuracy of the labels at event boundaries: both combine rules, three scoring behaviours,
overlapping windows, side by side in one run.

Recordings: 30 s at 16 kHz with three 6 s events (speech, music and dog tones) at offsets off
any stride grid: two back to back (a label-to-label boundary), one alone in silence. The block
runs in-process (remote backend) against the emulators; the inference emulator scores the whole window's spectrum (``window``, the emulator's default), or
like a model trained on weak clip-level labels (``presence``: a window scores a sound as high as
its best 100 ms frame, so a window that only touches an event scores like one full of it), or in
proportion to how much of the window the sound fills (``fill``: the mean of its 100 ms frames).

Frame accuracy: the share of a recording's indices whose written label equals the ground truth,
weighted by recording length.
Usage: python benchmarks/bench_label_modes.py [--recordings 6] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, tone  # noqa: E402
from common import emit, run_block_timed  # noqa: E402
from inference_emulator import InferenceEmulator  # noqa: E402
from studio_emulator import EmuSample, StudioEmulator  # noqa: E402

KEY, TOKEN = "ei_label_modes_bench", "hf_label_modes_bench"
RATE_HZ, LENGTH_S, EVENT_S = 16_000, 30.0, 6.0
EVENTS = (("Speech", SPEECH_HZ), ("Music", MUSIC_HZ), ("Dog", DOG_HZ))
WINDOWS_MS = ((2000, 500), (4000, 1000))


def recording(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Audio and its per-index ground truth: three 6 s events; the first two back to back, the
    third after 1.3 to 3.7 s of silence."""
    rng = np.random.default_rng(seed)
    audio = np.zeros(int(LENGTH_S * RATE_HZ), dtype=np.float32)
    truth = np.full(len(audio), "other", dtype=object)
    start_s = rng.uniform(0.7, 2.3)
    order = rng.permutation(np.array(EVENTS, dtype=object))
    first = order[0][0]
    for name, hz in order:
        start = int(start_s * RATE_HZ)
        piece = tone(hz, EVENT_S, RATE_HZ)
        audio[start : start + len(piece)] = piece
        truth[start : start + len(piece)] = name
        start_s += EVENT_S + (0.0 if name == first else rng.uniform(1.3, 3.7))
    return audio, truth


def written_labels(labels: list[dict], length: int) -> np.ndarray:
    out = np.empty(length, dtype=object)
    for seg in labels:
        out[seg["startIndex"] : seg["endIndex"] + 1] = seg["label"]
    return out


def frame_accuracy(scoring: str, combine: str, win_ms: int, stride_ms: int, recordings, tmp: Path) -> float:
    with StudioEmulator(KEY) as studio, InferenceEmulator(TOKEN) as hf:
        hf.state.scoring = scoring
        for i, (audio, _) in enumerate(recordings):
            studio.state.add(EmuSample(500 + i, f"r{i}.wav", RATE_HZ, [audio]))
        ids = tmp / "ids.json"
        ids.write_text(json.dumps(sorted(studio.state.samples)))
        code, _, _ = run_block_timed(
            ["--data-ids-file", str(ids), "--audioset-labels", "Speech\\nMusic\\nDog", "--backend", "remote",
             "--inference-url", hf.url, "--win-size-ms", str(win_ms), "--win-stride-ms", str(stride_ms),
             "--combine", combine],
            {"EI_PROJECT_API_KEY": KEY, "EI_API_ENDPOINT": studio.endpoint, "HF_TOKEN": TOKEN,
             "HF_ENDPOINT": hf.hub})
        assert code == 0, f"block exited {code}"
        right = total = 0
        for i, (audio, truth) in enumerate(recordings):
            got = written_labels(studio.state.samples[500 + i].structured_labels, len(audio))
            right += int((got == truth).sum())
            total += len(audio)
    return right / total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recordings", type=int, default=6)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    recordings = [recording(seed) for seed in range(args.recordings)]
    results = {"recordings": args.recordings, "length_s": LENGTH_S, "event_s": EVENT_S, "frame_accuracy": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for scoring in ("window", "presence", "fill"):
            for win_ms, stride_ms in WINDOWS_MS:
                for combine in ("mean", "min"):
                    key = f"{scoring} scores, {win_ms}/{stride_ms} ms, {combine}"
                    results["frame_accuracy"][key] = round(
                        frame_accuracy(scoring, combine, win_ms, stride_ms, recordings, Path(tmp)), 4)
    emit(results, args.out)


if __name__ == "__main__":
    main()

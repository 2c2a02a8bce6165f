"""Regenerate the example recordings (all made by this project: synthesized speech, tones and noise).

Usage: python examples/make_examples.py   (needs espeak-ng for the speech parts)
"""

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile

RATE = 16000
HERE = Path(__file__).resolve().parent


def speech(text: str) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", "-w", tmp.name, "-s", "150", text], check=True)
        audio, rate = soundfile.read(tmp.name, dtype="float32")
    import librosa

    return librosa.resample(audio, orig_sr=rate, target_sr=RATE)


def tone(freq_hz: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.4 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def chord(seconds: float) -> np.ndarray:
    return sum(tone(f, seconds) for f in (261.6, 329.6, 392.0)) / 2


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).uniform(-1, 1, int(seconds * RATE))).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


def main() -> None:
    clips = {
        "speech_then_chord.wav": [speech("Hello, this is a short test of the audio labeling block."), silence(0.5),
                                  chord(3)],
        "noise_tone_noise.wav": [noise(2), tone(1000, 2), noise(2, seed=1)],
        "counting.wav": [speech("One. Two. Three. Four. Five."), silence(1)],
    }
    for name, parts in clips.items():
        soundfile.write(HERE / name, np.concatenate(parts), RATE, subtype="PCM_16")
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()

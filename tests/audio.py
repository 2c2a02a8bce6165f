"""Generated test audio: tones, noise and silence, and WAV encoding."""

from __future__ import annotations

import io

import numpy as np
import soundfile

# The inference emulator maps these to classes (see inference_emulator.score_audio).
MUSIC_HZ = 440.0
SPEECH_HZ = 1000.0
DOG_HZ = 3000.0


def tone(freq_hz: float, seconds: float, rate_hz: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate_hz)) / rate_hz
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def silence(seconds: float, rate_hz: int) -> np.ndarray:
    return np.zeros(round(seconds * rate_hz), dtype=np.float32)


def noise(seconds: float, rate_hz: int, seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amplitude * rng.uniform(-1, 1, round(seconds * rate_hz))).astype(np.float32)


def concat(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts).astype(np.float32)


def wav_bytes(audio: np.ndarray, rate_hz: int) -> bytes:
    """16-bit PCM WAV, mono for 1-D input, one channel per column for 2-D input."""
    buf = io.BytesIO()
    soundfile.write(buf, np.clip(audio, -1, 1), rate_hz, format="WAV", subtype="PCM_16")
    return buf.getvalue()

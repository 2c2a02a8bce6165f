"""Audio in and out: decode what Studio or a file holds, mix down to mono, resample once to the
model rate, slice windows, and encode a window for the remote protocol.

May import: ``core`` (and ``timeline`` for type hints only).
"""

from __future__ import annotations

import io
import math
from typing import IO, TYPE_CHECKING

import numpy as np

from .core import SampleError

if TYPE_CHECKING:
    from .timeline import Window

MODEL_RATE_HZ = 16_000
# AST pads or cuts every input to 1024 frames of 10 ms: anything past 10.24 s is never heard.
MODEL_MAX_INPUT_MS = 10_240
# One 25 ms analysis frame: the shortest input a model server accepts.
MODEL_FRAME_SAMPLES = 400
# A long file is decoded, mixed down and resampled this many seconds at a time, so only its 16 kHz
# mono result is ever held whole (a 1-hour 48 kHz stereo WAV decoded at once took ~2.5 GB).
DECODE_BLOCK_S = 30


def window_audio(audio_16k: np.ndarray, window: Window, frequency_hz: float) -> np.ndarray:
    """The 16 kHz slice (a view, not a copy) that a window of sample indices covers."""
    ratio = MODEL_RATE_HZ / frequency_hz
    start, stop = round(window.start_ix * ratio), round(window.stop_ix * ratio)
    return audio_16k[start : max(stop, start + 1)]

def decode_wav_file_16k(fh: IO[bytes]) -> tuple[np.ndarray, int, int]:
    """Decode a seekable WAV file block by block to float32 mono at the model rate.

    Returns (audio at MODEL_RATE_HZ, the file's rate, the file's frame count). Memory: the result
    plus one block, whatever the file's length, rate and channel count.
    """
    import soundfile
    import soxr

    head = fh.read(80)
    if not head.startswith(b"RIFF"):
        raise SampleError(f"Studio did not return a WAV file ({_describe_bytes(head)})")
    fh.seek(0)
    try:
        with soundfile.SoundFile(fh) as sf:
            rate, frames = int(sf.samplerate), int(sf.frames)
            if frames == 0:
                raise SampleError("the WAV file holds no audio frames")
            out = np.empty(math.ceil(frames * MODEL_RATE_HZ / rate), dtype=np.float32)
            stream = None if rate == MODEL_RATE_HZ else soxr.ResampleStream(rate, MODEL_RATE_HZ, 1, "float32", "HQ")
            filled = 0
            for block in sf.blocks(blocksize=DECODE_BLOCK_S * rate, dtype="float32", always_2d=True):
                mono = to_mono(block)
                if stream is not None:
                    mono = stream.resample_chunk(mono, last=False)
                filled = _append(out, filled, mono)
            if stream is not None:
                filled = _append(out, filled, stream.resample_chunk(np.zeros(0, np.float32), last=True))
    except SampleError:
        raise
    except Exception as exc:  # soundfile raises its own and RuntimeError variants
        raise SampleError(f"the WAV file is corrupt ({exc})") from None
    out[filled:] = 0.0  # the resampler may end a few samples short of the exact length
    return out, rate, frames


def _append(out: np.ndarray, filled: int, chunk: np.ndarray) -> int:
    take = min(len(chunk), len(out) - filled)
    out[filled : filled + take] = chunk[:take]
    return filled + take


def to_mono(frames: np.ndarray) -> np.ndarray:
    """(frames, channels) to contiguous float32 mono: a view for one channel, the channel mean otherwise."""
    mono = frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _describe_bytes(data: bytes) -> str:
    if not data:
        return "empty response"
    head = data[:80].decode("utf-8", errors="replace").replace("\n", " ")
    return f"{len(data)} bytes starting {head!r}"


def resample_to_model_rate(audio: np.ndarray, rate_hz: int) -> np.ndarray:
    """Resample once per sample; windows are then views into the result."""
    if rate_hz == MODEL_RATE_HZ:
        return audio
    import librosa

    return librosa.resample(audio, orig_sr=rate_hz, target_sr=MODEL_RATE_HZ, res_type="soxr_hq").astype(
        np.float32, copy=False
    )


def encode_audio_16k(audio: np.ndarray) -> bytes:
    """A 16-bit mono FLAC file at the model rate for the remote protocol.

    Measured on 1 s windows (benchmarks/bench_throughput.py): FLAC is 31 % of the WAV size for a
    tone and 77 % for speech-band audio with noise (93 % for white noise) for ~0.2 ms more CPU, and
    every Hugging Face server decodes it (ffmpeg or libsndfile).
    """
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.clip(audio, -1.0, 1.0), MODEL_RATE_HZ, format="FLAC", subtype="PCM_16")
    return buf.getvalue()

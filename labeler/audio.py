"""Audio in and out: decode what Studio or a file holds, mix down to mono, resample once to the
model rate, slice windows, and encode a window for the remote protocol.

May import: ``core`` (and ``timeline`` for type hints only).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

import numpy as np

from .core import SampleError, plural

if TYPE_CHECKING:
    from .timeline import Window

MODEL_RATE_HZ = 16_000
# One 25 ms analysis frame: the shortest input a model server accepts.
MODEL_FRAME_SAMPLES = 400
# AST's fbank frames start every 10 ms; it pads or cuts them to its extractor's max_length.
MODEL_HOP_SAMPLES = 160
# A file is decoded, mixed down and resampled this many values (frames x channels) at a time, so
# only its 16 kHz mono result is ever held whole: 30 s of 48 kHz mono, 5.8 MB as float32, whatever
# the rate and channel count (a 1-hour 48 kHz stereo file read whole took ~3 GB).
DECODE_BLOCK_VALUES = 1_440_000



def fbank_heard_samples(frames: int) -> int:
    """The 16 kHz samples ``frames`` fbank frames read: the last frame's 25 ms reach past its start
    (1024 frames, the AudioSet AST: 164,080 samples, 10.255 s)."""
    return MODEL_FRAME_SAMPLES + (frames - 1) * MODEL_HOP_SAMPLES


class BadAudio(SampleError):
    """The file's audio cannot be labeled (the message says why; the caller names the file)."""


class UndecodableAudio(BadAudio):
    """libsndfile cannot read the file: corrupt, truncated, or in a format it does not know."""


def window_audio(audio_16k: np.ndarray, window: Window, frequency_hz: float) -> np.ndarray:
    """The 16 kHz slice (a view, not a copy) that a window of sample indices covers."""
    ratio = MODEL_RATE_HZ / frequency_hz
    start, stop = round(window.start_ix * ratio), round(window.stop_ix * ratio)
    return audio_16k[start : max(stop, start + 1)]


def to_mono(frames: np.ndarray) -> np.ndarray:
    """(frames, channels) to contiguous float32 mono: a view for one channel, the channel mean otherwise."""
    mono = frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1)
    return np.ascontiguousarray(mono, dtype=np.float32)


def first_non_finite(audio: np.ndarray) -> int | None:
    """Index of the first NaN or infinite value, or None (0.2 ms per block of 1.44 M values)."""
    finite = np.isfinite(audio)
    return None if finite.all() else int(np.argmin(finite))


def _append(out: np.ndarray, filled: int, chunk: np.ndarray) -> int:
    take = min(len(chunk), len(out) - filled)
    out[filled : filled + take] = chunk[:take]
    return filled + take


def _describe_bytes(data: bytes) -> str:
    if not data:
        return "empty response"
    head = data[:80].decode("utf-8", errors="replace").replace("\n", " ")
    return f"{len(data)} bytes starting {head!r}"


def _out_of_memory(rate_hz: int, frames: int, channels: int) -> BadAudio:
    result_mb = math.ceil(frames * MODEL_RATE_HZ / rate_hz) * 4 / 2**20
    return BadAudio(f"not enough memory to decode it ({frames / rate_hz:.0f} s at {rate_hz} Hz, "
                    f"{plural(channels, 'channel')}; its 16 kHz mono audio alone takes {result_mb:.0f} MB): "
                    "give the block more memory, or split the file into shorter ones")


def _decode_open_file(sf, rate_hz: int, frames: int) -> np.ndarray:
    """Read, mix down, check and resample one block at a time into the preallocated 16 kHz result."""
    import soxr

    out = np.empty(math.ceil(frames * MODEL_RATE_HZ / rate_hz), dtype=np.float32)
    stream = None if rate_hz == MODEL_RATE_HZ else soxr.ResampleStream(rate_hz, MODEL_RATE_HZ, 1, "float32", "HQ")
    buffer = np.empty((max(1, DECODE_BLOCK_VALUES // sf.channels), sf.channels), dtype=np.float32)
    filled = decoded = 0
    while len(block := sf.read(out=buffer)):
        mono = to_mono(block)
        if (bad := first_non_finite(mono)) is not None:
            raise BadAudio(f"the audio holds NaN or infinite values (the first at {(decoded + bad) / rate_hz:.3f} "
                           "s); fix the file, e.g. export it again from its source as 16-bit PCM")
        decoded += len(mono)
        filled = _append(out, filled, mono if stream is None else stream.resample_chunk(mono, last=False))
    if stream is not None:
        filled = _append(out, filled, stream.resample_chunk(np.zeros(0, np.float32), last=True))
    out[filled:] = 0.0  # the resampler may end a few samples short of the exact length
    return out


def decode_16k(source: str | IO[bytes],
               header: Callable[[int, int], None] = lambda rate_hz, frames: None) -> tuple[np.ndarray, int, int]:
    """Decode a file (a path or a seekable file object, any format libsndfile reads: WAV, FLAC,
    Ogg Vorbis/Opus, MP3, AIFF) block by block to float32 mono at the model rate.

    ``header(rate_hz, frames)`` runs once the header is read and before any audio is decoded; it
    may wait for memory, or raise to stop. Returns (audio at MODEL_RATE_HZ, the file's rate, the
    file's frame count). Memory: the result plus one block, whatever the file's length, rate and
    channel count. Raises BadAudio for an empty file, NaN or infinite values, or memory running
    out, and its UndecodableAudio for what libsndfile cannot read; what ``header`` raises passes
    through untouched.
    """
    import soundfile

    try:
        sf = soundfile.SoundFile(source)
    except MemoryError:
        raise BadAudio("not enough memory to open it: give the block more memory") from None
    except Exception as exc:  # noqa: BLE001 - soundfile raises its own and RuntimeError variants
        raise UndecodableAudio(str(exc)) from None
    with sf:
        rate_hz, frames, channels = int(sf.samplerate), int(sf.frames), int(sf.channels)
        if frames == 0:
            raise BadAudio("the file holds no audio frames")
        header(rate_hz, frames)
        try:
            return _decode_open_file(sf, rate_hz, frames), rate_hz, frames
        except BadAudio:
            raise
        except MemoryError:
            raise _out_of_memory(rate_hz, frames, channels) from None
        except Exception as exc:  # noqa: BLE001 - a file that breaks off mid-way
            raise UndecodableAudio(str(exc)) from None


def decode_wav_file_16k(fh: IO[bytes]) -> tuple[np.ndarray, int, int]:
    """decode_16k for a Studio download, which must be a WAV file (Studio answers errors as JSON)."""
    head = fh.read(80)
    if not head.startswith(b"RIFF"):
        raise SampleError(f"Studio did not return a WAV file ({_describe_bytes(head)})")
    fh.seek(0)
    try:
        return decode_16k(fh)
    except UndecodableAudio as exc:
        raise SampleError(f"the WAV file is corrupt ({exc})") from None


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

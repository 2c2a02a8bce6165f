"""Audio handling: streamed decoding of any libsndfile format to 16 kHz mono, the mixdown, what
stops a file (NaN or infinite values, memory), and windows as views into the sample's 16 kHz audio."""

import io

import numpy as np
import pytest
import soundfile
import soxr

import labeler.audio
from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, tone
from labeler.audio import BadAudio, UndecodableAudio, decode_16k, decode_wav_file_16k, window_audio
from labeler.core import SampleError
from labeler.timeline import Window


def test_window_audio_is_a_view_at_16k():
    audio = np.arange(32000, dtype=np.float32)
    piece = window_audio(audio, Window(44100, 88200), 44100)
    assert piece.base is audio and len(piece) == 16000 and piece[0] == 16000


def float_wav(audio: np.ndarray, rate_hz: int) -> io.BytesIO:
    """A 32-bit float WAV: it keeps every value exactly, NaN and infinity included."""
    buf = io.BytesIO()
    soundfile.write(buf, audio, rate_hz, format="WAV", subtype="FLOAT")
    buf.seek(0)
    return buf


def dominant_hz(audio: np.ndarray, rate_hz: int) -> float:
    return float(np.fft.rfftfreq(len(audio), 1 / rate_hz)[np.argmax(np.abs(np.fft.rfft(audio)))])


# --- mixdown and streamed resampling ------------------------------------------------------------------


def test_mixdown_is_the_mean_of_channels_that_differ():
    # Different tones and loudness per channel: taking one channel, or a sum, gives another signal.
    left, right = tone(SPEECH_HZ, 2, 16000, 0.5), tone(DOG_HZ, 2, 16000, 0.2)
    audio, rate, frames = decode_16k(float_wav(np.stack([left, right], axis=1), 16000))
    assert (rate, frames) == (16000, 32000)
    np.testing.assert_allclose(audio, (left + right) / 2, atol=1e-7)


def test_opposite_channels_cancel():
    left = tone(SPEECH_HZ, 1, 48000)
    audio, _, _ = decode_16k(float_wav(np.stack([left, -left], axis=1), 48000))
    assert len(audio) == 16000 and np.abs(audio).max() < 1e-6


def test_streamed_resampling_matches_resampling_the_whole_file(monkeypatch):
    # A sweep of tones over many small blocks: a resampler restarted per block clicks at every
    # block edge, and a block lost or repeated shifts everything after it.
    monkeypatch.setattr(labeler.audio, "DECODE_BLOCK_VALUES", 9_000)  # 4500 stereo frames per block
    left = concat(tone(SPEECH_HZ, 2.5, 48000), tone(MUSIC_HZ, 2.5, 48000), tone(DOG_HZ, 2.5, 48000))
    right = concat(tone(DOG_HZ, 3.3, 48000, 0.3), tone(SPEECH_HZ, 4.2, 48000, 0.3))
    stereo = np.stack([left, right], axis=1)
    audio, rate, frames = decode_16k(float_wav(stereo, 48000))
    whole = soxr.resample(stereo.mean(axis=1), 48000, 16000, "HQ")
    assert (rate, frames, len(audio)) == (48000, 360000, 120000)
    assert np.abs(audio - whole).max() < 1e-4


@pytest.mark.parametrize("fmt, subtype, rate_hz", [
    ("WAV", "PCM_16", 44100), ("WAV", "FLOAT", 8000), ("FLAC", "PCM_24", 22050), ("OGG", "VORBIS", 48000),
    ("OGG", "OPUS", 48000), ("MP3", "MPEG_LAYER_III", 32000), ("AIFF", "PCM_16", 11025),
])
@pytest.mark.parametrize("as_path", [True, False])
def test_every_format_decodes_to_16k_at_its_own_rate(tmp_path, fmt, subtype, rate_hz, as_path):
    path = tmp_path / f"tone.{fmt.lower()}"
    soundfile.write(path, tone(SPEECH_HZ, 2, rate_hz), rate_hz, format=fmt, subtype=subtype)
    source = str(path) if as_path else io.BytesIO(path.read_bytes())
    audio, rate, frames = decode_16k(source)
    assert (rate, frames) == (rate_hz, soundfile.info(path).frames)
    assert len(audio) == -(-frames * 16000 // rate_hz) and audio.dtype == np.float32
    assert abs(dominant_hz(audio, 16000) - SPEECH_HZ) < 5  # a wrong rate moves the tone


# --- what stops a file ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_audio_fails_and_says_where(monkeypatch, value):
    monkeypatch.setattr(labeler.audio, "DECODE_BLOCK_VALUES", 20_000)  # the bad value sits in a later block
    left, right = tone(SPEECH_HZ, 3, 16000), tone(MUSIC_HZ, 3, 16000)
    right[40_000] = value  # one channel only: the mixdown must not hide it
    with pytest.raises(BadAudio, match=r"NaN or infinite values \(the first at 2\.500 s\)"):
        decode_16k(float_wav(np.stack([left, right], axis=1), 16000))


def test_header_is_seen_before_any_audio_is_decoded(monkeypatch):
    blocks = []
    monkeypatch.setattr(labeler.audio, "to_mono", lambda frames: blocks.append(len(frames)) or frames[:, 0])
    seen = []
    decode_16k(float_wav(tone(SPEECH_HZ, 1, 44100), 44100),
               lambda rate_hz, frames: seen.append((rate_hz, frames, len(blocks))))
    assert seen == [(44100, 44100, 0)] and blocks


def test_what_the_header_callback_raises_passes_through_untouched(monkeypatch):
    class Stop(Exception):
        pass

    def stop(rate_hz, frames):
        raise Stop()

    with pytest.raises(Stop):
        decode_16k(float_wav(tone(SPEECH_HZ, 1, 16000), 16000), stop)


def test_running_out_of_memory_says_memory_not_corrupt(monkeypatch):
    def no_memory(frames):
        raise MemoryError()

    monkeypatch.setattr(labeler.audio, "to_mono", no_memory)
    with pytest.raises(BadAudio, match=r"not enough memory to decode it \(1 s at 44100 Hz, 2 channels") as error:
        decode_16k(float_wav(np.zeros((44100, 2), np.float32), 44100))
    assert not isinstance(error.value, UndecodableAudio) and "corrupt" not in str(error.value)


def test_undecodable_and_empty_files():
    with pytest.raises(UndecodableAudio):
        decode_16k(io.BytesIO(b"RIFF\x00\x00\x00\x00WAVEjunk"))
    with pytest.raises(BadAudio, match="no audio frames"):
        decode_16k(float_wav(np.zeros(0, np.float32), 16000))
    with pytest.raises(SampleError, match="the WAV file is corrupt"):
        decode_wav_file_16k(io.BytesIO(b"RIFF\x00\x00\x00\x00WAVEjunk"))

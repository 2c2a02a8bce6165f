"""Audio files end to end: folder files and Studio downloads with NaN or infinite values, running
out of memory while decoding, the stereo mixdown, and folder files decoded block by block."""

import io
import json
import tracemalloc

import numpy as np
import pytest
import soundfile

import labeler.audio
from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, tone
from labeler.folder import FolderTarget
from studio_emulator import EmuSample


def run_folder(run_block, folder, *args):
    return run_block("--data-ids-file", "", "--input-dir", str(folder), *args,
                     env={"EI_PROJECT_API_KEY": None, "EI_API_ENDPOINT": None})


def labeled_paths(folder):
    return [f["path"] for f in json.loads((folder / "info.labels").read_text())["files"]]


def strict_json(text):
    def reject(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=reject)


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    soundfile.write(folder / "dog.flac", tone(DOG_HZ, 3, 22050), 22050)
    soundfile.write(folder / "music.wav", tone(MUSIC_HZ, 2, 44100), 44100)
    return folder


def with_value_at(audio: np.ndarray, index: int, value: float) -> np.ndarray:
    audio = audio.copy()
    audio[index] = value
    return audio


# --- NaN and infinity ----------------------------------------------------------------------------------


def test_folder_files_with_nan_or_inf_fail_by_name_and_the_rest_are_labeled(run_block, folder, tmp_path):
    soundfile.write(folder / "nan.wav", with_value_at(tone(SPEECH_HZ, 3, 16000), 24000, np.nan), 16000,
                    subtype="FLOAT")
    soundfile.write(folder / "inf.aiff", with_value_at(tone(SPEECH_HZ, 2, 8000), 100, -np.inf), 8000,
                    format="AIFF", subtype="FLOAT")
    result = run_folder(run_block, folder, "--report-dir", str(tmp_path / "report"))
    assert result.code == 1, result.out + result.err
    assert "nan.wav: the audio holds NaN or infinite values (the first at 1.500 s)" in result.out
    assert "inf.aiff: the audio holds NaN or infinite values (the first at 0.013 s)" in result.out
    assert labeled_paths(folder) == ["dog.flac", "music.wav"]
    for name in ("windows.jsonl", "segments.jsonl"):
        lines = (tmp_path / "report" / name).read_text().splitlines()
        assert {strict_json(line)["name"] for line in lines} == {"dog.flac", "music.wav"}


def test_studio_sample_with_nan_fails_alone(project, run_block):
    buf = io.BytesIO()
    soundfile.write(buf, with_value_at(tone(SPEECH_HZ, 2, 16000), 20000, np.inf), 16000, format="WAV",
                    subtype="FLOAT")
    project.state.add(EmuSample(501, "inf.wav", 16000, [np.zeros(32000, np.float32)], wav_override=buf.getvalue()))
    result = run_block()
    assert result.code == 1
    assert "sample 501" in result.out and "NaN or infinite values (the first at 1.250 s)" in result.out
    assert project.state.labels_of(501) is None
    assert [s["label"] for s in project.state.labels_of(101)] == ["Speech", "Music"]


# --- memory --------------------------------------------------------------------------------------------


def test_running_out_of_memory_names_the_file_and_says_memory(run_block, folder, monkeypatch):
    soundfile.write(folder / "surround.wav", np.zeros((48000, 3), np.float32), 48000)
    to_mono = labeler.audio.to_mono

    def short_of_memory_for_three_channels(frames):
        if frames.shape[1] == 3:
            raise MemoryError()
        return to_mono(frames)

    monkeypatch.setattr(labeler.audio, "to_mono", short_of_memory_for_three_channels)
    result = run_folder(run_block, folder)
    assert result.code == 1
    assert "surround.wav: not enough memory to decode it (1 s at 48000 Hz, 3 channels" in result.out
    assert "corrupt" not in result.out and "cannot decode" not in result.out
    assert labeled_paths(folder) == ["dog.flac", "music.wav"]


def test_folder_files_are_decoded_block_by_block_after_admission(tmp_path, monkeypatch):
    # 60 s of 48 kHz stereo is 23 MB as float32; decoded in blocks, only the 3.8 MB 16 kHz result
    # and one small block are held.
    block_values = 200_000
    monkeypatch.setattr(labeler.audio, "DECODE_BLOCK_VALUES", block_values)
    left = concat(*[tone(hz, 10, 48000) for hz in (SPEECH_HZ, MUSIC_HZ, DOG_HZ) * 2])
    soundfile.write(tmp_path / "long.wav", np.stack([left, left[::-1]], axis=1), 48000)
    blocks, admitted = [], []
    to_mono = labeler.audio.to_mono
    monkeypatch.setattr(labeler.audio, "to_mono", lambda frames: blocks.append(len(frames)) or to_mono(frames))
    tracemalloc.start()
    try:
        sample = FolderTarget(str(tmp_path), settings=None, files=["long.wav"]).load(1, lambda info: admitted.append((info, len(blocks))))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert admitted == [(sample.info, 0)] and sample.info.values_count == 2_880_000
    assert sample.info.frequency_hz == 48000 and len(sample.audio_16k) == 960_000
    whole_mb, result_mb = 2_880_000 * 2 * 4 / 2**20, sample.audio_16k.nbytes / 2**20
    assert peak / 2**20 < result_mb + 4 * block_values * 4 / 2**20 < whole_mb / 2, (peak / 2**20, whole_mb)


# --- mixdown ---------------------------------------------------------------------------------------------


def test_stereo_folder_file_is_labeled_from_the_mean_of_its_channels(run_block, folder):
    # Left: speech then music; right: the same inverted and then a dog. Their mean is silence and
    # then a dog: taking either channel alone gives Speech or Music labels instead.
    left = concat(tone(SPEECH_HZ, 2, 44100), tone(MUSIC_HZ, 2, 44100))
    right = concat(-tone(SPEECH_HZ, 2, 44100), -tone(MUSIC_HZ, 2, 44100) + 2 * tone(DOG_HZ, 2, 44100, 0.25))
    soundfile.write(folder / "stereo.wav", np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    result = run_folder(run_block, folder, "--win-size-ms", "1000")
    assert result.code == 0, result.out + result.err
    files = {f["path"]: f["label"]["labels"] for f in json.loads((folder / "info.labels").read_text())["files"]}
    assert files["stereo.wav"] == [{"startIndex": 0, "endIndex": 88199, "label": "other"},
                                   {"startIndex": 88200, "endIndex": 176399, "label": "Dog"}]

"""The folder target: --input-dir labels audio files without Studio into an info.labels file."""

import json
import shutil

import numpy as np
import pytest
import soundfile

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, tone
from conftest import ROOT
from studio_emulator import validate_structured_labels

UPLOADER_CATEGORIES = {"training", "testing", "validation", "post-processing", "split"}


@pytest.fixture
def recordings(tmp_path):
    folder = tmp_path / "recordings"
    (folder / "sub").mkdir(parents=True)
    soundfile.write(folder / "speech_music_44k_stereo.wav",
                    np.stack([concat(tone(SPEECH_HZ, 2, 44100), tone(MUSIC_HZ, 2, 44100))] * 2, axis=1), 44100)
    soundfile.write(folder / "dog.flac", tone(DOG_HZ, 3, 22050), 22050)
    soundfile.write(folder / "sub" / "music.ogg", tone(MUSIC_HZ, 2, 48000), 48000, format="OGG", subtype="VORBIS")
    soundfile.write(folder / "sub" / "speech.mp3", tone(SPEECH_HZ, 2, 16000), 16000, format="MP3",
                    subtype="MPEG_LAYER_III")
    (folder / "notes.txt").write_text("not audio")
    return folder


def run_folder(run_block, folder, *args, backend="remote"):
    return run_block("--data-ids-file", "", "--input-dir", str(folder), *args, backend=backend,
                     env={"EI_PROJECT_API_KEY": None, "EI_API_ENDPOINT": None})


def info_labels(folder):
    return json.loads((folder / "info.labels").read_text())


def test_folder_is_labeled_into_a_valid_info_labels_file(run_block, recordings):
    result = run_folder(run_block, recordings)
    assert result.code == 0, result.out + result.err
    document = info_labels(recordings)
    assert document["version"] == 1 and isinstance(document["files"], list)
    assert [f["path"] for f in document["files"]] == ["dog.flac", "speech_music_44k_stereo.wav", "sub/music.ogg",
                                                      "sub/speech.mp3"]
    for entry in document["files"]:
        frames = soundfile.info(recordings / entry["path"]).frames
        assert entry["category"] in UPLOADER_CATEGORIES and entry["name"] and entry["boundingBoxes"] == []
        assert entry["label"]["type"] == "multi-label"
        validate_structured_labels(entry["label"]["labels"], frames)  # Studio's own rules, in frame indices
        assert entry["label"]["labels"][-1]["endIndex"] == frames - 1
        assert all(isinstance(v, str) for v in entry["metadata"].values())


def test_folder_labels_are_right_at_each_files_own_rate(run_block, recordings):
    run_folder(run_block, recordings)
    by_path = {f["path"]: f["label"]["labels"] for f in info_labels(recordings)["files"]}
    assert by_path["speech_music_44k_stereo.wav"] == [{"startIndex": 0, "endIndex": 88199, "label": "Speech"},
                                                      {"startIndex": 88200, "endIndex": 176399, "label": "Music"}]
    assert [s["label"] for s in by_path["dog.flac"]] == ["Dog"]
    assert [s["label"] for s in by_path["sub/music.ogg"]] == ["Music"]


def test_folder_mode_needs_no_studio_key_and_writes_reports_and_plots(run_block, recordings, tmp_path):
    result = run_folder(run_block, recordings, "--report-dir", str(tmp_path / "r"), "--plot-dir",
                        str(tmp_path / "p"))
    assert result.code == 0
    assert len(list((tmp_path / "p").glob("*.png"))) == 4
    assert len(list((tmp_path / "r" / "audacity").glob("*.txt"))) == 4


def test_shipped_examples_label_with_the_local_backend(run_block, dog_model, tmp_path):
    folder = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", folder)
    result = run_folder(run_block, folder, "--model", str(dog_model), backend="local")
    assert result.code == 0, result.out + result.err
    assert len(info_labels(folder)["files"]) == 3


def test_undecodable_file_fails_alone(run_block, recordings):
    (recordings / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    result = run_folder(run_block, recordings)
    assert result.code == 1 and "broken.wav: cannot decode it" in result.out
    assert len(info_labels(recordings)["files"]) == 4


@pytest.mark.parametrize("args, message", [
    (["--propose-actions", "3"], "--propose-actions is for Studio jobs"),
])
def test_folder_mode_bad_combinations(run_block, recordings, args, message):
    result = run_folder(run_block, recordings, *args)
    assert result.code == 2 and message in result.err


def test_empty_or_missing_folder(run_block, tmp_path):
    assert "no audio files" in run_folder(run_block, tmp_path).err
    assert "no such folder" in run_folder(run_block, tmp_path / "nope").err



"""The folder target: --input-dir labels audio files without Studio into an info.labels file."""

import contextlib
import json
import os
import shlex
import shutil
import subprocess

import numpy as np
import pytest
import soundfile

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, silence, tone
import labeler.folder
from conftest import ROOT
from labeler.core import write_file_atomically
from studio_emulator import validate_structured_labels

UPLOADER_CATEGORIES = {"training", "testing", "validation", "post-processing", "split"}


@pytest.fixture
def recordings(tmp_path):
    folder = tmp_path / "recordings"
    (folder / "sub").mkdir(parents=True)
    # Channels that differ: only their mix holds speech then music (one channel alone would not).
    left = concat(tone(SPEECH_HZ, 2, 44100), silence(2, 44100))
    right = concat(silence(2, 44100), tone(MUSIC_HZ, 2, 44100))
    soundfile.write(folder / "speech_music_44k_stereo.wav", np.stack([left, right], axis=1), 44100)
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


# --- checks before the model loads ------------------------------------------------------------------


def test_empty_folder_stops_before_the_model_loads(run_block, hf, tmp_path):
    result = run_folder(run_block, tmp_path)
    assert result.code == 2 and "no audio files" in result.err
    assert hf.state.requests == []  # the remote backend's test request never went out


def test_a_file_given_as_input_dir_says_it_is_a_file(run_block, recordings):
    result = run_folder(run_block, recordings / "dog.flac")
    assert result.code == 2 and "dog.flac is a file; give the folder that holds the audio files" in result.err


def test_info_labels_that_is_a_folder_stops_before_the_model_loads(run_block, hf, recordings):
    (recordings / "info.labels").mkdir()
    result = run_folder(run_block, recordings)
    assert result.code == 2 and "info.labels is a folder" in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert hf.state.requests == []


@contextlib.contextmanager
def read_only(folder):
    """No file can be created in ``folder``: permission bits, or for root (who ignores them) the immutable flag."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    else:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("running as root where chattr +i is not available: no folder is read-only")
        undo = ["chattr", "-i", str(folder)]
    try:
        yield
    finally:
        subprocess.run(undo, check=True)


def test_read_only_folder_stops_before_the_model_loads(run_block, hf, recordings):
    with read_only(recordings):
        result = run_folder(run_block, recordings)
    assert result.code == 2 and "cannot write info.labels there" in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert hf.state.requests == []


def test_unwritable_plot_dir_stops_before_the_model_loads(run_block, hf, recordings):
    result = run_folder(run_block, recordings, "--plot-dir", str(recordings / "dog.flac" / "plots"))
    assert result.code == 2 and "--plot-dir" in result.err and "cannot write there" in result.err
    assert hf.state.requests == [] and not (recordings / "info.labels").exists()


def test_info_labels_that_cannot_be_written_at_the_end_fails_the_run_cleanly(run_block, recordings, monkeypatch):
    def disk_full(path, text):
        raise OSError(28, "No space left on device", path)
    monkeypatch.setattr(labeler.folder, "write_file_atomically", disk_full)
    result = run_folder(run_block, recordings)
    assert result.code == 1 and "Traceback" not in result.out + result.err
    assert "Done: 4 of 4 samples labeled" in result.out  # the totals are still printed
    assert "could not write" in result.err and "No space left on device" in result.err


# --- which files, and what the log says ---------------------------------------------------------------


def test_oga_and_opus_files_are_labeled(run_block, tmp_path):
    folder = tmp_path / "ogg"
    folder.mkdir()
    soundfile.write(folder / "music.oga", tone(MUSIC_HZ, 2, 44100), 44100, format="OGG", subtype="VORBIS")
    soundfile.write(folder / "speech.opus", tone(SPEECH_HZ, 2, 48000), 48000, format="OGG", subtype="OPUS")
    result = run_folder(run_block, folder)
    assert result.code == 0, result.out + result.err
    by_path = {f["path"]: f["label"]["labels"] for f in info_labels(folder)["files"]}
    assert [s["label"] for s in by_path["music.oga"]] == ["Music"]
    assert [s["label"] for s in by_path["speech.opus"]] == ["Speech"]


def test_files_that_are_not_audio_are_counted_and_named(run_block, recordings):
    for name in ("a.txt", "b.csv", "c.json"):
        (recordings / "sub" / name).write_text("")
    result = run_folder(run_block, recordings)
    assert "skipping 4 files that are not audio (notes.txt, sub/a.txt, sub/b.csv, ...)" in result.out
    rerun = run_folder(run_block, recordings)
    assert "skipping 4 files" in rerun.out  # the block's own info.labels is not counted


def test_one_file_is_one_file_and_the_upload_hint_quotes_paths_with_spaces(run_block, tmp_path):
    folder = tmp_path / "my recordings"
    folder.mkdir()
    soundfile.write(folder / "dog.flac", tone(DOG_HZ, 1, 16000), 16000)
    result = run_folder(run_block, folder)
    assert result.code == 0, result.out + result.err
    assert f"Labeling 1 file in {folder} " in result.out and "(1 file)" in result.out
    hint = next(line for line in result.out.splitlines() if "edge-impulse-uploader" in line)
    command = shlex.split(hint.split("upload with ", 1)[1])
    assert command == ["edge-impulse-uploader", "--info-file", str(folder / "info.labels")]


# --- reruns: info.labels is never stale without saying so --------------------------------------------


def test_rerun_where_every_file_fails_keeps_the_old_info_labels_and_says_so(run_block, recordings):
    assert run_folder(run_block, recordings).code == 0
    before = (recordings / "info.labels").read_text()
    for path in recordings.rglob("*"):
        if path.suffix in (".wav", ".flac", ".ogg", ".mp3"):
            path.write_bytes(b"not audio any more")
    result = run_folder(run_block, recordings)
    assert result.code == 1
    assert f"WARNING: no file was labeled, so {recordings / 'info.labels'} was not updated: it is from an " \
           "earlier run" in result.out
    assert (recordings / "info.labels").read_text() == before


def test_rerun_where_some_files_fail_says_they_are_left_out(run_block, recordings):
    assert run_folder(run_block, recordings).code == 0
    (recordings / "dog.flac").write_bytes(b"not audio any more")
    result = run_folder(run_block, recordings)
    assert result.code == 1 and "(3 files; 1 file not labeled is left out)" in result.out
    assert "dog.flac" not in [f["path"] for f in info_labels(recordings)["files"]]


# --- safe writes --------------------------------------------------------------------------------------


def test_atomic_write_never_follows_a_planted_symlink(tmp_path):
    target, victim = tmp_path / "info.labels", tmp_path / "victim"
    victim.write_text("precious")
    os.symlink(victim, f"{target}.{os.getpid()}.tmp")  # the name the old code wrote through
    write_file_atomically(str(target), "new labels")
    assert target.read_text() == "new labels" and victim.read_text() == "precious"
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


def test_failed_atomic_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "info.labels"
    target.write_text("old labels")
    target.chmod(0o640)
    with pytest.raises(UnicodeEncodeError):
        write_file_atomically(str(target), "half \ud800 written")  # cannot be encoded: fails mid-write
    assert target.read_text() == "old labels" and os.listdir(tmp_path) == ["info.labels"]
    write_file_atomically(str(target), "new labels")
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)  # a replaced file keeps its mode




def test_folder_mode_ignores_a_malformed_studio_key_it_never_uses(run_block, recordings):
    result = run_block("--data-ids-file", "", "--input-dir", str(recordings),
                       env={"EI_PROJECT_API_KEY": "ei_abc\r\ndef", "EI_API_ENDPOINT": None})
    assert result.code == 0, result.out + result.err

"""The folder target: --input-dir labels audio files without Studio into an info.labels file."""

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, silence, tone
import labeler.folder
from conftest import HF_TOKEN, ROOT
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
    assert f"Labeling 1 file in {folder} " in result.out
    assert f"Wrote {folder / 'info.labels'}: 1 labeled; upload with" in result.out
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


def test_rerun_where_a_file_fails_keeps_its_earlier_entry_and_names_it(run_block, recordings):
    assert run_folder(run_block, recordings).code == 0
    before = info_labels(recordings)["files"]
    (recordings / "dog.flac").write_bytes(b"not audio any more")
    result = run_folder(run_block, recordings)
    assert result.code == 1
    assert "3 labeled, 1 kept as they were (1 not labeled this run: dog.flac)" in result.out
    assert info_labels(recordings)["files"] == before  # same settings: every entry as the first run wrote it


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


# --- an info.labels already there is updated, never replaced --------------------------------------------

EXPORT_DOG = {"path": "dog.flac", "name": "my-dog", "category": "testing", "label": {"type": "label", "label": "woof"},
              "metadata": {"site": "lab", "labeled_by": "a person"}, "boundingBoxes": [], "attachments": ["a.json"]}


def export(folder, *files, **top):
    """An info.labels as Edge Impulse exports it (other tools' entries, their own keys); returns its bytes."""
    text = json.dumps({"version": 1, "files": list(files), **top}, indent=4).encode()
    (folder / "info.labels").write_bytes(text)
    return text


def entries_by_path(folder):
    return {e["path"]: e for e in info_labels(folder)["files"]}


def test_a_labeled_files_entry_gets_the_new_label_and_keeps_everything_else(run_block, recordings):
    export(recordings, EXPORT_DOG)
    assert run_folder(run_block, recordings).code == 0
    dog = entries_by_path(recordings)["dog.flac"]
    assert [s["label"] for s in dog["label"]["labels"]] == ["Dog"]  # replaced, as Studio relabels a sample
    assert (dog["name"], dog["category"], dog["attachments"]) == ("my-dog", "testing", ["a.json"])
    assert dog["metadata"]["site"] == "lab"  # existing keys stay...
    assert dog["metadata"]["labeled_by"] == "ast-audio-labeler"  # ...and the block's keys win
    assert "ast_settings" in dog["metadata"]


def test_paths_match_after_normalising_dot_slash_and_backslashes(run_block, recordings):
    export(recordings, {**EXPORT_DOG, "path": "./dog.flac"}, {"path": "sub\\music.ogg", "category": "training",
                                                             "label": {"type": "label", "label": "tune"}})
    assert run_folder(run_block, recordings).code == 0
    by_path = entries_by_path(recordings)
    assert sorted(by_path) == ["./dog.flac", "speech_music_44k_stereo.wav", "sub/speech.mp3", "sub\\music.ogg"]
    assert by_path["sub\\music.ogg"]["category"] == "training"
    assert [s["label"] for s in by_path["sub\\music.ogg"]["label"]["labels"]] == ["Music"]


def test_entries_of_other_files_and_unknown_top_level_keys_are_kept_unchanged(run_block, recordings):
    notes = {"path": "notes.txt", "category": "training", "label": {"type": "label", "label": "doc"}}
    gone = {"path": "gone.wav", "category": "testing", "label": {"type": "label", "label": "old"}, "metadata": {}}
    export(recordings, notes, gone, exportedBy="studio", project={"id": 42})
    result = run_folder(run_block, recordings)
    assert result.code == 0
    document = info_labels(recordings)
    assert document["files"][:2] == [notes, gone]
    assert (document["exportedBy"], document["project"]) == ("studio", {"id": 42})
    assert f"WARNING: {recordings / 'info.labels'} lists 1 file not found in {recordings} (gone.wav); kept its entry " \
           "as it was" in result.out


def test_existing_entries_keep_their_order_and_new_files_follow_in_file_order(run_block, recordings):
    export(recordings, {"path": "sub/speech.mp3"}, {"path": "notes.txt"}, {"path": "dog.flac"})
    assert run_folder(run_block, recordings).code == 0
    assert [e["path"] for e in info_labels(recordings)["files"]] == [
        "sub/speech.mp3", "notes.txt", "dog.flac", "speech_music_44k_stereo.wav", "sub/music.ogg"]


def test_the_log_says_what_was_labeled_added_and_kept(run_block, recordings):
    (recordings / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    export(recordings, {"path": "broken.wav"}, {"path": "notes.txt"}, {"path": "gone.wav"}, EXPORT_DOG,
           {"path": "sub/music.ogg"})
    result = run_folder(run_block, recordings)
    assert result.code == 1  # broken.wav failed
    assert f"Updated {recordings / 'info.labels'}: 4 labeled (2 new), 3 kept as they were (1 not audio, 1 not " \
           "found, 1 not labeled this run: broken.wav); upload with" in result.out


def test_a_rerun_where_a_file_fails_keeps_an_exported_entry_for_it(run_block, recordings):
    (recordings / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    broken = {"path": "broken.wav", "category": "testing", "label": {"type": "label", "label": "kept"}}
    export(recordings, broken)
    assert run_folder(run_block, recordings).code == 1
    assert entries_by_path(recordings)["broken.wav"] == broken


def test_entries_the_block_did_not_write_are_backed_up_once_to_info_labels_orig(run_block, recordings):
    original = export(recordings, EXPORT_DOG)
    result = run_folder(run_block, recordings)
    assert result.code == 0
    assert (recordings / "info.labels.orig").read_bytes() == original
    assert f"Copied {recordings / 'info.labels'} as it was to {recordings / 'info.labels.orig'}" in result.out
    export(recordings, {**EXPORT_DOG, "name": "edited since"})
    assert run_folder(run_block, recordings).code == 0
    assert (recordings / "info.labels.orig").read_bytes() == original  # never overwritten
    assert entries_by_path(recordings)["dog.flac"]["name"] == "edited since"


def test_an_info_labels_the_block_wrote_alone_gets_no_backup(run_block, recordings):
    assert run_folder(run_block, recordings).code == 0
    assert run_folder(run_block, recordings).code == 0
    assert not (recordings / "info.labels.orig").exists()


def test_a_backup_that_cannot_be_written_leaves_info_labels_untouched(run_block, recordings, monkeypatch):
    original = export(recordings, EXPORT_DOG)
    real_write = labeler.folder.write_file_atomically

    def orig_disk_full(path, text):
        if path.endswith(".orig"):
            raise OSError(28, "No space left on device", path)
        real_write(path, text)
    monkeypatch.setattr(labeler.folder, "write_file_atomically", orig_disk_full)
    result = run_folder(run_block, recordings)
    assert result.code == 1 and "info.labels.orig (No space left on device)" in result.err
    assert (recordings / "info.labels").read_bytes() == original


def test_a_utf8_byte_order_mark_is_accepted(run_block, recordings):
    document = json.dumps({"version": 1, "files": [EXPORT_DOG]}).encode()
    (recordings / "info.labels").write_bytes(b"\xef\xbb\xbf" + document)
    assert run_folder(run_block, recordings).code == 0
    assert entries_by_path(recordings)["dog.flac"]["category"] == "testing"


@pytest.mark.parametrize("content, why", [
    (b"", "it is empty"),
    (b"  \n", "it is empty"),
    (b"{\"version\": 1, \"files\": [", "it is not JSON"),
    (b"\xff\xfe{}", "it is not UTF-8 text"),
    (b"[]", "it is not a JSON object"),
    (b"{\"files\": []}", "it has no \"version\""),
    (b"{\"version\": 2, \"files\": []}", "its \"version\" is 2, not 1"),
    (b"{\"version\": true, \"files\": []}", "its \"version\" is true, not 1"),
    (b"{\"version\": 1}", "it has no \"files\" list"),
    (b"{\"version\": 1, \"files\": {}}", "it has no \"files\" list"),
    (b"{\"version\": 1, \"files\": [\"dog.flac\"]}", "files[0] is not an object with a string \"path\""),
    (b"{\"version\": 1, \"files\": [{\"path\": \"a.wav\"}, {\"name\": \"b\"}]}",
     "files[1] is not an object with a string \"path\""),
], ids=["empty", "blank", "not JSON", "not UTF-8", "array", "no version", "version 2", "version true", "no files",
        "files object", "entry not object", "entry without path"])
def test_an_info_labels_that_is_not_valid_stops_before_the_model_loads_and_is_left_untouched(
        run_block, hf, recordings, content, why):
    (recordings / "info.labels").write_bytes(content)
    result = run_folder(run_block, recordings)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert f"{recordings / 'info.labels'} is not an info.labels file the block can update ({why}" in result.err
    assert "move it away or fix it" in result.err
    assert hf.state.requests == [] and (recordings / "info.labels").read_bytes() == content
    assert not (recordings / "info.labels.orig").exists()


def test_an_info_labels_that_cannot_be_read_stops_before_the_model_loads(run_block, hf, recordings):
    os.symlink("info.labels", recordings / "info.labels")  # a loop: unreadable even for root
    result = run_folder(run_block, recordings)
    assert result.code == 2 and "(cannot read it: Too many levels of symbolic links)" in result.err
    assert hf.state.requests == [] and os.path.islink(recordings / "info.labels")


def test_sigterm_during_a_rerun_keeps_every_entry_and_updates_only_the_labeled_file(run_block, hf, tmp_path):
    folder = tmp_path / "twenty"
    folder.mkdir()
    for i in range(20):
        soundfile.write(folder / f"clip{i:02}.wav", tone(DOG_HZ, 1, 16000), 16000)
    assert run_folder(run_block, folder).code == 0
    first = info_labels(folder)
    for entry in first["files"]:
        entry["label"] = {"type": "label", "label": "from the first run"}  # what a rerun replaces, made visible
    (folder / "info.labels").write_text(json.dumps(first))
    # One inference request at a time, each taking 2 s: the signal, sent once the first file is
    # labeled, lands while the second file's request is in flight.
    hf.state.latency_s = 2.0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EI_", "HF_"))}
    env.update({"HF_TOKEN": HF_TOKEN, "HF_ENDPOINT": hf.hub})
    proc = subprocess.Popen([sys.executable, "-u", str(ROOT / "transform.py"), "--input-dir", str(folder),
                             "--audioset-labels", "Speech\\nMusic\\nDog", "--backend", "remote",
                             "--inference-url", hf.url, "--concurrency", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if " labeled in " in line:
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(seen) + proc.communicate(timeout=30)[0]
    assert proc.returncode == 1 and "ERROR: interrupted" in out, out
    after = info_labels(folder)["files"]
    assert [e["path"] for e in after] == [e["path"] for e in first["files"]]  # all 20, in their order
    assert sum(e["label"] != {"type": "label", "label": "from the first run"} for e in after) == 1, out
    assert "Updated" in out and "1 labeled, 19 kept as they were (19 not labeled this run: " in out


def test_a_stopped_folder_run_says_a_rerun_labels_every_file_again(run_block, hf, recordings):
    hf.state.error_after = 1  # the preflight passes, then every request answers 500: the circuit breaker stops
    result = run_folder(run_block, recordings, "--win-size-ms", "1000")
    assert result.code == 1 and "stopped the run" in result.err
    assert "(a rerun labels every sample again)" in result.err and "finished samples are skipped" not in result.err

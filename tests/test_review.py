"""Review outputs: confidence metadata, the run report, Audacity labels, plots, and --input-dir."""

import json
import shutil

import numpy as np
import pytest
import soundfile

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, noise, silence, tone
from conftest import HF_TOKEN, ROOT, STUDIO_KEY
from studio_emulator import validate_structured_labels

UPLOADER_CATEGORIES = {"training", "testing", "validation", "post-processing", "split"}


# --- confidence in Studio -------------------------------------------------------------------------


def test_confidence_metadata_is_written_with_the_labels(project, run_block):
    assert run_block().code == 0
    speech_music = project.state.samples[101].metadata
    assert (speech_music["ast_confidence_mean"], speech_music["ast_confidence_min"],
            speech_music["ast_other_share"]) == ("0.850", "0.800", "0.000")
    noise_only = project.state.samples[103].metadata
    assert (noise_only["ast_confidence_mean"], noise_only["ast_confidence_min"],
            noise_only["ast_other_share"]) == ("none", "none", "1.000")


def test_other_share_is_the_share_of_time(studio, run_block):
    from studio_emulator import EmuSample

    studio.state.add(EmuSample(150, "quarter.wav", 16000, [concat(tone(DOG_HZ, 3, 16000), noise(1, 16000))]))
    assert run_block("--win-size-ms", "1000").code == 0
    assert studio.state.samples[150].metadata["ast_other_share"] == "0.250"


def test_preview_proposals_carry_the_confidence_too(project, run_block):
    run_block("--propose-actions", "4")
    assert project.state.proposals[(4, 101)]["metadata"]["ast_confidence_min"] == "0.800"


# --- run report and Audacity labels ---------------------------------------------------------------


@pytest.fixture
def report(project, run_block, tmp_path):
    folder = tmp_path / "report"
    result = run_block("--report-dir", str(folder), "--win-size-ms", "1000")
    assert result.code == 0, result.out + result.err
    return folder


def test_report_has_one_line_per_window_with_top_scores(report):
    lines = [json.loads(line) for line in (report / "windows.jsonl").read_text().splitlines()]
    assert len(lines) == 4 + 4 + 1  # 4 s, 4 s and 0.5 s samples with 1 s windows
    first = next(x for x in lines if x["sample_id"] == 101 and x["start_ix"] == 0)
    assert first["top"][0] == ["Speech", 0.8] and len(first["top"]) == 5
    assert first["labels_of_interest"] == {"Speech": 0.8, "Music": 0.02, "Dog": 0.02}
    assert first["end_ix"] == 15999 and first["end_s"] == 1.0


def test_report_lists_segments_and_label_totals(report):
    samples = {x["sample_id"]: x for x in map(json.loads, (report / "segments.jsonl").read_text().splitlines())}
    assert [s["label"] for s in samples[101]["segments"]] == ["Speech", "Music"]
    assert samples[101]["segments"][1]["start_s"] == 2.0
    totals = json.loads((report / "label_totals.json").read_text())
    assert totals["Speech"] == {"segments": 1, "seconds": 2.0, "samples": 1}
    assert totals["Dog"]["samples"] == 1 and totals["other"]["seconds"] == pytest.approx(2.5)


def test_audacity_label_files_parse(report, project):
    files = sorted((report / "audacity").glob("*.txt"))
    assert [f.name for f in files] == ["101_speech_music.txt", "102_dog_silence_dog.txt", "103_short_noise.txt"]
    for path in files:
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        assert all(len(row) == 3 for row in rows)
        starts, ends = [float(r[0]) for r in rows], [float(r[1]) for r in rows]
        assert starts[0] == 0 and all(s < e for s, e in zip(starts, ends)) and starts[1:] == ends[:-1]
        sample_id = int(path.name.split("_")[0])
        assert [r[2] for r in rows] == [seg["label"] for seg in project.state.labels_of(sample_id)]


# --- plots ------------------------------------------------------------------------------------------


def test_plots_are_written_for_every_sample(project, run_block, tmp_path):
    folder = tmp_path / "plots"
    assert run_block("--plot-dir", str(folder), "--win-size-ms", "1000", "--win-stride-ms", "500").code == 0
    pngs = sorted(folder.glob("*.png"))
    assert [p.name for p in pngs] == ["101_speech_music.png", "102_dog_silence_dog.png", "103_short_noise.png"]
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 20_000


def test_plot_shows_one_band_per_segment_and_a_curve_per_label(project):
    import transform
    from transform import LabelSpec, Settings

    settings = Settings((LabelSpec("Speech", "speech"), LabelSpec("Music", "music", 0.5)), "other", 1000, 500, 0.2,
                        "m")
    audio = concat(tone(SPEECH_HZ, 2, 16000), silence(1, 16000), tone(MUSIC_HZ, 2, 16000))
    info = transform.SampleInfo(9, "x.wav", 16000.0, len(audio), 0, {})
    windows = transform.plan_windows(len(audio), 16000, 1000, 500)
    scores = np.array([[0.9, 0.0] if w.stop_ix <= 32000 else [0.0, 0.9] if w.start_ix >= 48000 else [0.1, 0.1]
                       for w in windows])
    labeling = transform.label_sample(windows, scores, len(audio), 8000, settings, {"speech": 0, "music": 1})
    figure = transform.Plotter(str(ROOT / "tests"), settings).figure(transform.LoadedSample(info, audio), labeling)
    spec_ax, score_ax = figure.axes[:2]
    assert len(spec_ax.patches) == len(labeling.segments) == 3
    assert [line.get_label() for line in score_ax.lines if not line.get_label().startswith("_")] == ["speech",
                                                                                                     "music"]
    assert sorted(line.get_ydata()[0] for line in score_ax.lines if line.get_linestyle() == "--") == [0.2, 0.5]


# --- labeling a folder without Studio ---------------------------------------------------------------


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


def test_keys_never_in_report_files(project, run_block, tmp_path):
    run_block("--report-dir", str(tmp_path / "r"), "--plot-dir", str(tmp_path / "p"))
    for path in (tmp_path / "r").rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert STUDIO_KEY not in text and HF_TOKEN not in text

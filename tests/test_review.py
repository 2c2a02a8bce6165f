"""Review outputs: confidence metadata, the run report, Audacity labels and plots."""

import json

import numpy as np
import pytest

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, noise, silence, tone
from conftest import HF_TOKEN, ROOT, STUDIO_KEY


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
    # Each label of interest read from its own column: a music and a dog window score differently.
    music = next(x for x in lines if x["sample_id"] == 101 and x["start_ix"] == 48000)
    dog = next(x for x in lines if x["sample_id"] == 102 and x["start_ix"] == 0)
    assert music["labels_of_interest"] == {"Speech": 0.02, "Music": 0.9, "Dog": 0.02}
    assert dog["labels_of_interest"] == {"Speech": 0.02, "Music": 0.02, "Dog": 0.7}
    assert music["top"][:2] == [["Music", 0.9], ["Guitar", 0.5]] and (music["start_s"], music["end_s"]) == (3.0, 4.0)


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


def strict_json(text):
    def reject(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=reject)


def test_report_files_stay_valid_json_when_a_backend_scores_nan_or_inf(tmp_path):
    from labeler.core import LabelSpec, LoadedSample, SampleInfo, Settings
    from labeler.review import Report
    from labeler.timeline import label_sample, plan_windows

    settings = Settings((LabelSpec("Speech", "Speech"), LabelSpec("Music", "Music")), "other", 1000, 1000, 0.2, "m")
    names = ["Speech", "Music", "Dog", "Bark", "Silence", "Wind"]
    scores = np.array([[0.9, np.nan, 0.1, np.inf, 0.05, 0.01],
                       [0.1, 0.8, -np.inf, 0.3, np.nan, 0.2]])
    audio = np.zeros(32000, np.float32)
    windows = plan_windows(len(audio), 16000, 1000, 1000)
    labeling = label_sample(windows, np.nan_to_num(scores, nan=0, posinf=0, neginf=0), len(audio), 16000, settings,
                            {"speech": 0, "music": 1})
    report = Report(str(tmp_path), settings, names)
    report.sample_labeled(LoadedSample(SampleInfo(7, "x.wav", 16000.0, len(audio), 0, {}), audio), windows, scores,
                          labeling)
    report.finish()
    first, second = map(strict_json, (tmp_path / "windows.jsonl").read_text().splitlines())
    # Finite scores rank first; what cannot be written as a number is null.
    assert first["top"] == [["Speech", 0.9], ["Dog", 0.1], ["Silence", 0.05], ["Wind", 0.01], ["Bark", None]]
    assert first["labels_of_interest"] == {"Speech": 0.9, "Music": None}
    assert second["top"][:4] == [["Music", 0.8], ["Bark", 0.3], ["Wind", 0.2], ["Speech", 0.1]]
    assert [s["label"] for s in strict_json((tmp_path / "segments.jsonl").read_text())["segments"]] == ["Speech",
                                                                                                         "Music"]
    assert strict_json((tmp_path / "label_totals.json").read_text())["Music"]["seconds"] == 1.0


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
    from labeler.core import LabelSpec, LoadedSample, SampleInfo, Settings
    from labeler.review import Plotter
    from labeler.timeline import label_sample, plan_windows

    settings = Settings((LabelSpec("Speech", "speech"), LabelSpec("Music", "music", 0.5)), "other", 1000, 500, 0.2,
                        "m")
    audio = concat(tone(SPEECH_HZ, 2, 16000), silence(1, 16000), tone(MUSIC_HZ, 2, 16000))
    info = SampleInfo(9, "x.wav", 16000.0, len(audio), 0, {})
    windows = plan_windows(len(audio), 16000, 1000, 500)
    scores = np.array([[0.9, 0.0] if w.stop_ix <= 32000 else [0.0, 0.9] if w.start_ix >= 48000 else [0.1, 0.1]
                       for w in windows])
    labeling = label_sample(windows, scores, len(audio), 8000, settings, {"speech": 0, "music": 1})
    figure = Plotter(str(ROOT / "tests"), settings).figure(LoadedSample(info, audio), labeling)
    spec_ax, score_ax = figure.axes[:2]
    assert len(spec_ax.patches) == len(labeling.segments) == 3
    assert [line.get_label() for line in score_ax.lines if not line.get_label().startswith("_")] == ["speech",
                                                                                                     "music"]
    assert sorted(line.get_ydata()[0] for line in score_ax.lines if line.get_linestyle() == "--") == [0.2, 0.5]


def test_keys_never_in_report_files(project, run_block, tmp_path):
    run_block("--report-dir", str(tmp_path / "r"), "--plot-dir", str(tmp_path / "p"))
    for path in (tmp_path / "r").rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert STUDIO_KEY not in text and HF_TOKEN not in text


def test_plot_title_names_the_label_in_single_mode():
    from labeler.core import LabelSpec, LoadedSample, SampleInfo, Settings
    from labeler.review import Plotter
    from labeler.timeline import label_sample, plan_windows

    settings = Settings((LabelSpec("Speech", "speech"), LabelSpec("Music", "music")), "other", 1000, 1000, 0.2, "m",
                        "single")
    audio = concat(tone(SPEECH_HZ, 1, 16000), tone(MUSIC_HZ, 2, 16000))
    windows = plan_windows(len(audio), 16000, 1000, 1000)
    scores = np.array([[0.9, 0.0], [0.0, 0.8], [0.0, 0.8]])
    labeling = label_sample(windows, scores, len(audio), 16000, settings, {"speech": 0, "music": 1})
    figure = Plotter(str(ROOT / "tests"), settings).figure(
        LoadedSample(SampleInfo(9, "x.wav", 16000.0, len(audio), 0, {}), audio), labeling)
    assert figure.axes[0].get_title() == "x.wav (sample 9): label music"

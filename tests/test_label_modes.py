"""Label modes end to end against the Studio emulator: --label-mode single, --disable-other, --combine.

The standard project: 101 speech 0-2 s then music 2-4 s (a tie in time; music scores higher),
102 dog / silence / dog, 103 half a second of noise (nothing of interest).
"""

import json

import numpy as np
import soundfile

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, silence, tone
from studio_emulator import EmuSample

DISABLED_KEY = "ast_disabled"


def writes(studio, kind, sample_id=None):
    return [w for w in studio.state.writes if w.kind == kind and (sample_id is None or w.sample_id == sample_id)]


# --- single-label mode --------------------------------------------------------------------------------


def test_single_mode_writes_one_plain_label_per_sample(project, run_block):
    result = run_block("--label-mode", "single")
    assert result.code == 0, result.out + result.err
    labels = {sid: s.label for sid, s in project.state.samples.items()}
    assert labels == {101: "Music", 102: "Dog", 103: "other"}  # 101: equal time, music's higher score wins
    assert writes(project, "structured-labels") == []
    assert all(s.metadata["ast_status"] == "done" for s in project.state.samples.values())
    assert "(speech_music.wav): 2 windows -> label [Music] written" in result.out


def test_single_mode_on_a_sample_with_structured_labels_writes_one_covering_structured_label(project, run_block):
    project.state.samples[101].structured_labels = [{"startIndex": 0, "endIndex": 63999, "label": "old"}]
    result = run_block("--label-mode", "single")
    assert result.code == 0
    assert project.state.samples[101].structured_labels == [{"startIndex": 0, "endIndex": 63999, "label": "Music"}]
    assert writes(project, "edit-label", 101) == []
    assert "label [Music] written (as one structured label: the sample already has structured labels)" in result.out
    assert project.state.samples[102].label == "Dog"  # samples without structured labels get the plain label


def test_single_mode_preview_proposes_the_label_and_metadata(project, run_block):
    project.state.samples[102].structured_labels = [{"startIndex": 0, "endIndex": 63999, "label": "old"}]
    assert run_block("--label-mode", "single", "--propose-actions", "7").code == 0
    plain = project.state.proposals[(7, 101)]
    assert plain["label"] == "Music" and "structuredLabels" not in plain
    assert plain["metadata"]["ast_status"] == "done" and plain["metadata"]["site"] == "lab"
    assert project.state.proposals[(7, 102)]["structuredLabels"] == [
        {"startIndex": 0, "endIndex": 63999, "label": "Dog"}]
    assert [w.kind for w in project.state.writes] == ["propose-changes"] * 3
    assert "isDisabled" not in plain


def test_single_mode_in_a_folder_writes_single_label_entries(run_block, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    soundfile.write(folder / "speech.wav", concat(tone(SPEECH_HZ, 3, 22050), silence(1, 22050)), 22050)
    soundfile.write(folder / "quiet.wav", silence(1, 16000), 16000)
    result = run_block("--data-ids-file", "", "--input-dir", str(folder), "--label-mode", "single",
                       env={"EI_PROJECT_API_KEY": None, "EI_API_ENDPOINT": None})
    assert result.code == 0, result.out + result.err
    entries = {e["path"]: e for e in json.loads((folder / "info.labels").read_text())["files"]}
    assert entries["speech.wav"]["label"] == {"type": "label", "label": "Speech"}
    assert entries["quiet.wav"]["label"] == {"type": "label", "label": "other"}


def test_single_mode_report_names_the_label(project, run_block, tmp_path):
    assert run_block("--label-mode", "single", "--report-dir", str(tmp_path / "r")).code == 0
    lines = [json.loads(x) for x in (tmp_path / "r" / "segments.jsonl").read_text().splitlines()]
    assert {x["sample_id"]: x["label"] for x in lines} == {101: "Music", 102: "Dog", 103: "other"}


def test_a_score_exactly_at_a_threshold_labels_end_to_end(project, run_block):
    # The emulator scores the dog tone 0.7, sent as JSON and held as float32 like any model's scores.
    result = run_block(labels="Speech\\nMusic\\nDog (dog, 0.7)")
    assert result.code == 0, result.out + result.err
    assert [seg["label"] for seg in project.state.samples[102].structured_labels] == ["dog"]


def test_single_mode_pools_classes_renamed_to_one_label_end_to_end(studio, run_block):
    # Speech 2 s and music 2 s, both written "sound", hold more time together than dog's 3 s.
    rate = 16000
    audio = concat(tone(SPEECH_HZ, 2, rate), tone(MUSIC_HZ, 2, rate), tone(DOG_HZ, 3, rate))
    studio.state.add(EmuSample(310, "speech_music_dog.wav", rate, [audio]))
    assert run_block("--label-mode", "single", "--win-size-ms", "1000", "--win-stride-ms", "1000",
                     labels="Speech (sound)\\nMusic (sound)\\nDog").code == 0
    metadata = studio.state.samples[310].metadata
    assert studio.state.samples[310].label == "sound"
    # the confidence keys describe "sound": speech 0.8 and music 0.9 over its 4 s, dog's 3 s not it
    assert (metadata["ast_confidence_mean"], metadata["ast_confidence_min"], metadata["ast_other_share"]) == (
        "0.850", "0.800", "0.429")


# --- disabling samples with nothing of interest ---------------------------------------------------------


def test_disable_other_disables_only_samples_with_nothing_of_interest(project, run_block):
    result = run_block("--disable-other")
    assert result.code == 0, result.out + result.err
    assert {sid: s.is_disabled for sid, s in project.state.samples.items()} == {101: False, 102: False, 103: True}
    assert project.state.samples[103].metadata[DISABLED_KEY] == "other-only"
    assert project.state.samples[103].structured_labels == [{"startIndex": 0, "endIndex": 7999, "label": "other"}]
    assert DISABLED_KEY not in project.state.samples[101].metadata
    assert "disabled: no label of interest found" in result.out
    kinds = [w.kind for w in project.state.writes if w.sample_id == 103]
    assert kinds == ["metadata", "structured-labels", "disable", "metadata"]
    assert project.state.samples[103].metadata["ast_status"] == "done"


def test_disable_other_works_in_single_mode_too(project, run_block):
    assert run_block("--disable-other", "--label-mode", "single").code == 0
    assert project.state.samples[103].is_disabled and project.state.samples[103].label == "other"
    assert not project.state.samples[102].is_disabled


def test_disable_other_preview_proposes_is_disabled(project, run_block):
    assert run_block("--disable-other", "--propose-actions", "5").code == 0
    proposals = {sid: project.state.proposals[(5, sid)] for sid in (101, 102, 103)}
    assert proposals[103]["isDisabled"] is True and proposals[103]["metadata"][DISABLED_KEY] == "other-only"
    assert "isDisabled" not in proposals[101] and "isDisabled" not in proposals[102]
    assert not any(s.is_disabled for s in project.state.samples.values())  # preview writes nothing


def test_preview_says_what_would_be_disabled_or_enabled_without_claiming_it_was(project, run_block):
    preview = run_block("--disable-other", "--propose-actions", "5")
    assert "would be disabled: no label of interest found" in preview.out
    assert "(disabled:" not in preview.out
    assert run_block("--disable-other").code == 0  # 103 is disabled for real
    preview = run_block("--disable-other", "--propose-actions", "6", labels="Speech\\nMusic\\nDog\\nVehicle")
    assert "would be enabled again: a label of interest found" in preview.out
    assert "(enabled again:" not in preview.out


def test_a_sample_the_block_disabled_is_enabled_when_something_is_found(project, run_block):
    assert run_block("--disable-other").code == 0
    result = run_block("--disable-other", labels="Speech\\nMusic\\nDog\\nVehicle")  # noise is now of interest
    assert result.code == 0
    sample = project.state.samples[103]
    assert not sample.is_disabled and DISABLED_KEY not in sample.metadata
    assert "enabled again: a label of interest found" in result.out


def test_a_sample_someone_else_disabled_is_never_enabled(project, run_block):
    project.state.samples[101].is_disabled = True  # disabled by hand, no mark of the block
    result = run_block("--disable-other")
    assert result.code == 0
    assert project.state.samples[101].is_disabled and DISABLED_KEY not in project.state.samples[101].metadata
    assert writes(project, "enable") == []
    assert project.state.samples[101].structured_labels  # still labeled


def test_a_refused_disable_fails_that_sample_by_name(project, run_block):
    project.state.fault = lambda method, path: (200, {}, {"success": False, "error": "Sample is locked"}) \
        if path.endswith("/103/disable") else None
    result = run_block("--disable-other")
    assert result.code == 1
    assert "not labeled: sample 103 (short_noise.wav): Studio refused disabling sample 103: Sample is locked" \
        in result.out
    assert project.state.samples[103].metadata["ast_status"] == "labeling"  # a rerun redoes it
    assert all(project.state.samples[sid].metadata["ast_status"] == "done" for sid in (101, 102))


def test_disable_other_is_refused_for_a_folder(run_block, tmp_path):
    result = run_block("--data-ids-file", "", "--input-dir", str(tmp_path), "--disable-other",
                       env={"EI_PROJECT_API_KEY": None, "EI_API_ENDPOINT": None})
    assert result.code == 2 and "--disable-other" in result.err and "info.labels" in result.err


# --- combining overlapping windows ------------------------------------------------------------------------


def test_combine_min_keeps_a_presence_boundary_that_mean_drags_out(studio, hf, run_block):
    # 12 s at 16 kHz: speech 0-6.2 s, silence after. 2 s windows every 500 ms; a weakly trained model
    # scores a window with any speech in it as speech.
    audio = concat(tone(SPEECH_HZ, 6.2, 16000), silence(5.8, 16000))
    studio.state.add(EmuSample(300, "speech_then_quiet.wav", 16000, [audio]))
    hf.state.scoring = "presence"

    def speech_end(*args):
        assert run_block("--win-size-ms", "2000", "--win-stride-ms", "500", "--force", *args).code == 0
        return next(seg["endIndex"] + 1 for seg in studio.state.samples[300].structured_labels
                    if seg["label"] == "Speech")

    with_min, with_mean = speech_end(), speech_end("--combine", "mean")
    change = int(6.2 * 16000)
    assert abs(with_min - change) <= 8000  # within one 500 ms stride
    assert with_mean - change > 8000  # dragged out by more than a stride


def test_unknown_mode_or_rule_exits_2_naming_the_allowed_values(project, run_block):
    bad_mode = run_block("--label-mode", "multiple")
    bad_rule = run_block("--combine", "max")
    assert bad_mode.code == 2 and "--label-mode" in bad_mode.err and "'multi', 'single'" in bad_mode.err
    assert bad_rule.code == 2 and "--combine" in bad_rule.err and "'min', 'mean'" in bad_rule.err
    assert project.state.writes == []


# --- reruns after the upgrade ------------------------------------------------------------------------------

# What block 1.0.0 wrote for the standard project's default settings.
OLD_FINGERPRINT = ('{"block":"1.0.0","model":"MIT/ast-finetuned-audioset-10-10-0.4593","labels":'
                   '[["Speech","Speech",0.2],["Music","Music",0.2],["Dog","Dog",0.2]],"other":"other",'
                   '"win_ms":2000,"stride_ms":2000}')


def finished_by_1_0_0(project):
    for sample in project.state.samples.values():
        sample.metadata = {"ast_status": "done", "ast_settings": OLD_FINGERPRINT}


def test_samples_finished_by_the_previous_version_are_skipped_with_default_settings(project, run_block):
    finished_by_1_0_0(project)
    result = run_block()
    assert result.code == 0 and "3 already labeled with these settings, skipped" in result.out
    assert project.state.writes == []


def test_another_mode_relabels_samples_finished_by_the_previous_version(project, run_block):
    finished_by_1_0_0(project)
    result = run_block("--label-mode", "single")
    assert result.code == 0 and "skipped" not in result.out
    assert {s.label for s in project.state.samples.values()} == {"Music", "Dog", "other"}
    assert np.all([s.metadata["ast_settings"] != OLD_FINGERPRINT for s in project.state.samples.values()])


def test_combine_rule_reaches_preview_proposals_too(studio, hf, run_block):
    audio = concat(tone(SPEECH_HZ, 6.2, 16000), silence(5.8, 16000))
    studio.state.add(EmuSample(300, "speech_then_quiet.wav", 16000, [audio]))
    hf.state.scoring = "presence"
    ends = {}
    for job, rule in ((1, "min"), (2, "mean")):
        assert run_block("--win-size-ms", "2000", "--win-stride-ms", "500", "--combine", rule,
                         "--propose-actions", str(job)).code == 0
        proposed = studio.state.proposals[(job, 300)]["structuredLabels"]
        ends[rule] = next(seg["endIndex"] + 1 for seg in proposed if seg["label"] == "Speech")
    assert abs(ends["min"] - int(6.2 * 16000)) <= 8000 < ends["mean"] - int(6.2 * 16000)
    assert studio.state.samples[300].structured_labels is None  # preview wrote nothing

"""Re-runs finish what is left: finished samples are skipped, interrupted ones are redone."""

import json

from conftest import STUDIO_KEY
from test_transform import EXPECTED_16K


def writes_per_sample(studio, kind="structured-labels"):
    counts = {}
    for w in studio.state.writes:
        if w.kind == kind:
            counts[w.sample_id] = counts.get(w.sample_id, 0) + 1
    return counts


def test_rerun_with_the_same_settings_skips_every_sample(project, run_block):
    assert run_block().code == 0
    writes = len(project.state.writes)
    second = run_block()
    assert second.code == 0
    assert len(project.state.writes) == writes
    assert "3 already labeled with these settings, skipped" in second.out
    assert not [r for r in project.state.requests[-10:] if r.path.endswith("/wav")]  # no download either


def test_rerun_with_other_settings_relabels(project, run_block):
    run_block()
    run_block("--min-confidence", "0.95")
    assert writes_per_sample(project) == {101: 2, 102: 2, 103: 2}
    assert project.state.labels_of(101) == [{"startIndex": 0, "endIndex": 63999, "label": "other"}]


def test_force_relabels(project, run_block):
    run_block()
    result = run_block("--force")
    assert result.code == 0 and writes_per_sample(project) == {101: 2, 102: 2, 103: 2}


def test_preview_never_skips(project, run_block):
    run_block()
    run_block("--propose-actions", "5")
    assert len([w for w in project.state.writes if w.kind == "propose-changes"]) == 3


def test_manual_edits_after_a_finished_run_are_kept(project, run_block):
    run_block()
    project.state.samples[101].structured_labels = [{"startIndex": 0, "endIndex": 63999, "label": "fixed by hand"}]
    run_block()
    assert project.state.labels_of(101)[0]["label"] == "fixed by hand"


def test_sample_interrupted_between_labels_and_done_mark_is_redone(project, run_block):
    run_block()
    finished = dict(project.state.samples[102].metadata)
    # as if a run with other settings died after writing labels, before its done mark
    project.state.samples[102].metadata = {**finished, "ast_status": "labeling"}
    project.state.samples[102].structured_labels = [{"startIndex": 0, "endIndex": 63999, "label": "half-written"}]
    result = run_block()
    assert result.code == 0
    assert project.state.labels_of(102) == EXPECTED_16K[102]
    assert project.state.samples[102].metadata["ast_status"] == "done"
    assert writes_per_sample(project) == {101: 1, 102: 2, 103: 1}


def test_settings_fingerprint_is_recorded(project, run_block):
    run_block("--win-size-ms", "1000", "--win-stride-ms", "500", labels="Dog (doggo, 0.3)")
    settings = json.loads(project.state.samples[101].metadata["ast_settings"])
    assert settings == {"block": settings["block"], "model": "MIT/ast-finetuned-audioset-10-10-0.4593",
                        "labels": [["Dog", "doggo", 0.3]], "other": "other", "win_ms": 1000, "stride_ms": 500}
    assert STUDIO_KEY not in json.dumps(project.state.samples[101].metadata)


# --- the disabled mark: the block enables the samples it disabled (or was disabling), no others ------------

NOISE_OF_INTEREST = "Speech\\nMusic\\nDog\\nVehicle"  # the emulator scores noise as Vehicle: 103 is now of interest


def refuse_disable(method, path):
    return (200, {}, {"success": False, "error": "Sample is locked"}) if path.endswith("/103/disable") else None


def disabled_state(project):
    return {sid: (s.is_disabled, s.metadata.get("ast_disabled")) for sid, s in project.state.samples.items()}


def test_a_disable_studio_refuses_drops_its_intent_so_a_later_hand_disable_is_kept(project, run_block):
    project.state.fault = refuse_disable
    assert run_block("--disable-other").code == 1  # 103 holds only noise: its disable is refused
    sample = project.state.samples[103]
    # the labeling mark recorded the intent; one more write drops it, as the sample is still enabled
    assert [w.body["metadata"].get("ast_disabled") for w in project.state.writes_of("metadata")
            if w.sample_id == 103] == ["other-only", None]
    assert not sample.is_disabled and "ast_disabled" not in sample.metadata
    project.state.fault = None
    sample.is_disabled = True  # someone disables it by hand
    result = run_block("--disable-other", labels=NOISE_OF_INTEREST)
    assert result.code == 0, result.out + result.err
    assert sample.is_disabled and writes_per_sample(project, "enable") == {}
    assert "ast_disabled" not in sample.metadata


def test_a_stale_mark_is_dropped_after_a_refused_disable(project, run_block):
    run_block()
    # the block once disabled 103, then someone enabled it by hand: the mark is stale
    project.state.samples[103].metadata["ast_disabled"] = "other-only"
    project.state.fault = refuse_disable
    assert run_block("--disable-other").code == 1
    assert "ast_disabled" not in project.state.samples[103].metadata


def test_a_mark_beside_labeling_is_trusted_so_the_sample_is_enabled_again(project, run_block):
    # a run disabled 103, then stopped before its done mark
    sample = project.state.samples[103]
    sample.metadata = {"ast_status": "labeling", "ast_disabled": "other-only"}
    sample.is_disabled = True
    result = run_block("--disable-other", labels=NOISE_OF_INTEREST)
    assert result.code == 0, result.out + result.err
    assert not sample.is_disabled and writes_per_sample(project, "enable") == {103: 1}
    assert sample.metadata["ast_status"] == "done" and "ast_disabled" not in sample.metadata


def test_a_sample_the_block_disabled_is_still_enabled_again(project, run_block):
    assert run_block("--disable-other").code == 0
    assert project.state.samples[103].is_disabled
    result = run_block("--disable-other", labels=NOISE_OF_INTEREST)
    assert result.code == 0 and not project.state.samples[103].is_disabled
    assert writes_per_sample(project, "enable") == {103: 1}


def test_a_refused_enable_is_retried_by_the_next_run(project, run_block):
    assert run_block("--disable-other").code == 0
    project.state.fault = lambda method, path: (500, {}, {"success": False}) if path.endswith("/103/enable") \
        else None
    failed = run_block("--disable-other", labels=NOISE_OF_INTEREST)
    assert failed.code == 1 and "not labeled: sample 103" in failed.out
    assert disabled_state(project)[103] == (True, "other-only")  # the labeling mark kept the mark
    project.state.fault = None
    rerun = run_block("--disable-other", labels=NOISE_OF_INTEREST)
    assert rerun.code == 0, rerun.out + rerun.err
    assert disabled_state(project)[103] == (False, None)
    assert project.state.samples[103].metadata["ast_status"] == "done"


def test_a_disable_whose_done_mark_was_lost_is_still_the_blocks_to_undo(project, run_block):
    sample = project.state.samples[103]

    def lose_done_mark(method, path):  # the disable landed; the metadata write after it fails
        return (500, {}, {"success": False}) if path.endswith("/103/metadata") and sample.is_disabled else None

    project.state.fault = lose_done_mark
    assert run_block("--disable-other").code == 1
    assert sample.is_disabled and sample.metadata["ast_status"] == "labeling"
    project.state.fault = None
    assert run_block("--disable-other").code == 0  # finishes 103: done, still disabled, still marked
    assert sample.metadata["ast_status"] == "done" and disabled_state(project)[103] == (True, "other-only")
    assert run_block("--disable-other", labels=NOISE_OF_INTEREST).code == 0
    assert disabled_state(project)[103] == (False, None)

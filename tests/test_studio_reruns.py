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

"""The whole block against emulated Studio and inference servers, through its real code paths."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from audio import MUSIC_HZ, SPEECH_HZ, concat, tone, wav_bytes
from conftest import HF_TOKEN, ROOT, STUDIO_KEY, speech_then_music
from studio_emulator import EmuSample

EXPECTED_16K = {
    101: [{"startIndex": 0, "endIndex": 31999, "label": "Speech"},
          {"startIndex": 32000, "endIndex": 63999, "label": "Music"}],
    102: [{"startIndex": 0, "endIndex": 63999, "label": "Dog"}],
    103: [{"startIndex": 0, "endIndex": 7999, "label": "other"}],
}


def sample_requests(studio, suffix=""):
    return [r for r in studio.state.requests if r.path.endswith(suffix) and "/raw-data/" in r.path]


# --- apply mode -------------------------------------------------------------------------------


def test_apply_mode_writes_valid_labels_for_every_sample(project, run_block):
    result = run_block()
    assert result.code == 0, result.out + result.err
    assert {sid: project.state.labels_of(sid) for sid in EXPECTED_16K} == EXPECTED_16K
    assert project.state.rejected == []
    assert "Done: 3 of 3 samples labeled" in result.out


def test_apply_mode_keeps_existing_metadata_and_adds_the_blocks_keys(project, run_block):
    run_block()
    metadata = project.state.samples[101].metadata
    assert metadata["site"] == "lab"
    assert metadata["labeled_by"] == "ast-audio-labeler"
    assert metadata["ast_model"] == "MIT/ast-finetuned-audioset-10-10-0.4593"
    assert metadata["ast_labels"] == "Speech; Music; Dog"
    settings = json.loads(metadata["ast_settings"])
    assert settings["win_ms"] == 2000 and settings["labels"][0] == ["Speech", "Speech", 0.2]


def test_fresh_samples_get_labels_then_the_done_mark(project, run_block):
    run_block()
    for sid in EXPECTED_16K:
        writes = [w for w in project.state.writes if w.sample_id == sid]
        assert [w.kind for w in writes] == ["structured-labels", "metadata"]  # no done mark yet: no pre-mark
        assert writes[1].body["metadata"]["ast_status"] == "done"


def test_a_done_sample_is_marked_labeling_before_its_labels_change(project, run_block):
    run_block()
    project.state.writes.clear()
    assert run_block("--win-size-ms", "1000").code == 0  # other settings: every sample is relabeled
    for sid in EXPECTED_16K:
        writes = [w for w in project.state.writes if w.sample_id == sid]
        assert [w.kind for w in writes] == ["metadata", "structured-labels", "metadata"]
        assert writes[0].body["metadata"]["ast_status"] == "labeling"
        assert writes[2].body["metadata"]["ast_status"] == "done"


def test_sample_is_read_with_the_fewest_payload_values(project, run_block):
    run_block()
    reads = [r for r in sample_requests(project) if r.method == "GET" and r.path.endswith(("101", "102", "103"))]
    assert len(reads) == 3 and all(r.query["limitPayloadValues"] == "1" for r in reads)
    assert all("proposedActionsJobId" not in r.query for r in reads)


def test_each_wav_is_downloaded_once(project, run_block):
    run_block()
    wavs = sample_requests(project, "/wav")
    assert sorted(r.path for r in wavs) == sorted(set(r.path for r in wavs)) and len(wavs) == 3


def test_ids_file_as_object_form(project, run_block):
    result = run_block(ids={"ids": [101, 102]})
    assert result.code == 0
    assert project.state.labels_of(101) == EXPECTED_16K[101] and project.state.labels_of(103) is None


def test_44k1_sample_is_labeled_in_its_own_index_space(studio, run_block):
    studio.state.add(speech_then_music(44100))
    result = run_block()
    assert result.code == 0, result.out + result.err
    assert studio.state.labels_of(101) == [{"startIndex": 0, "endIndex": 88199, "label": "Speech"},
                                           {"startIndex": 88200, "endIndex": 176399, "label": "Music"}]


def test_inference_receives_16k_mono_windows_of_the_planned_length(studio, hf, run_block):
    studio.state.add(speech_then_music(44100))
    run_block("--win-size-ms", "1000")
    # the preflight's short silent window, then the sample's four 1 s windows
    assert [r["seconds"] for r in hf.state.requests] == [0.1] + [1.0] * 4
    assert all(r["rate"] == 16000 for r in hf.state.requests)


def test_stride_smaller_than_window_puts_the_boundary_within_one_stride(studio, run_block):
    # speech for 2.3 s, then music until 6 s
    rate = 16000
    studio.state.add(EmuSample(201, "change.wav", rate, [concat(tone(SPEECH_HZ, 2.3, rate), tone(MUSIC_HZ, 3.7, rate))]))
    result = run_block("--win-size-ms", "1000", "--win-stride-ms", "250", "--combine", "mean")
    assert result.code == 0
    labels = studio.state.labels_of(201)
    assert [seg["label"] for seg in labels] == ["Speech", "Music"]
    assert abs(labels[1]["startIndex"] - round(2.3 * rate)) <= 250 * rate // 1000


def test_with_min_adjacent_sounds_meet_within_one_stride_when_scores_mean_presence(studio, hf, run_block):
    # Like AST, the presence scorer scores both sounds high in a window that holds both.
    rate = 16000
    studio.state.add(EmuSample(201, "change.wav", rate, [concat(tone(SPEECH_HZ, 2.3, rate), tone(MUSIC_HZ, 3.7, rate))]))
    hf.state.scoring = "presence"
    result = run_block("--win-size-ms", "1000", "--win-stride-ms", "250")
    assert result.code == 0
    labels = studio.state.labels_of(201)
    assert [seg["label"] for seg in labels] == ["Speech", "Music"]
    assert abs(labels[1]["startIndex"] - round(2.3 * rate)) <= 250 * rate // 1000


def test_label_ranked_far_down_still_passes_its_threshold(studio, run_block):
    studio.state.add(EmuSample(301, "music.wav", 16000, [tone(MUSIC_HZ, 2, 16000)]))
    result = run_block(labels="Bird (bird, 0.25)")
    assert result.code == 0
    assert studio.state.labels_of(301) == [{"startIndex": 0, "endIndex": 31999, "label": "bird"}]


def test_renamed_labels_and_other_label_are_written_as_typed(project, run_block):
    result = run_block("--other-label", "Background", labels="speech (Talking)\\nmusic\\nDog (Doggo, 0.9)")
    assert result.code == 0
    assert [s["label"] for s in project.state.labels_of(101)] == ["Talking", "music"]
    assert project.state.labels_of(102)[0]["label"] == "Background"  # Dog 0.7 < 0.9


def test_whole_sample_window(project, run_block):
    result = run_block("--win-size-ms", "0")
    assert result.code == 0
    assert len(project.state.labels_of(101)) == 1


def test_long_window_warns_that_the_model_hears_only_10_255_s(project, run_block):
    result = run_block("--win-size-ms", "12000")
    assert result.code == 0 and "is longer than 10255 ms, the model's input" in result.out
    assert run_block("--win-size-ms", "10255", "--force").out.count("WARNING: --win-size-ms") == 0


def test_unknown_extra_arguments_are_ignored_with_a_warning(project, run_block):
    result = run_block("--some-new-studio-flag", "1")
    assert result.code == 0 and "ignoring unknown arguments: --some-new-studio-flag 1" in result.out


def test_progress_lines_are_plain_and_periodic(project, run_block, monkeypatch):
    import labeler.pipeline

    monkeypatch.setattr(labeler.pipeline, "PROGRESS_EVERY_S", 0.0)
    result = run_block()
    progress = [line for line in result.out.splitlines() if line.startswith("progress:")]
    assert progress and all(re.fullmatch(r"progress: \d+/3 samples, [\d.]+ windows/s, ETA \d+m\d\ds", line)
                            for line in progress)
    assert "\r" not in result.out


def test_unreadable_label_list_warns_and_goes_on(project, hf, run_block):
    hf.state.serve_config = False
    result = run_block()
    assert result.code == 0
    assert "could not read the label list" in result.out
    assert project.state.labels_of(101) == EXPECTED_16K[101]


# --- preview mode -----------------------------------------------------------------------------


def test_preview_proposes_once_per_sample_and_writes_nothing(project, run_block):
    result = run_block("--propose-actions", "42")
    assert result.code == 0, result.out + result.err
    assert [w.kind for w in project.state.writes] == ["propose-changes"] * 3
    assert all(project.state.samples[sid].structured_labels is None for sid in EXPECTED_16K)
    for sid, expected in EXPECTED_16K.items():
        changes = project.state.proposals[(42, sid)]
        assert changes["structuredLabels"] == expected
        assert changes["metadata"]["labeled_by"] == "ast-audio-labeler"
    assert project.state.proposals[(42, 101)]["metadata"]["site"] == "lab"


def test_preview_reads_samples_with_the_job_id(project, run_block):
    run_block("--propose-actions", "42")
    reads = [r for r in sample_requests(project) if r.path.endswith(("101", "102", "103"))]
    assert reads and all(r.query["proposedActionsJobId"] == "42" for r in reads)


# --- bad input: configuration errors stop before touching anything ----------------------------


def assert_nothing_touched(studio):
    assert studio.state.writes == []
    assert sample_requests(studio) == []


@pytest.mark.parametrize("args, message", [
    (["--win-size-ms", "-5"], "--win-size-ms -5 is out of range"),
    (["--win-size-ms", "abc"], "--win-size-ms must be a whole number"),
    (["--win-stride-ms", "0"], "--win-stride-ms 0 is out of range"),
    (["--win-size-ms", "1000", "--win-stride-ms", "2000"], "--win-stride-ms 2000 is larger than --win-size-ms"),
    (["--min-confidence", "1.5"], "--min-confidence 1.5 is out of range (allowed: 0..1)"),
    (["--propose-actions", "abc"], "--propose-actions must be a whole number"),
    (["--inference-url", "ftp://example.com/x"], "is not an http(s) URL"),
])
def test_out_of_range_arguments(project, run_block, args, message):
    result = run_block(*args)
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err
    assert_nothing_touched(project)


def test_unknown_label_stops_before_any_sample(project, run_block):
    result = run_block(labels="Speech\\nDoggy")
    assert result.code == 2
    assert "unknown label 'Doggy'" in result.err and "did you mean: 'Dog'" in result.err
    assert_nothing_touched(project)


def test_missing_studio_key(project, run_block):
    result = run_block(env={"EI_PROJECT_API_KEY": None})
    assert result.code == 2 and "EI_PROJECT_API_KEY is not set" in result.err
    assert project.state.requests == []


def test_studio_key_rejected(project, run_block):
    result = run_block(env={"EI_PROJECT_API_KEY": "ei_wrong"})
    assert result.code == 2 and "Studio rejected EI_PROJECT_API_KEY" in result.err
    assert_nothing_touched(project)


@pytest.mark.parametrize("content, message", [
    (None, "cannot read it"),
    ("[101, ", "not valid JSON"),
    ('{"samples": [1]}', "expected a JSON array"),
    ('[101, "102"]', "sample ids must be positive integers, got '102'"),
    ("[101, 1.5]", "got 1.5"),
])
def test_bad_ids_file(project, run_block, tmp_path, content, message):
    path = tmp_path / "bad-ids.json"
    if content is not None:
        path.write_text(content)
    result = run_block("--data-ids-file", str(path))
    assert result.code == 2 and message in result.err
    assert_nothing_touched(project)


def test_project_id_must_be_ascii_digits(project, run_block):
    result = run_block(env={"EI_PROJECT_ID": "\u00b2"})  # "²": str.isdigit() says yes, int() says no
    assert result.code == 2 and "EI_PROJECT_ID '\u00b2' is not a positive integer" in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert project.state.requests == []


@pytest.mark.parametrize("other, labels, clash", [
    ("dog", "Speech\\nDog", "Dog"),  # case-insensitive
    ("Animal", "Speech\\nDog (animal)", "animal"),  # against the renamed output label
])
def test_other_label_equal_to_a_label_of_interest_is_refused(project, run_block, other, labels, clash):
    result = run_block("--other-label", other, labels=labels)
    assert result.code == 2
    assert f"--other-label {other!r} is also a label of interest ({clash!r}" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert_nothing_touched(project)


def test_unwritable_report_dir_stops_before_the_model_or_studio(project, hf, run_block, tmp_path):
    (tmp_path / "a-file").write_text("")
    result = run_block("--report-dir", str(tmp_path / "a-file" / "report"))
    assert result.code == 2 and "--report-dir" in result.err and "cannot write there" in result.err
    assert hf.state.requests == [] and project.state.requests == []


def test_repeated_ids_are_labeled_once_and_the_log_says_so(project, run_block):
    result = run_block(ids=[101, 102, 101, 103, 101, 102])
    assert result.code == 0, result.out + result.err
    assert "2 sample ids listed more than once (101, 102); each sample is labeled once" in result.out
    labels_written = [w.sample_id for w in project.state.writes if w.kind == "structured-labels"]
    assert sorted(labels_written) == [101, 102, 103]
    assert len(sample_requests(project, "/wav")) == 3
    assert "Done: 3 of 3 samples labeled" in result.out


# --- a configuration error in the middle of a run ------------------------------------------------------


def test_key_revoked_after_some_writes_exits_1_not_2(project, run_block):
    project.state.revoke_key_after_writes = 2  # one sample gets its labels and done mark, then 401s
    result = run_block("--studio-concurrency", "1")
    assert len(project.state.writes) >= 2
    assert "Studio rejected EI_PROJECT_API_KEY" in result.err
    assert result.code == 1  # 2 would say that nothing was written
    assert "Traceback" not in result.out + result.err


def test_a_write_whose_answer_never_came_counts_as_written(project, run_block):
    posts = {"n": 0}

    def drop_one_write_then_revoke(method, path):
        if method != "POST":
            return None
        posts["n"] += 1  # the first write may have reached Studio: its connection dropped before the answer
        return "drop" if posts["n"] == 1 else (401, {}, {"success": False, "error": "Invalid API key"})
    project.state.fault = drop_one_write_then_revoke
    result = run_block("--studio-concurrency", "1")
    assert "Studio rejected EI_PROJECT_API_KEY" in result.err
    assert result.code == 1  # 2 would promise that nothing was written


def test_key_revoked_before_any_write_still_exits_2(project, run_block):
    project.state.revoke_key_after_writes = 0  # reads go through, the first write is refused
    result = run_block()
    assert project.state.writes == [] and "Studio rejected EI_PROJECT_API_KEY" in result.err
    assert result.code == 2


def test_inference_endpoint_rejecting_the_token_stops_the_run(project, run_block):
    result = run_block(env={"HF_TOKEN": "hf_wrong"})
    assert result.code == 2 and "rejected the token" in result.err
    assert project.state.writes == []


def test_missing_hf_token_warns_and_the_endpoints_refusal_stops_the_run(project, run_block):
    result = run_block(env={"HF_TOKEN": None})
    assert "neither HF_TOKEN nor HF_API_KEY is set" in result.out
    assert result.code == 2 and "rejected a request without a token (HTTP 401" in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert project.state.requests == []  # the preflight stopped it before Studio was touched


def test_rejected_hf_token_stops_the_run_before_any_studio_request(project, hf, run_block):
    result = run_block(env={"HF_TOKEN": "hf_wrong"})
    assert result.code == 2 and "rejected the token (HTTP 401" in result.err
    assert len(hf.state.requests) == 1 and project.state.requests == []


def test_wrong_inference_url_stops_the_run_before_any_studio_request(project, hf, run_block):
    result = run_block("--inference-url", hf.url.split("/hf-inference/")[0] + "/wrong/path")
    assert result.code == 2 and "HTTP 404" in result.err and "check --inference-url" in result.err
    assert project.state.requests == []


def test_endpoint_without_auth_runs_without_a_token(project, hf, run_block):
    hf.state.token = None  # this endpoint accepts requests without Authorization
    result = run_block(env={"HF_TOKEN": None})
    assert result.code == 0, result.out + result.err
    assert project.state.labels_of(101) == EXPECTED_16K[101]


def test_hf_api_key_is_accepted_as_the_token(project, run_block):
    result = run_block(env={"HF_TOKEN": None, "HF_API_KEY": HF_TOKEN})
    assert result.code == 0, result.out + result.err


def test_inference_endpoint_that_never_loads_stops_quickly_and_writes_nothing(project, hf, run_block):
    hf.state.always_loading = True
    result = run_block("--max-wait-s", "2")
    # the preflight waited for the model as long as allowed, then stopped before Studio was touched
    assert result.code == 2 and "still loading the model after 2 s" in result.err
    assert project.state.requests == []


# --- bad samples: the others are still labeled --------------------------------------------------


def test_missing_sample_is_reported_and_others_labeled(project, run_block):
    result = run_block(ids=[101, 999, 102])
    assert result.code == 1
    assert "not labeled: sample 999" in result.out and "not found" in result.out
    assert project.state.labels_of(101) == EXPECTED_16K[101] and project.state.labels_of(102) == EXPECTED_16K[102]


def test_non_audio_sample(project, run_block):
    project.state.add(EmuSample(401, "accel.json", 100, [np.zeros(500, np.float32)],
                                sensors=[{"index": 0, "name": "accX", "units": "m/s2"}]))
    result = run_block()
    assert result.code == 1 and "not an audio sample" in result.out
    assert project.state.labels_of(101) == EXPECTED_16K[101]


@pytest.mark.parametrize("data, message", [
    (b"RIFF\x00\x00\x00\x00WAVEgarbage", "corrupt"),
    (wav_bytes(np.zeros(0, np.float32), 16000), "no audio frames"),
    (b'{"success": false, "error": "boom"}', "did not return a WAV file"),
])
def test_corrupt_or_empty_wav(project, run_block, data, message):
    project.state.add(EmuSample(501, "bad.wav", 16000, [np.zeros(16000, np.float32)], wav_override=data))
    result = run_block()
    assert result.code == 1 and message in result.out
    assert project.state.labels_of(501) is None
    assert project.state.labels_of(102) == EXPECTED_16K[102]


def test_studio_rejecting_a_write_fails_only_that_sample(project, run_block):
    def fault(method, path):
        if method == "POST" and path.endswith("/102/structured-labels"):
            return 200, {}, {"success": False, "error": "structuredLabels: index 5 does not have a label"}
        return None
    project.state.fault = fault
    result = run_block()
    assert result.code == 1 and "sample 102" in result.out and "does not have a label" in result.out
    assert project.state.labels_of(101) == EXPECTED_16K[101] and project.state.labels_of(103) == EXPECTED_16K[103]
    assert "ast_status" not in project.state.samples[102].metadata  # never marked done: a rerun redoes it


def test_studio_hiccups_are_retried(project, run_block):
    calls = {"n": 0}

    def fault(method, path):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            return (503, {"Retry-After": "0"}, {"success": False, "error": "busy"}) if method == "GET" else \
                (500, {}, {"success": False, "error": "oops"})
        return None
    project.state.fault = fault
    result = run_block()
    assert result.code == 0, result.out + result.err
    assert {sid: project.state.labels_of(sid) for sid in EXPECTED_16K} == EXPECTED_16K


# --- secrets ------------------------------------------------------------------------------------


def test_keys_never_appear_in_output_or_metadata(project, hf, run_block):
    outputs = [run_block(), run_block("--propose-actions", "7"), run_block(ids=[101, 999]),
               run_block(env={"EI_PROJECT_API_KEY": STUDIO_KEY + "x"}), run_block(env={"HF_TOKEN": HF_TOKEN + "x"})]
    hf.state.always_loading = True
    outputs.append(run_block("--max-wait-s", "1"))
    text = "".join(r.out + r.err for r in outputs) + json.dumps([w.body for w in project.state.writes])
    assert STUDIO_KEY not in text and HF_TOKEN not in text
    assert STUDIO_KEY[:12] not in text and HF_TOKEN[:12] not in text


def test_keys_never_appear_even_when_errors_quote_them(project, hf, run_block, tmp_path):
    # A service (or a proxy) that quotes the request's credentials in its refusal.
    echo = f"request with x-api-key {STUDIO_KEY} and Authorization: Bearer {HF_TOKEN} refused"
    project.state.fault = lambda method, path: (200, {}, {"success": False, "error": echo}) \
        if path.endswith("/102/structured-labels") else None
    result = run_block("--report-dir", str(tmp_path / "report"))
    assert result.code == 1 and "Studio refused writing labels of sample 102" in result.out
    assert project.state.labels_of(101) == EXPECTED_16K[101]  # the other samples are labeled
    files = "".join(p.read_text() for p in (tmp_path / "report").rglob("*") if p.is_file())
    text = result.out + result.err + files
    assert STUDIO_KEY not in text and HF_TOKEN not in text and "[redacted]" in result.out


@pytest.mark.parametrize("name, value", [
    ("EI_PROJECT_API_KEY", STUDIO_KEY[:16] + "\r\n" + STUDIO_KEY[16:]),
    ("HF_TOKEN", HF_TOKEN[:12] + "\n" + HF_TOKEN[12:]),
    ("HF_API_KEY", HF_TOKEN[:12] + " " + HF_TOKEN[12:]),
])
def test_key_with_a_line_break_is_refused_without_showing_it(project, hf, run_block, name, value):
    env = {name: value, "HF_TOKEN": None} if name == "HF_API_KEY" else {name: value}
    result = run_block(env=env)
    assert result.code == 2
    assert f"{name} holds a line break, space or other character no key has" in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    for part in value.split():
        assert part not in result.out + result.err
    assert project.state.writes == []


def test_whitespace_around_a_key_is_ignored(project, run_block):
    result = run_block(env={"HF_TOKEN": HF_TOKEN + "\n", "EI_PROJECT_API_KEY": " " + STUDIO_KEY + "\r\n"})
    assert result.code == 0, result.out + result.err


# --- the command line as Studio runs it ---------------------------------------------------------


def run_cli(args, env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("EI_", "HF_"))}
    full_env.update(env)
    return subprocess.run([sys.executable, "-u", str(ROOT / "transform.py"), *args], env=full_env,
                          capture_output=True, text=True, timeout=120)


def test_cli_labels_the_project_and_exits_0(project, hf, tmp_path):
    ids = tmp_path / "ids.json"
    ids.write_text("[101, 102, 103]")
    proc = run_cli(["--data-ids-file", str(ids), "--audioset-labels", "Speech\\nMusic\\nDog",
                    "--backend", "remote", "--inference-url", hf.url, "--win-size-ms", "2000"],
                   {"EI_PROJECT_API_KEY": STUDIO_KEY, "EI_API_ENDPOINT": project.endpoint, "HF_TOKEN": HF_TOKEN,
                    "HF_ENDPOINT": hf.hub})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {sid: project.state.labels_of(sid) for sid in EXPECTED_16K} == EXPECTED_16K
    assert STUDIO_KEY not in proc.stdout + proc.stderr


def test_cli_bad_input_is_one_line_without_traceback(project, tmp_path):
    proc = run_cli(["--data-ids-file", str(tmp_path / "missing.json"), "--audioset-labels", "Speech"],
                   {"EI_PROJECT_API_KEY": STUDIO_KEY, "EI_API_ENDPOINT": project.endpoint})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "--data-ids-file" in proc.stderr


def test_cli_missing_required_argument(project):
    proc = run_cli(["--audioset-labels", "Speech"], {"EI_PROJECT_API_KEY": STUDIO_KEY})
    assert proc.returncode == 2 and "--data-ids-file" in proc.stderr and "Traceback" not in proc.stderr


# --- the ids file and the labels lines: cases found in review ------------------------------------------


def test_ids_file_with_a_utf8_byte_order_mark_is_read(project, run_block, tmp_path):
    path = tmp_path / "ids-bom.json"
    path.write_bytes(b"\xef\xbb\xbf[101, 102]")  # what Notepad's "UTF-8 with BOM" saves
    result = run_block("--data-ids-file", str(path))
    assert result.code == 0, result.out + result.err
    assert sorted(w.sample_id for w in project.state.writes if w.kind == "structured-labels") == [101, 102]


@pytest.mark.parametrize("ids", [[], {"ids": []}])
def test_empty_ids_list_exits_0_before_the_model_the_endpoint_or_studio(project, hf, run_block, tmp_path, ids):
    result = run_block(ids=ids)
    assert result.code == 0 and result.err == ""
    assert f"--data-ids-file {tmp_path / 'ids.json'} lists no sample ids; nothing to label" in result.out
    assert project.state.requests == [] and hf.state.count == 0


def test_empty_ids_list_still_needs_the_studio_key(project, hf, run_block):
    result = run_block(ids=[], env={"EI_PROJECT_API_KEY": None})
    assert result.code == 2 and "EI_PROJECT_API_KEY is not set" in result.err
    assert project.state.requests == [] and hf.state.count == 0


def test_mistyped_threshold_stops_before_any_sample_or_inference(project, hf, run_block):
    result = run_block(labels="Speech\\nDog (0.75)")
    assert result.code == 2
    assert result.err == ("ERROR: --audioset-labels: line 'Dog (0.75)' gives a threshold where the new name goes; "
                          "write 'Dog (, 0.75)'\n")
    assert_nothing_touched(project)
    assert hf.state.count == 0

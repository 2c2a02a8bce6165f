"""Never lose work: fault profiles, a killed process, and where keys may go.

Each fault profile runs the block over the same project as a fault-free run and must end with
every sample labeled exactly as in that run, no sample written twice with different results,
and exit code 0.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import numpy as np
import pytest

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, noise, silence, tone, wav_bytes
from capture_server import CaptureServer
from conftest import HF_TOKEN, ROOT, STUDIO_KEY
from studio_emulator import EmuSample

N_SAMPLES = 8


def fill_project(studio, n=N_SAMPLES):
    """n samples of 4 s with a different sound in each half, at 16 and 44.1 kHz."""
    sounds = [lambda r: tone(SPEECH_HZ, 2, r), lambda r: tone(MUSIC_HZ, 2, r), lambda r: tone(DOG_HZ, 2, r),
              lambda r: silence(2, r), lambda r: noise(2, r)]
    studio.state.samples.clear()
    for i in range(n):
        rate = 44100 if i % 3 == 0 else 16000
        audio = concat(sounds[i % 5](rate), sounds[(i + 2) % 5](rate))
        studio.state.add(EmuSample(700 + i, f"f{i}.wav", rate, [audio], metadata={"batch": str(i)}))


def final_labels(studio):
    return {sid: s.structured_labels for sid, s in studio.state.samples.items()}


def assert_no_conflicting_writes(studio):
    bodies = defaultdict(set)
    for w in studio.state.writes:
        if w.kind == "structured-labels":
            bodies[w.sample_id].add(json.dumps(w.body, sort_keys=True))
    assert all(len(b) == 1 for b in bodies.values())


@pytest.fixture
def reference(studio, hf, run_block):
    """Labels from a fault-free run; the project is then reset to unlabeled."""
    fill_project(studio)
    assert run_block("--win-size-ms", "1000").code == 0
    labels = final_labels(studio)
    fill_project(studio)
    studio.state.writes.clear()
    hf.state.count = 0
    return labels


class Every:
    """A Studio fault: answer every k-th matching request with ``answer``; counts what it injected."""

    def __init__(self, k, answer, method=None):
        self.k, self.answer, self.method, self.seen, self.injected = k, answer, method, 0, 0

    def __call__(self, method, path):
        if "/raw-data/" not in path or (self.method and method != self.method):
            return None
        self.seen += 1
        if self.seen % self.k:
            return None
        self.injected += 1
        return self.answer


class Burst:
    """A Studio that is overwhelmed for a while: during its first ``length`` sample requests, one
    that arrives while more than ``capacity`` are being answered gets 429 (an emulated rate limiter)."""

    def __init__(self, state, capacity, length, answer=(429, {}, {"success": False, "error": "Too Many Requests"})):
        self.state, self.capacity, self.length, self.answer = state, capacity, length, answer
        self.seen = self.injected = 0

    def __call__(self, method, path):
        if "/raw-data/" not in path:
            return None
        self.seen += 1
        if self.seen <= self.length and self.state.in_flight > self.capacity:
            self.injected += 1
            return self.answer
        return None


STUDIO_PROFILES = {
    "GET 429 with Retry-After": lambda: Every(5, (429, {"Retry-After": "1"}, {"success": False, "error": "slow down"}), "GET"),
    "GET 429 without Retry-After": lambda: Every(4, (429, {}, {"success": False, "error": "slow down"}), "GET"),
    "POST 500": lambda: Every(3, (500, {}, {"success": False, "error": "Internal server error"}), "POST"),
    "POST 503": lambda: Every(4, (503, {}, {"success": False, "error": "unavailable"}), "POST"),
    "dropped connections": lambda: Every(4, "drop"),
    "transient success:false": lambda: Every(4, (200, {}, {"success": False, "error": "Timeout, please try again"}), "POST"),
    "429 to a burst of concurrent requests": lambda state: Burst(state, 2, 30),
    "success:false too many requests in a burst": lambda state: Burst(
        state, 2, 30, (200, {}, {"success": False, "error": "Too many requests, slow down"})),
}


@pytest.mark.parametrize("profile", STUDIO_PROFILES)
def test_studio_fault_profile(studio, run_block, reference, profile):
    make = STUDIO_PROFILES[profile]
    fault = make(studio.state) if "burst" in profile else make()
    studio.state.fault = fault
    studio.state.latency_s = 0.02  # requests overlap, as they do against the real Studio
    result = run_block("--win-size-ms", "1000")
    assert result.code == 0, result.out + result.err
    assert fault.injected > 0
    assert final_labels(studio) == reference
    assert_no_conflicting_writes(studio)
    print(f"FAULT-PROFILE studio | {profile} | {N_SAMPLES} samples | {fault.injected} faults | 0 lost")


def test_studio_slow_responses(studio, run_block, reference):
    studio.state.latency_s = 0.1
    result = run_block("--win-size-ms", "1000")
    assert result.code == 0 and final_labels(studio) == reference


INFERENCE_PROFILES = {
    "loading for a while": {"loading_requests": 6},
    "429 every 3rd call": {"rate_limit_every": 3, "retry_after": "0"},
    "429 without Retry-After": {"rate_limit_every": 4, "retry_after": None},
    "500 every 3rd call": {"error_every": 3},
    "dropped connections": {"drop_every": 4},
    "everything at once": {"loading_requests": 3, "rate_limit_every": 5, "retry_after": "0", "error_every": 7,
                           "drop_every": 11, "latency_s": 0.02},
}


@pytest.mark.parametrize("profile", INFERENCE_PROFILES)
def test_inference_fault_profile(studio, hf, run_block, reference, profile):
    for key, value in INFERENCE_PROFILES[profile].items():
        setattr(hf.state, key, value)
    result = run_block("--win-size-ms", "1000")
    assert result.code == 0, result.out + result.err
    assert hf.state.faults > 0
    assert final_labels(studio) == reference
    assert_no_conflicting_writes(studio)
    print(f"FAULT-PROFILE inference | {profile} | {N_SAMPLES} samples | {hf.state.faults} faults | 0 lost")


def test_missing_sample_is_not_retried(studio, run_block):
    fill_project(studio, 2)
    result = run_block(ids=[700, 99999, 701])
    assert result.code == 1 and "not labeled: sample 99999" in result.out
    assert len([r for r in studio.state.requests if r.path.endswith("/raw-data/99999")]) == 1
    assert all(final_labels(studio).values())


def test_permanent_refusal_fails_one_sample_and_names_it(studio, run_block):
    fill_project(studio, 4)
    studio.state.fault = lambda method, path: (200, {}, {"success": False, "error": "Sample is locked"}) \
        if method == "POST" and "/702/" in path else None
    result = run_block()
    assert result.code == 1
    assert "not labeled: sample 702 (f2.wav): Studio refused" in result.out and "Sample is locked" in result.out
    assert all(labels for sid, labels in final_labels(studio).items() if sid != 702)


# --- inference failures: one sample's windows, a dead endpoint ------------------------------------------


def test_a_sample_failing_in_a_shared_call_fails_alone_and_the_others_get_their_labels(studio, run_block,
                                                                                       reference, monkeypatch):
    from labeler.classifiers.remote import RemoteClassifier
    from labeler.core import InferenceError

    # A constant 0.3 that no other sample's window holds: the endpoint fails exactly its windows,
    # as a classifier reports it (which windows failed, and the scores of the rest).
    studio.state.add(EmuSample(799, "bad.wav", 16000, [np.full(4 * 16000, 0.3, dtype=np.float32)]))
    calls = []
    classify = RemoteClassifier.classify

    def failing(self, windows):
        bad = [i for i, w in enumerate(windows) if float(np.min(w)) > 0.2]
        calls.append((len(windows), len(bad)))
        scores = classify(self, windows)
        if bad:
            raise InferenceError("inference failed after 6 attempts: HTTP 500: unknown error", bad, scores)
        return scores

    monkeypatch.setattr(RemoteClassifier, "classify", failing)
    result = run_block("--win-size-ms", "1000")
    assert result.code == 1, result.out + result.err
    labels = final_labels(studio)
    assert labels.pop(799) is None and labels == reference  # the others got exactly their fault-free labels
    assert not [w for w in studio.state.writes if w.sample_id == 799]
    # 36 windows classified once; the retry sent only the 4 failed windows of sample 799
    assert sum(n for n, _ in calls) == 8 * 4 + 4 + 4
    # the shared call, then the retry of 799's 4 windows alone (other samples' calls may come after it)
    assert [c for c in calls if c[1]][1:] == [(4, 4)]
    assert "not labeled: sample 799 (bad.wav): inference failed after 6 attempts: HTTP 500: unknown error " \
           "(4 of 4 windows)\n" in result.out  # counted once, per sample


def test_a_dead_endpoint_stops_the_run_instead_of_failing_every_window(studio, hf, run_block):
    from labeler.classifiers.remote import HTTP_MAX_ATTEMPTS

    fill_project(studio, 20)
    hf.state.error_after = 1  # the preflight passes, then every request answers 500
    result = run_block("--win-size-ms", "1000")  # 80 windows, 16 per call, 3 calls at once
    assert result.code == 1
    assert re.search(r"ERROR: .* failed \d+ windows in a row with no success in between \(last: inference "
                     r"failed after \d+ attempts: HTTP 500: unknown error\); stopped the run", result.err)
    assert "Traceback" not in result.err
    assert len(re.findall(r"not labeled: sample 7\d\d", result.out)) == 20
    assert studio.state.writes == []
    # only the calls in flight when it tripped were tried: no window after them, no retries
    assert hf.state.count <= 1 + 3 * 16 * HTTP_MAX_ATTEMPTS


@pytest.mark.parametrize("mode, note", [
    ((), "(finished samples are skipped)"),
    (("--force",), "(a rerun labels every sample again)"),
    (("--propose-actions", "3"), "(a rerun labels every sample again)"),
], ids=["apply", "--force", "preview"])
def test_a_stopped_run_promises_skipped_samples_only_where_a_rerun_skips_them(studio, hf, run_block, mode, note):
    fill_project(studio, 8)
    hf.state.error_after = 1  # the preflight passes, then the circuit breaker stops the run
    result = run_block("--win-size-ms", "1000", *mode)
    assert result.code == 1 and f"then rerun {note}" in result.err


# --- killed at random points, then rerun ------------------------------------------------------------


def run_cli(studio, hf, ids_file, *extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EI_", "HF_"))}
    env.update({"EI_PROJECT_API_KEY": STUDIO_KEY, "EI_API_ENDPOINT": studio.endpoint, "HF_TOKEN": HF_TOKEN,
                "HF_ENDPOINT": hf.hub})
    return subprocess.Popen([sys.executable, "-u", str(ROOT / "transform.py"), "--data-ids-file", str(ids_file),
                             "--audioset-labels", "Speech\\nMusic\\nDog", "--backend", "remote",
                             "--inference-url", hf.url, "--win-size-ms", "1000", "--concurrency", "2",
                             "--studio-concurrency", "32", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


WRITES = ("/metadata", "/structured-labels", "/disable", "/enable")


class KillAt:
    """A Studio hook that SIGKILLs the block as the ``nth`` sample to reach its ``write``-th write sends it.

    That write is dropped, so the kill lands exactly between two writes of one sample (or before a
    sample's first write); writes other samples already sent still land, as they would in Studio.
    """

    def __init__(self, proc, write, nth, only=None):
        self.proc, self.write, self.nth, self.only = proc, write, nth, only  # only: count these samples alone
        self.per_sample, self.reached, self.killed = defaultdict(int), 0, None

    def __call__(self, method, path):
        if self.killed or method != "POST" or not path.endswith(WRITES):
            return "drop" if self.killed else None
        sid = int(path.split("/")[-2])
        if self.only is not None and sid not in self.only:
            return None
        self.per_sample[sid] += 1
        if self.per_sample[sid] == self.write:
            self.reached += 1
            if self.reached == self.nth:
                self.proc.send_signal(signal.SIGKILL)
                self.killed = (sid, path.rsplit("/", 1)[1])
                return "drop"
        return None


# A fresh sample takes 2 writes (labels, done mark); a sample carrying an older done mark takes 3
# (labeling mark, labels, done mark). (write, nth): kill as the nth sample to get that far sends
# that write, so every gap is hit: before a sample's first write, between its labeling mark and its
# labels, between its labels and its done mark, early and late in the run, at full concurrency.
KILL_POINTS = {
    "fresh: before the first write": ("fresh", 1, 1),
    "fresh: between labels and done": ("fresh", 2, 1),
    "fresh: before a later sample's labels": ("fresh", 1, 5),
    "fresh: before the last done mark": ("fresh", 2, N_SAMPLES),
    "relabel: between labeling mark and labels": ("relabel", 2, 1),
    "relabel: between labels and done": ("relabel", 3, 1),
    "relabel: before a later sample's labeling mark": ("relabel", 1, 6),
    "relabel: before the last done mark": ("relabel", 3, N_SAMPLES),
}


def done_with(studio, win_ms):
    """Samples whose done mark is for settings with this window size."""
    return {sid for sid, s in studio.state.samples.items() if s.metadata.get("ast_status") == "done"
            and json.loads(s.metadata["ast_settings"])["win_ms"] == win_ms}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_run_then_rerun_matches_a_clean_run(studio, hf, run_block, reference, tmp_path, point):
    project, write, nth = KILL_POINTS[point]
    if project == "relabel":  # every sample carries a done mark from other settings
        assert run_block("--win-size-ms", "2000").code == 0
        assert done_with(studio, 2000) == set(studio.state.samples)
        studio.state.writes.clear()
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps(sorted(studio.state.samples)))
    proc = run_cli(studio, hf, ids)
    studio.state.fault = kill = KillAt(proc, write, nth)
    proc.wait(timeout=60)
    assert kill.killed and proc.returncode == -signal.SIGKILL, proc.stdout.read()
    studio.state.fault = None
    done_after_kill = done_with(studio, 1000)
    assert len(done_after_kill) < N_SAMPLES  # the kill really interrupted the run
    writes_before = len(studio.state.writes)

    rerun = run_cli(studio, hf, ids)
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out
    assert final_labels(studio) == reference
    print(f"FAULT-PROFILE kill | {point} (killed as sample {kill.killed[0]} sent {kill.killed[1]}), rerun | "
          f"{N_SAMPLES} samples | {N_SAMPLES - len(done_after_kill)} unfinished at kill | 0 lost")
    assert done_with(studio, 1000) == set(studio.state.samples)
    relabeled = {w.sample_id for w in studio.state.writes[writes_before:]}
    assert not relabeled & done_after_kill  # nothing finished before the kill is labeled twice
    assert_no_conflicting_writes(studio)


# --- killed while disabling or enabling, then rerun -------------------------------------------------------

# With --disable-other and labels "Dog", samples 1, 3 and 4 of fill_project(5) hold nothing of interest.
# Disabling one takes 4 writes (labeling mark with the intent, labels, disable, done mark); enabling one
# again (labels "Speech\nMusic\nDog") takes 4 too (labeling mark, labels, enable, done mark).
OTHER_ONLY = {701, 703, 704}
DISABLE_ARGS = ("--disable-other", "--audioset-labels", "Dog")
ENABLE_ARGS = ("--disable-other", "--audioset-labels", "Speech\\nMusic\\nDog")


def disabled_project_state(studio):
    return {sid: (s.is_disabled, s.structured_labels, s.metadata) for sid, s in studio.state.samples.items()}


def fault_free_states(studio, run_block):
    """The project after a fault-free disabling run, and after a fault-free enabling run on top of it."""
    fill_project(studio, 5)
    assert run_block("--win-size-ms", "1000", *DISABLE_ARGS).code == 0
    disabled = disabled_project_state(studio)
    assert {sid for sid, (off, _, _) in disabled.items() if off} == OTHER_ONLY
    assert run_block("--win-size-ms", "1000", *ENABLE_ARGS).code == 0
    enabled = disabled_project_state(studio)
    assert not any(off for off, _, _ in enabled.values())
    return disabled, enabled


@pytest.mark.parametrize("stage", ["disable", "enable"])
@pytest.mark.parametrize("write", [1, 2, 3, 4], ids=["labeling", "labels", "dis-or-enable", "done"])
def test_killed_while_disabling_or_enabling_then_rerun_matches_a_clean_run(studio, hf, run_block, tmp_path,
                                                                           stage, write):
    disabled, enabled = fault_free_states(studio, run_block)
    fill_project(studio, 5)
    if stage == "enable":  # the block disabled the other-only samples earlier
        assert run_block("--win-size-ms", "1000", *DISABLE_ARGS).code == 0
    args = DISABLE_ARGS if stage == "disable" else ENABLE_ARGS
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps(sorted(studio.state.samples)))
    proc = run_cli(studio, hf, ids, *args)
    studio.state.fault = kill = KillAt(proc, write, 1, only=OTHER_ONLY)
    proc.wait(timeout=60)
    assert kill.killed and proc.returncode == -signal.SIGKILL, proc.stdout.read()
    studio.state.fault = None

    out, _ = (rerun := run_cli(studio, hf, ids, *args)).communicate(timeout=120)
    assert rerun.returncode == 0, out
    assert disabled_project_state(studio) == (disabled if stage == "disable" else enabled)
    if stage == "disable":  # and a later run that finds something enables every one of them again
        assert run_block("--win-size-ms", "1000", *ENABLE_ARGS).code == 0
        assert disabled_project_state(studio) == enabled
    print(f"FAULT-PROFILE kill | --disable-other, {stage} (killed as sample {kill.killed[0]} sent "
          f"{kill.killed[1]}), rerun | 5 samples | 0 lost, disabled state as in a clean run")


# --- keys go only to their own hosts -------------------------------------------------------------------


def test_studio_key_is_not_sent_to_a_redirect_on_another_host(studio, run_block):
    fill_project(studio, 1)
    sample = studio.state.samples[700]
    with CaptureServer(wav_bytes(sample.channels[0], sample.frequency_hz), "audio/wav") as storage:
        studio.state.fault = lambda method, path: (302, {"Location": f"{storage.url}/bucket/700.wav"}, {}) \
            if path.endswith("/700/wav") else None
        result = run_block()
        assert result.code == 0, result.out + result.err
        assert storage.requests and not storage.saw_header("x-api-key")
    assert studio.state.samples[700].structured_labels


def test_hf_token_is_not_sent_to_a_redirect_and_the_run_stops(project, hf, run_block):
    with CaptureServer(b"[]", "application/json") as elsewhere:
        hf.state.redirect_to = f"{elsewhere.url}/steal"
        result = run_block()
        assert result.code == 2 and "redirects" in result.err
        assert elsewhere.requests == []
    assert project.state.writes == []


def test_hub_token_is_dropped_when_config_redirects_to_another_host(project, hf, run_block):
    from inference_emulator import LABELS

    config = json.dumps({"id2label": {str(i): n for i, n in enumerate(LABELS)}}).encode()
    with CaptureServer(config, "application/json") as cdn:
        hf.state.config_redirect_to = f"{cdn.url}/config.json"
        result = run_block(labels="Speech\\nDogg")
        assert result.code == 2 and "did you mean: 'Dog'" in result.err  # the label list was read
        assert cdn.requests and not cdn.saw_header("Authorization")


def test_keys_never_in_output_metadata_or_proposals(studio, hf, run_block, reference):
    hf.state.error_every = 3
    outputs = [run_block("--win-size-ms", "1000", "--force"), run_block("--propose-actions", "3")]
    written = json.dumps([w.body for w in studio.state.writes])
    for secret in (STUDIO_KEY, HF_TOKEN):
        assert all(secret not in r.out + r.err for r in outputs) and secret not in written


# --- stopped by SIGTERM (docker stop, a Studio cancel) or Ctrl-C -------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_with_a_summary_and_nothing_half_written(studio, hf, tmp_path, signum):
    fill_project(studio, 30)
    studio.state.latency_s = 0.05  # every Studio call takes a while: writes are in flight at the signal
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps(sorted(studio.state.samples)))
    proc = run_cli(studio, hf, ids, "--studio-concurrency", "4")
    deadline = time.monotonic() + 60
    while len(done_with(studio, 1000)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    signalled = time.monotonic()
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=30)
    stop_s = time.monotonic() - signalled
    assert proc.returncode == 1 and stop_s < 10, out
    assert "Traceback" not in out and "ERROR: interrupted" in out
    done = done_with(studio, 1000)
    assert 3 <= len(done) < 30  # stopped mid-way
    assert f"Done: {len(done)} of 30 samples labeled" in out
    for sid, sample in studio.state.samples.items():
        written = [w for w in studio.state.writes if w.sample_id == sid]
        assert sid in done or not written, f"sample {sid} is half-written"
        assert sid in done or re.search(rf"not labeled: sample {sid}\b", out), f"sample {sid} is not named"
    print(f"SIGNAL | {signal.Signals(signum).name} | stopped in {stop_s:.2f} s | {len(done)} of 30 done, "
          f"{30 - len(done)} named as not labeled | 0 half-written")


def test_signal_handlers_are_put_back_and_a_run_off_the_main_thread_sets_none(project, run_block):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert run_block().code == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    results = []
    thread = threading.Thread(target=lambda: results.append(run_block("--force")))
    thread.start()
    thread.join()
    assert results and results[0].code == 0


def signal_until_exit(proc, signum, every_s=0.002):
    """Send ``signum`` again and again until the process is gone: every point after now is hit."""
    while proc.poll() is None:
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            break
        time.sleep(every_s)
    return proc.wait(timeout=30)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("outcome", ["all labeled", "one failed"])
def test_a_signal_after_the_summary_changes_nothing(studio, hf, tmp_path, signum, outcome):
    fill_project(studio, 3)
    if outcome == "one failed":
        studio.state.samples[701].wav_override = b"not a wav file"
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps(sorted(studio.state.samples)))
    proc = run_cli(studio, hf, ids)
    lines = []
    for line in proc.stdout:  # the summary's first line is printed, and the run is decided
        lines.append(line)
        if line.startswith("Done:"):
            break
    code = signal_until_exit(proc, signum)
    out = "".join(lines) + proc.stdout.read()
    assert code == (0 if outcome == "all labeled" else 1), out
    assert "Traceback" not in out and "interrupted" not in out


def test_a_signal_with_inference_requests_in_flight_exits_within_docker_stops_grace(studio, hf, tmp_path):
    fill_project(studio, 8)
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps(sorted(studio.state.samples)))
    proc = run_cli(studio, hf, ids)
    deadline = time.monotonic() + 60
    while not studio.state.requests and time.monotonic() < deadline:  # Studio is read after the preflight
        time.sleep(0.01)
    hf.state.latency_s = 25.0  # from now on every inference request takes 25 s
    while hf.state.in_flight < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=40)
    finally:
        hf.state.latency_s = 0.0
    stop_s = time.monotonic() - signalled
    assert proc.returncode == 1 and stop_s < 10, f"exited {proc.returncode} after {stop_s:.1f} s\n{out}"
    assert "not labeled" in out and "Traceback" not in out
    print(f"SIGNAL | SIGTERM, inference requests of 25 s in flight | exited in {stop_s:.2f} s")


@pytest.mark.parametrize("stage", ["writing info.labels", "printing the summary"])
def test_a_signal_after_the_run_cannot_cut_into_saving_or_reporting(run_block, tmp_path, monkeypatch, stage):
    import labeler.folder
    import soundfile
    import transform

    root = tmp_path / "rec"
    root.mkdir()
    soundfile.write(root / "a.wav", tone(SPEECH_HZ, 2, 16000), 16000)
    soundfile.write(root / "b.wav", tone(MUSIC_HZ, 2, 16000), 16000)
    owner, name = (labeler.folder.FolderTarget, "finish") if stage == "writing info.labels" else \
        (transform, "print_summary")
    original = getattr(owner, name)

    def with_signal(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread at once
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, with_signal)
    result = run_block("--data-ids-file", "", "--input-dir", str(root),
                       env={"EI_PROJECT_API_KEY": None, "EI_API_ENDPOINT": None})
    assert (root / "info.labels").exists() and "Done: 2 of 2" in result.out
    assert "Traceback" not in result.err


def test_a_signal_while_a_setup_error_is_reported_never_escapes_main(monkeypatch):
    """Before the run a signal interrupts the setup, even while a setup error is being reported."""
    import transform

    original = transform.log

    def log(message, *args, **kwargs):
        original(message, *args, **kwargs)
        if str(message).startswith("ERROR:"):
            os.kill(os.getpid(), signal.SIGTERM)  # docker stop as the setup error is reported

    monkeypatch.setattr(transform, "log", log)
    try:
        code = transform.main(["--data-ids-file", "/nonexistent.json"], {})
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped transform.main (a traceback under exit_with)")
    assert code in (1, 2)

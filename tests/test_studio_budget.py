"""One Studio request budget: many samples in flight, never more requests than allowed, backing off
when Studio pushes back and growing back after; memory bounded by seconds of audio, not samples."""

import re
import threading
import time

import pytest

import labeler.core
import labeler.studio
from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, tone
from labeler import pipeline
from labeler.core import AdaptiveLimit
from studio_emulator import EmuSample
from test_faults import Burst

N_CLIPS = 60


def one_second_clips(studio, n=N_CLIPS):
    sounds = [tone(SPEECH_HZ, 1, 16000), tone(MUSIC_HZ, 1, 16000), tone(DOG_HZ, 1, 16000)]
    for i in range(n):
        studio.state.add(EmuSample(1000 + i, f"clip-{i}.wav", 16000, [sounds[i % 3]]))


def sample_requests(studio):
    return [r for r in studio.state.requests if "/raw-data/" in r.path]


# --- the limit itself ----------------------------------------------------------------------------------


def test_a_burst_of_refusals_to_requests_in_flight_together_halves_once():
    limit = AdaptiveLimit(32)
    tickets = [limit.acquire() for _ in range(20)]
    for ticket in tickets:
        limit.release()
        limit.throttled(ticket)
    assert limit.limit == 16 and limit.decreases == 1
    limit.throttled(limit.acquire())  # a request started after the decrease still counts
    assert limit.limit == 8 and limit.lowest == 8


def test_retry_after_holds_every_new_request():
    limit = AdaptiveLimit(4)
    started = time.monotonic()
    limit.throttled(limit.acquire(), retry_after_s=0.3)
    limit.release()
    limit.acquire()
    assert time.monotonic() - started >= 0.29


def test_writes_go_before_reads_of_new_samples():
    limit = AdaptiveLimit(1)
    limit.acquire()  # the only slot is taken
    order = []

    def take(kind, urgent):
        limit.acquire(urgent)
        order.append(kind)
        limit.release()

    read = threading.Thread(target=take, args=("read", False))
    read.start()
    time.sleep(0.05)  # the read waits first
    write = threading.Thread(target=take, args=("write", True))
    write.start()
    time.sleep(0.05)
    limit.release()
    read.join(5)
    write.join(5)
    assert order == ["write", "read"]


def test_changes_are_logged_at_most_every_10_s(capsys, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(labeler.core.time, "monotonic", lambda: clock[0])
    limit = AdaptiveLimit(32, "Studio")
    for _ in range(4):
        limit.throttled()
        clock[0] += 1
    clock[0] += 10
    limit.throttled()
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("Studio:")]
    assert lines == ["Studio: requests in flight 32 -> 16 (max 32; halved on rate limits, errors and timeouts, "
                     "grows back on successes)",
                     "Studio: requests in flight 16 -> 1 (max 32; halved on rate limits, errors and timeouts, "
                     "grows back on successes)"]
    assert limit.summary() == "Studio pushed back 5 times (requests in flight 32 -> as low as 1, now 1)"


# --- end to end ----------------------------------------------------------------------------------------


def test_many_short_clips_keep_many_studio_requests_in_flight_on_reused_connections(studio, run_block):
    one_second_clips(studio)
    studio.state.latency_s = 0.05
    result = run_block()
    assert result.code == 0, result.out + result.err
    assert all(s.structured_labels for s in studio.state.samples.values())
    # read, download, labels, done: the labeling pre-mark is skipped for samples never marked done
    assert len(sample_requests(studio)) == 4 * N_CLIPS
    assert 8 < studio.state.max_in_flight <= 32  # more than the old 4 + 4, never more than the budget
    assert len(studio.state.connections) <= 32 + 1  # pooled: one connection per slot, reused


def test_studio_concurrency_caps_requests_in_flight(studio, run_block):
    one_second_clips(studio, 24)
    studio.state.latency_s = 0.05
    result = run_block("--studio-concurrency", "3")
    assert result.code == 0, result.out + result.err
    assert studio.state.max_in_flight == 3


@pytest.mark.parametrize("value", ["0", "65", "many"])
def test_studio_concurrency_out_of_range_is_a_config_error(project, run_block, value):
    result = run_block("--studio-concurrency", value)
    assert result.code == 2 and "--studio-concurrency" in result.err
    assert "1..64" in result.err or "whole number" in result.err
    assert project.state.requests == []


def test_a_burst_of_429s_shrinks_the_budget_then_it_grows_back(studio, run_block):
    one_second_clips(studio)
    studio.state.latency_s = 0.03
    studio.state.fault = burst = Burst(studio.state, capacity=4, length=60)
    result = run_block()
    assert result.code == 0, result.out + result.err
    assert burst.injected > 0 and all(s.structured_labels for s in studio.state.samples.values())
    changes = re.findall(r"^Studio: requests in flight (\d+) -> (\d+)", result.out, re.MULTILINE)
    assert changes and int(changes[0][1]) < 32  # one line when it shrank (further changes wait 10 s)
    summary = re.search(r"Studio pushed back (\d+) times? \(requests in flight 32 -> as low as (\d+), now (\d+)\)",
                        result.out)
    assert summary, result.out
    pushed_back, lowest, now = map(int, summary.groups())
    assert 1 <= pushed_back < burst.injected  # refusals of requests in flight together count once
    assert lowest <= 8 and now > lowest  # shrank, then grew back once Studio accepted again
    assert studio.state.max_in_flight <= 32
    print(f"FAULT-PROFILE studio | 429 to requests beyond 4 in flight, first 60 calls | {N_CLIPS} samples | "
          f"{burst.injected} faults | 0 lost | {summary.group(0)} | log: {changes}")


# --- memory: bounded by seconds of audio ---------------------------------------------------------------


def test_audio_held_is_bounded_by_seconds_and_a_long_sample_still_passes(studio, run_block, monkeypatch):
    budgets = []

    class Recorded(pipeline.AudioBudget):
        def __init__(self, max_s):
            super().__init__(max_s)
            budgets.append(self)

    monkeypatch.setattr(pipeline, "AudioBudget", Recorded)
    monkeypatch.setattr(pipeline, "PREFETCH_AUDIO_S", 5.0)
    one_second_clips(studio, 20)
    studio.state.add(EmuSample(2000, "long.wav", 16000, [tone(MUSIC_HZ, 12, 16000)]))  # longer than the cap
    studio.state.latency_s = 0.02
    result = run_block()
    assert result.code == 0, result.out + result.err
    assert all(s.structured_labels for s in studio.state.samples.values())
    # never more than the cap, except the long sample alone
    assert budgets[0].peak_s <= 12.0 and budgets[0].held_s == 0.0


def test_studio_timeouts_are_retried_and_shrink_the_budget(studio, run_block, monkeypatch):
    from labeler import studio as studio_module

    monkeypatch.setattr(studio_module, "STUDIO_TIMEOUT_S", (5.0, 0.3))
    one_second_clips(studio, 12)
    slow = {"seen": 0, "injected": 0}

    def every_4th_read_is_slow(method, path):
        if method == "GET" and "/raw-data/" in path:
            slow["seen"] += 1
            if slow["seen"] % 4 == 0:
                slow["injected"] += 1
                time.sleep(0.6)  # past the read timeout; the answer comes too late
        return None

    studio.state.fault = every_4th_read_is_slow
    result = run_block()
    assert result.code == 0, result.out + result.err
    assert slow["injected"] > 0 and all(s.structured_labels for s in studio.state.samples.values())
    assert re.search(r"Studio pushed back \d+ times?", result.out)
    print(f"FAULT-PROFILE studio | every 4th GET answers after the read timeout | 12 samples | "
          f"{slow['injected']} faults | 0 lost")


def test_a_fatal_studio_error_stops_reading_new_samples(studio, run_block):
    one_second_clips(studio, 200)
    studio.state.latency_s = 0.02
    reads = {"n": 0}

    def key_revoked_after_a_few_writes(method, path):
        if method == "POST" and "/raw-data/" in path:
            reads["n"] += 1
            if reads["n"] > 3:
                return 401, {}, {"success": False, "error": "Invalid API key"}
        return None

    studio.state.fault = key_revoked_after_a_few_writes
    result = run_block()
    # 1, not 2: three writes went through before the key was revoked, so the project has changed
    assert result.code == 1 and "rejected EI_PROJECT_API_KEY" in result.err
    sample_reads = [r for r in studio.state.requests if r.method == "GET" and re.search(r"/raw-data/\d+$", r.path)]
    assert len(sample_reads) < 200  # stopped well before reading every sample
    # one error line, no traceback through the block (the emulator's own threads may print theirs
    # when a connection closes under them)
    assert len([x for x in result.err.splitlines() if x.startswith("ERROR:")]) == 1
    assert "labeler/" not in result.out + result.err and "transform.py" not in result.out + result.err


def rate_limit_the_first_read(studio, retry_after: str) -> list[float]:
    """One clip whose first read answers 429 with ``retry_after``; returns when each read arrived."""
    one_second_clips(studio, 1)
    seen = []

    def first_read_is_rate_limited(method, path):
        if "/raw-data/" not in path:
            return None
        seen.append(time.monotonic())
        return (429, {"Retry-After": retry_after}, {"success": False, "error": "slow"}) if len(seen) == 1 else None

    studio.state.fault = first_read_is_rate_limited
    return seen


def test_studio_retry_after_is_honoured(studio, run_block):
    seen = rate_limit_the_first_read(studio, "0.5")
    result = run_block()
    assert result.code == 0, result.out + result.err
    assert seen[1] - seen[0] >= 0.45  # the test backoff is 0.02 s: only Retry-After explains the wait
    assert "Studio pushed back 1 time (requests in flight 32 -> as low as 16" in result.out


# --- Retry-After: obeyed up to a cap, never a reason to stall or crash ----------------------------------


@pytest.mark.parametrize("header, expected", [
    ("2.5", 2.5), ("86400", 86400.0), ("1e300", 1e300), ("-3", 0.0),  # finite: the caller caps it
    ("inf", 7.0), ("-inf", 7.0), ("nan", 7.0), ("Wed, 21 Oct 2026 07:28:00 GMT", 7.0),  # ignored: the default
])
def test_retry_after_ignores_values_that_are_not_finite_numbers(header, expected):
    assert labeler.core.retry_after_s({"Retry-After": header}, 7.0) == expected


def test_studio_holds_at_most_the_cap():
    from labeler.studio import STUDIO_MAX_WAIT_S, studio_hold_s

    assert STUDIO_MAX_WAIT_S == 60.0
    assert studio_hold_s(86400.0) == studio_hold_s(1e300) == 60.0
    assert studio_hold_s(2.5) == 2.5 and studio_hold_s(None) is None


def run_with_one_rate_limited_read(studio, run_block, monkeypatch, retry_after, cap_s=0.3):
    """Label one clip whose first read answers 429 with ``retry_after``, the Studio cap patched to
    ``cap_s``; returns the run, the waits studio.py slept and the seconds between the two reads."""
    import types

    import labeler.studio

    monkeypatch.setattr(labeler.studio, "STUDIO_MAX_WAIT_S", cap_s)
    slept = []
    monkeypatch.setattr(labeler.studio, "time", types.SimpleNamespace(
        sleep=lambda s: (slept.append(s), time.sleep(min(s, 1.0))), monotonic=time.monotonic))
    seen = rate_limit_the_first_read(studio, retry_after)
    results = []
    # A thread, so a run that holds Studio for the whole Retry-After fails this test instead of hanging it.
    runner = threading.Thread(target=lambda: results.append(run_block()), daemon=True)
    runner.start()
    runner.join(timeout=30)
    assert results, f"the run still waits on Retry-After: {retry_after} after 30 s"
    return results[0], slept, seen[1] - seen[0]


def test_a_retry_after_of_a_day_waits_the_cap_and_says_so(studio, run_block, monkeypatch):
    result, slept, gap_s = run_with_one_rate_limited_read(studio, run_block, monkeypatch, "86400")
    assert result.code == 0, result.out + result.err
    assert slept == [0.3]  # the request's own wait
    assert 0.28 <= gap_s < 5  # and the hold on every request (the budget's), both capped
    assert "Studio: waiting 0.3 s before retrying reading sample 1000 (Retry-After 86400 s; at most 0.3 s" \
        in result.out


@pytest.mark.parametrize("retry_after", ["inf", "1e300", "nan"])
def test_a_retry_after_that_overflows_is_capped_or_ignored(studio, run_block, monkeypatch, retry_after):
    result, slept, _ = run_with_one_rate_limited_read(studio, run_block, monkeypatch, retry_after)
    assert result.code == 0, result.out + result.err  # no "timestamp out of range" for later samples
    assert "OverflowError" not in result.out + result.err
    assert slept == [0.3] if retry_after == "1e300" else slept[0] < 0.3  # not finite: the backoff


def test_a_long_backoff_is_logged(monkeypatch):
    from labeler.studio import _logged_wait_s, _Retry

    logged = []
    monkeypatch.setattr(labeler.studio, "log", logged.append)
    monkeypatch.setattr(labeler.core, "HTTP_BACKOFF_BASE_S", 0.5)
    assert _logged_wait_s(_Retry("HTTP 503", True), None, 5, "reading sample 7") == 16.0
    assert _logged_wait_s(_Retry("HTTP 503", True), None, 2, "reading sample 7") == 2.0
    assert logged == ["Studio: waiting 16 s before retrying reading sample 7: HTTP 503"]

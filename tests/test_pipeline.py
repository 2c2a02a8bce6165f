"""The pipeline on its own, with a target in memory and fake classifiers: which windows are retried
after a partial failure, what stops a run, unexpected errors, and progress inside a long sample.

A fake window's class is its value (every sample below is constant, or constant per window), so
the label each sample must get is known, and a classifier can fail exactly the windows it chooses.
"""

import dataclasses
import re
import threading
import time

import numpy as np
import pytest

import labeler.pipeline
from labeler.core import InferenceError, LabelSpec, LoadedSample, SampleInfo, Settings
from labeler.models import AST_INPUT, ModelInput
from labeler.pipeline import Labeler, RunStopped

RATE_HZ = 16000
CLASSES = ["Speech", "Music", "Dog"]
SETTINGS = Settings(tuple(LabelSpec(name, name.lower()) for name in CLASSES), "other", 1000, 1000, 0.5, "fake")
BROKEN = 0.75  # a sample of this value is one the fake backends fail on (scored as Music otherwise)


def sample(sample_id: int, value: float, seconds: float = 3.0, step: float = 0.0) -> LoadedSample:
    """``seconds`` of ``value``; with ``step``, each 1 s window is ``step`` higher than the one before."""
    audio = np.full(int(seconds * RATE_HZ), value, dtype=np.float32) + \
        np.repeat(np.arange(int(seconds)) * step, RATE_HZ).astype(np.float32)
    return LoadedSample(SampleInfo(sample_id, f"s{sample_id}.wav", RATE_HZ, len(audio), 0, {}), audio)


class Memory:
    """A target holding samples in memory and the labels written to it."""

    verb = "stored"
    rerun_skips_finished = False

    def __init__(self, samples, parallel: int = 2, write=None):
        self.samples = {s.info.sample_id: s for s in samples}
        self.parallel, self.written, self._write = parallel, {}, write

    def load(self, key, admit):
        admit(self.samples[key].info)
        return self.samples[key]

    def write(self, info, labeling):
        if self._write:
            self._write(info)
        self.written[info.sample_id] = sorted({s.label for s in labeling.segments})

    def finish(self):
        pass


class Fake:
    """Scores a window 0.9 for class round(value) (0.05 elsewhere); ``fail(call, values)`` gives the
    indices of the windows of a call that fail (reported as an InferenceError), or raises."""

    name = "the fake backend"
    class_names = CLASSES
    score_function, model_input = "sigmoid", AST_INPUT

    def __init__(self, fail=lambda call, values: [], preferred_batch: int = 12, parallel_groups: int = 1):
        self.fail, self.preferred_batch, self.parallel_groups = fail, preferred_batch, parallel_groups
        self.calls: list[list[float]] = []  # the value of each window of each call
        self.cancelled = False

    def classify(self, windows):
        values = [float(w[0]) for w in windows]
        self.calls.append(values)
        scores = np.full((len(windows), len(CLASSES)), 0.05, dtype=np.float32)
        for row, value in zip(scores, values):
            row[min(round(value), len(CLASSES) - 1)] = 0.9
        failed = list(self.fail(len(self.calls), values))
        if failed:
            raise InferenceError("HTTP 500: boom", failed=failed, scores=scores)
        return scores

    def cancel(self):
        self.cancelled = True

    def close(self):
        pass


def broken_windows(call, values):
    return [i for i, v in enumerate(values) if v == BROKEN]


def label_run(samples, classifier, **target):
    target = Memory(samples, **target)
    return Labeler([s.info.sample_id for s in samples], target, classifier, SETTINGS), target


def by_id(outcomes):
    return {o.sample_id: o for o in outcomes}


# --- a failed call: the others are labeled from its scores, the failed windows retried per sample -------


def test_a_failing_sample_fails_by_name_and_the_others_are_labeled_from_the_same_call(capsys):
    samples = [sample(1, 0.0), sample(2, BROKEN), sample(3, 1.0), sample(4, 2.0)]
    labeler_, target = label_run(samples, fake := Fake(broken_windows))
    outcomes = by_id(labeler_.run())
    assert target.written == {1: ["speech"], 3: ["music"], 4: ["dog"]}
    assert {i: o.ok for i, o in outcomes.items()} == {1: True, 2: False, 3: True, 4: True}
    assert outcomes[2].name == "s2.wav" and outcomes[2].detail == "HTTP 500: boom (3 of 3 windows)"
    assert "sample 2 (s2.wav): FAILED: HTTP 500: boom" in capsys.readouterr().out
    # one call for the group's 12 windows (in the order the samples loaded), then one with only the failed 3
    assert len(fake.calls) == 2 and sorted(fake.calls[0]) == [0.0] * 3 + [BROKEN] * 3 + [1.0] * 3 + [2.0] * 3
    assert fake.calls[1] == [BROKEN] * 3


def test_only_the_failed_windows_are_retried_and_the_sample_is_labeled():
    samples = [sample(1, 0.0), sample(2, 1.0, seconds=5.0, step=0.01)]  # sample 2: windows of 1.00 .. 1.04
    second_and_fourth = {np.float32(1.01), np.float32(1.03)}
    labeler_, target = label_run(samples, fake := Fake(
        lambda call, values: [i for i, v in enumerate(values) if call == 1 and v in second_and_fourth]))
    assert all(o.ok for o in labeler_.run())
    assert target.written == {1: ["speech"], 2: ["music"]}
    assert len(fake.calls) == 2 and fake.calls[1] == [np.float32(1.01), np.float32(1.03)]


def test_scores_may_come_only_for_the_windows_that_succeeded():
    class Compact(Fake):
        def classify(self, windows):
            try:
                return super().classify(windows)
            except InferenceError as exc:
                ok = [i for i in range(len(windows)) if i not in exc.failed]
                raise InferenceError(str(exc), failed=exc.failed, scores=exc.scores[ok]) from None

    samples = [sample(1, 2.0), sample(2, BROKEN), sample(3, 1.0)]
    labeler_, target = label_run(samples, fake := Compact(broken_windows))
    assert {i: o.ok for i, o in by_id(labeler_.run()).items()} == {1: True, 2: False, 3: True}
    assert target.written == {1: ["dog"], 3: ["music"]}
    assert len(fake.calls) == 2 and fake.calls[1] == [BROKEN] * 3  # the rows were placed: only 2 was retried


# --- the circuit breaker ---------------------------------------------------------------------------------


def test_a_dead_backend_stops_the_run_and_names_itself():
    samples = [sample(i, 0.0) for i in range(1, 21)]
    labeler_, target = label_run(samples, fake := Fake(lambda call, values: range(len(values)), preferred_batch=4))
    with pytest.raises(RunStopped) as stop:
        labeler_.run()
    # the first group's call (2 samples, 6 windows), then its samples' retries (seen as one call), then nothing
    assert str(stop.value.cause).startswith("the fake backend failed 12 windows in a row with no success in between "
                                            "(last: HTTP 500: boom)")
    assert len(fake.calls) == 3
    assert target.written == {} and len(stop.value.outcomes) == 20 and not any(o.ok for o in stop.value.outcomes)
    assert fake.cancelled  # work queued inside the backend is given up, not retried to the end


def test_a_whole_call_failing_as_reported_by_the_backend_stops_the_run_at_once():
    samples = [sample(i, 0.0) for i in range(1, 21)]
    labeler_, _ = label_run(samples, fake := Fake(lambda call, values: range(len(values)), preferred_batch=9))
    with pytest.raises(RunStopped, match="failed 9 windows in a row"):
        labeler_.run()
    assert len(fake.calls) == 1  # 9 windows, each failed after the backend's own retries: no retry, no next call


def test_failures_between_successes_never_stop_the_run():
    # every 3rd call of a group's 6 windows fails whole: the successes in between reset the count
    samples = [sample(i, 1.0) for i in range(1, 31)]
    fake = Fake(lambda call, values: range(len(values)) if call % 3 == 0 and len(values) == 6 else [],
                preferred_batch=6)
    labeler_, target = label_run(samples, fake)
    assert all(o.ok for o in labeler_.run())  # the failed groups' samples were retried one by one
    assert len(target.written) == 30 and len(fake.calls) > 15


# --- what a stop message promises a rerun -------------------------------------------------------------

RERUN_NOTES = [(True, "(finished samples are skipped)"), (False, "(a rerun labels every sample again)")]


@pytest.mark.parametrize("skips, note", RERUN_NOTES, ids=["Studio apply", "folder, preview or --force"])
def test_the_circuit_breaker_says_what_a_rerun_does_with_finished_samples(skips, note):
    samples = [sample(i, 0.0) for i in range(1, 21)]
    labeler_, target = label_run(samples, Fake(lambda call, values: range(len(values)), preferred_batch=4))
    target.rerun_skips_finished = skips
    with pytest.raises(RunStopped) as stop:
        labeler_.run()
    assert str(stop.value.cause).endswith(f"then rerun {note}")


@pytest.mark.parametrize("skips, note", RERUN_NOTES, ids=["Studio apply", "folder, preview or --force"])
def test_an_interrupt_says_what_a_rerun_does_with_finished_samples(skips, note):
    stop = threading.Event()
    stop.set()  # the signal came before the first sample
    samples = [sample(i, 0.0) for i in range(1, 5)]
    target = Memory(samples)
    target.rerun_skips_finished = skips
    with pytest.raises(RunStopped) as stopped:
        Labeler([s.info.sample_id for s in samples], target, Fake(), SETTINGS, [], stop).run()
    assert str(stopped.value.cause).endswith(f"rerun to label the samples named below {note}")


# --- unexpected errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("preferred_batch", [6, 9], ids=["retried", "whole call failed"])
@pytest.mark.parametrize("error, detail", [
    (RuntimeError("CUDA error: an illegal memory access\nwas encountered"),
     "inference failed: RuntimeError: CUDA error: an illegal memory access was encountered"),
    (MemoryError(), "inference failed: out of memory (MemoryError)"),
])
def test_an_unexpected_error_in_inference_fails_its_samples_by_name_and_the_run_goes_on(error, detail,
                                                                                        preferred_batch):
    def fail(call, values):
        if BROKEN in values:
            raise error
        return []

    samples = [sample(1, 0.0), sample(2, BROKEN), sample(3, 1.0), sample(4, 2.0), sample(5, 1.0), sample(6, 1.0)]
    labeler_, target = label_run(samples, Fake(fail, preferred_batch=preferred_batch))
    outcomes = by_id(labeler_.run())  # no RunStopped, no traceback
    assert outcomes[2].detail == f"{detail} (3 of 3 windows)"
    if preferred_batch == 6:  # groups of 2 samples: each sample of the failed group is retried alone
        assert target.written == {1: ["speech"], 3: ["music"], 4: ["dog"], 5: ["music"], 6: ["music"]}
    else:  # a whole call of 9 windows failed: its 3 samples fail by name, the other group is labeled
        assert len(target.written) == 3
        assert all(o.detail == outcomes[2].detail for o in outcomes.values() if not o.ok)


def test_an_error_that_every_call_raises_stops_the_run():
    def fail(call, values):
        raise RuntimeError("no kernel image is available for execution on the device")

    labeler_, _ = label_run([sample(i, 0.0) for i in range(1, 11)], Fake(fail, preferred_batch=6))
    with pytest.raises(RunStopped, match="the fake backend failed 12 windows in a row .*no kernel image"):
        labeler_.run()


@pytest.mark.parametrize("where", ["loading", "labeling", "write"])
def test_out_of_memory_anywhere_names_the_sample_and_the_others_go_on(where, monkeypatch):
    samples = [sample(1, 0.0), sample(2, 2.0, seconds=2.0), sample(3, 1.0)]  # sample 2: the only 2 s one

    def oom_for_sample_2(values_count):
        if values_count == 2 * RATE_HZ:
            raise MemoryError("cannot allocate 1 GiB")

    target = Memory(samples, write=(lambda info: oom_for_sample_2(info.values_count)) if where == "write" else None)
    if where == "loading":
        load = target.load
        monkeypatch.setattr(target, "load", lambda key, admit: oom_for_sample_2(load(key, admit).info.values_count)
                            or load(key, admit))
    if where == "labeling":
        label_sample = labeler.pipeline.label_sample
        monkeypatch.setattr(labeler.pipeline, "label_sample",
                            lambda windows, scores, count, *rest: oom_for_sample_2(count)
                            or label_sample(windows, scores, count, *rest))
    outcomes = by_id(Labeler([1, 2, 3], target, Fake(), SETTINGS).run())
    assert target.written == {1: ["speech"], 3: ["music"]}
    assert outcomes[2].detail == f"{where} failed: out of memory (MemoryError: cannot allocate 1 GiB)"


# --- progress ---------------------------------------------------------------------------------------------


def test_progress_reports_windows_and_an_eta_while_one_long_sample_is_classified(monkeypatch, capsys):
    monkeypatch.setattr(labeler.pipeline, "PROGRESS_EVERY_S", 0.0)
    labeler_, _ = label_run([sample(1, 1.0, seconds=60.0)], fake := Fake(preferred_batch=4))
    assert all(o.ok for o in labeler_.run())
    assert [len(call) for call in fake.calls] == [16, 16, 16, 12]  # chunks of 4 backend batches
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("progress:")]
    assert len(lines) == 4, lines  # one after each chunk, all before the sample is done
    assert all(re.fullmatch(r"progress: 0/1 samples, [\d.]+ windows/s, ETA \d+m\d\ds", line) for line in lines)


def test_progress_eta_counts_the_windows_left():
    progress = labeler.pipeline.Progress(4, every_s=3600.0)
    for windows in (10, 30):  # two samples loaded; the two not loaded yet count as the average (20)
        progress.planned(windows)
    progress.classified(20)  # all 10 of the first sample, 10 of the second
    assert progress._line(elapsed_s=10.0) == "progress: 0/4 samples, 2.0 windows/s, ETA 0m30s"  # 20 + 2 x 20 left
    progress.finished(planned=True, abandoned=20)  # the second sample fails: its other 20 are never classified
    progress.finished(planned=False)  # a third fails before it is loaded
    assert progress._line(elapsed_s=10.0) == "progress: 2/4 samples, 2.0 windows/s, ETA 0m10s"  # 1 x 20 left


def test_one_sample_the_backend_cannot_score_fails_alone_however_many_windows_it_has():
    samples = [sample(1, 0.0), sample(2, BROKEN, seconds=20.0), sample(3, 1.0), sample(4, 2.0)]
    labeler_, target = label_run(samples, Fake(broken_windows, preferred_batch=4))
    outcomes = by_id(labeler_.run())  # 20 failed windows in a row, but all of one sample
    assert {i: o.ok for i, o in outcomes.items()} == {1: True, 2: False, 3: True, 4: True}
    assert set(target.written) == {1, 3, 4}


def test_scores_that_are_not_finite_fail_their_sample_by_name():
    class NaNs(Fake):
        def classify(self, windows):
            scores = super().classify(windows)
            scores[[float(w[0]) == BROKEN for w in windows]] = np.nan
            return scores

    labeler_, target = label_run([sample(1, 0.0), sample(2, BROKEN), sample(3, 1.0)], NaNs())
    outcomes = by_id(labeler_.run())
    assert 2 not in target.written and "not finite" in outcomes[2].detail
    assert outcomes[1].ok and outcomes[3].ok and set(target.written) == {1, 3}


def test_non_finite_scores_in_a_partly_failed_call_fail_their_sample():

    class PartlyFailedWithNaN(Fake):
        def classify(self, windows):
            not_finite = [float(w[0]) == 2.0 for w in windows]  # sample 3's windows
            try:
                scores = super().classify(windows)
            except InferenceError as exc:  # sample 2's windows fail in the same call: rows come inside the error
                exc.scores[not_finite] = np.nan
                raise
            scores[not_finite] = np.nan
            return scores

    labeler_, target = label_run([sample(1, 0.0), sample(2, BROKEN), sample(3, 2.0)],
                                 PartlyFailedWithNaN(broken_windows))
    outcomes = by_id(labeler_.run())
    assert 3 not in target.written, f"sample 3 was written from NaN scores as {target.written.get(3)}"
    assert not outcomes[3].ok and "not finite" in outcomes[3].detail


def test_after_a_signal_observers_see_no_sample_once_finished():
    """A classify thread still finishing its chunk after a signal shows observers nothing more."""
    stop = threading.Event()
    events: list[str] = []

    class SlowOnce(Fake):
        def classify(self, windows):
            stop.set()  # the signal arrives while this call runs
            time.sleep(0.5)
            return super().classify(windows)

    class Recorder:
        def sample_labeled(self, sample_, windows, scores, labeling):
            events.append(f"labeled {sample_.info.sample_id}")

        def finish(self):
            events.append("finish")

    samples = [sample(i, 0.0) for i in range(1, 5)]
    target = Memory(samples)
    labeler_ = Labeler([s.info.sample_id for s in samples], target, SlowOnce(), SETTINGS, [Recorder()], stop)
    with pytest.raises(RunStopped):
        labeler_.run()
    time.sleep(1.0)  # the classify thread finishes its chunk after run() has returned
    assert "finish" in events
    after = events[events.index("finish") + 1:]
    assert after == [], f"observer called after finish: {after}"


@pytest.mark.parametrize("capped, says", [(False, "the model only hears its first 1.285 s"),
                                          (True, "the block sends the model its first 30 s")])
def test_a_whole_sample_longer_than_what_the_model_hears_is_warned_about(capsys, capped, says):
    whole = dataclasses.replace(SETTINGS, win_size_ms=0, win_stride_ms=1000)
    heard = ModelInput(480_000, capped=True) if capped else ModelInput(20_560, capped=False)  # 30 s, 1.285 s
    labeler.pipeline.plan_sample(0, sample(1, 0.0, seconds=heard.heard_ms // 1000 + 1), whole, 0.0, heard)
    assert f"longer than {heard.heard_ms / 1000:g} s; with --win-size-ms 0 {says}" in capsys.readouterr().out
    labeler.pipeline.plan_sample(0, sample(2, 0.0, seconds=1), whole, 0.0, heard)
    assert "WARNING" not in capsys.readouterr().out  # exactly what the model hears: nothing is lost

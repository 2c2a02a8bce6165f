"""The pipeline: samples loaded ahead of inference -> windows of several samples classified in
full batches -> labels handed to writer threads, with progress lines and one outcome per sample.
A fatal error (bad credentials, a backend that never comes up, a backend that fails window after
window) stops the run; any other failure, expected or not, costs only its own sample. When a
group's call fails for some windows, the other samples are labeled from the rest of the scores and
each affected sample retries only its failed windows, so a failure is pinned on its own sample.
SIGTERM or Ctrl-C (``SignalStop`` sets an event; the main thread notices it where it waits) takes
no new sample, gives the writes in flight a few seconds to finish, and names every sample not
labeled.

As many samples are loaded and written at once as the target allows (``Target.parallel``; for
Studio its request budget, which bounds the requests themselves), so thousands of short clips
keep Studio busy. Memory is bounded by audio, not by sample count: the seconds of audio held
between download and labeling are capped (``PREFETCH_AUDIO_S``), and samples are taken in the
order their downloads finish, so a long sample never blocks the short ones behind it.

May import: ``core``, ``audio``, ``timeline``, ``models``, ``classifiers`` (the protocol). Targets (Studio, a
folder) and observers (report, plots) arrive as objects; this module never builds them.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..audio import window_audio
from ..classifiers import Classifier
from ..core import (AlreadyLabeled, BlockError, ConfigError, FatalInferenceError, InferenceError, LoadedSample,
                   SampleError, SampleInfo, SampleOutcome, Settings, log, plural)
from ..models import ModelInput
from ..timeline import Labeling, Window, class_index, label_sample, plan_windows, step_ix
from .parts import (STOPPED, AudioBudget, CircuitBreaker, Progress, SignalStop, Tally, Writer, audio_seconds,
                    call_failures, describe, one_line)

# Seconds of audio held between download and labeling (16 kHz float32: 64 KB per second, so
# 38 MB); one sample longer than this is still loaded, alone.
PREFETCH_AUDIO_S = 600.0
LOOKAHEAD_PER_LOADER = 2  # ids handed to the loaders ahead of the one being classified
MAX_GROUP_SAMPLES = 64  # samples whose windows share one inference call (short samples fill batches)
# A partial group goes to inference after this long without another sample arriving: its audio
# may be what other downloads wait for, and the backend would idle anyway.
GROUP_WAIT_S = 0.25
PROGRESS_EVERY_S = 10.0
# A long sample is classified in chunks of this many backend batches: big enough to keep the
# backend busy, small enough that progress is reported between them and few window views are held.
CHUNK_BATCHES = 4
# This many windows failing in a row (each after the backend's own retries), with no success in
# between and over more than one sample, means the backend is down: stop instead of failing every
# remaining sample slowly (a dead endpoint otherwise costs every window its full retries).
BREAKER_WINDOWS = 8
# On Ctrl-C or SIGTERM, writes already started get this long to finish (docker stop kills at 10 s).
WRITE_GRACE_S = 8.0
# How often the main thread, waiting on loads, inference or writes, looks at the stop signal.
SIGNAL_POLL_S = 0.1


class Target(Protocol):
    """Where samples come from and where their labels go: a Studio project or a folder of files."""

    verb: str  # how the log says labels were stored
    parallel: int  # samples loaded, and samples written, at once
    rerun_skips_finished: bool  # a rerun skips the samples this run finished (the stop messages say which)

    def load(self, key: int, admit: Callable[[SampleInfo], None]) -> LoadedSample:
        """``admit(info)`` is called once the length is known, before the audio is fetched; it may wait."""
        ...

    def write(self, info: SampleInfo, labeling: Labeling) -> str | None:
        """Store the labels; may return a note for the sample's log line."""
        ...

    def finish(self) -> None: ...


class Observer(Protocol):
    """Sees every labeled sample (reports, plots); never changes what is written."""

    def sample_labeled(self, sample: LoadedSample, windows: Sequence[Window], scores: np.ndarray,
                       labeling: Labeling) -> None: ...

    def finish(self) -> None: ...


@dataclass(frozen=True)
class PlannedSample:
    """A loaded sample with its windows, waiting for inference."""

    position: int
    sample: LoadedSample
    windows: list[Window]
    started: float


def plan_sample(position: int, sample: LoadedSample, settings: Settings, started: float,
                heard: ModelInput | None = None) -> PlannedSample:
    """The sample's windows; ``heard`` (how much of a window the model hears) is for the warning."""
    info = sample.info
    if settings.win_size_ms == 0 and heard and info.values_count / info.frequency_hz * 1000 > heard.heard_ms:
        log(f"WARNING: sample {info.sample_id} is longer than {heard.heard_ms / 1000:g} s; with "
            f"--win-size-ms 0 {heard.who_cuts()} its first {heard.heard_ms / 1000:g} s")
    windows = plan_windows(info.values_count, info.frequency_hz, settings.win_size_ms, settings.win_stride_ms)
    return PlannedSample(position, sample, windows, started)


class Interrupted(BlockError):
    """Ctrl-C or SIGTERM: the run stopped taking samples."""


class Labeler:
    """The pipeline: prefetched samples -> batched inference across samples -> Studio writer."""

    def __init__(self, ids: Sequence[int], target: Target, classifier: Classifier, settings: Settings,
                 observers: Sequence[Observer] = (), stop: threading.Event | None = None):
        self.ids, self.target, self.classifier, self.settings = ids, target, classifier, settings
        self.observers = observers
        # Set by a signal handler (SIGTERM, Ctrl-C): the handler only sets it, so a signal can never
        # cut into the run's own bookkeeping; the main thread notices it while it waits.
        self.stop = stop or threading.Event()
        self.class_index = class_index(classifier.class_names)
        self.outcomes: list[SampleOutcome] = []
        self.fatal: BlockError | None = None
        self.interrupted = False
        self.progress = Progress(len(ids), PROGRESS_EVERY_S)
        self.audio = AudioBudget(PREFETCH_AUDIO_S)
        self.breaker = CircuitBreaker(BREAKER_WINDOWS)
        self.writer = Writer(target, self.progress)
        self._names: dict[int, str] = {}
        # Observers (report, plots) see no sample after their finish(), which waits for calls in progress.
        self._observing = threading.Condition()
        self._observers_open, self._observer_calls = True, 0

    def run(self) -> list[SampleOutcome]:
        """Label every sample; per-sample failures are recorded, a fatal error or Ctrl-C stops the run."""
        try:
            self._classify_all()
        except KeyboardInterrupt:
            self._interrupt()
        except Exception as exc:  # noqa: BLE001 - a bug here still ends in a summary, not a traceback
            self._stop(BlockError(f"internal error, please report it: {describe(exc)}"))
        finally:
            self.audio.close()
            self._close_writer()
            self.target.finish()
            with self._observing:  # a classify thread still finishing its chunk shows observers nothing more
                self._observers_open = False
                self._observing.wait_for(lambda: not self._observer_calls)
            for observer in self.observers:
                observer.finish()
        outcomes = self._every_outcome()
        fatal = self.fatal or self.writer.fatal
        if fatal is not None:
            raise RunStopped(fatal, outcomes)
        return outcomes

    def _classify_all(self) -> None:
        # Groups are classified on their own thread(s) while the next group is being gathered;
        # at most `parallel` groups wait or run at once, which bounds memory.
        parallel = self.classifier.parallel_groups
        pool = cf.ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="classify")
        groups = self._groups()
        try:
            in_flight: collections.deque[cf.Future] = collections.deque()
            for group in groups:
                in_flight.append(pool.submit(self._flush, group))
                while len(in_flight) > parallel:
                    self._wait([in_flight[0]], None)
                    in_flight.popleft().result()
            for future in in_flight:
                self._wait([future], None)
                future.result()
        except BaseException:
            groups.close()  # loads in flight are dropped
            pool.shutdown(wait=False, cancel_futures=True)  # a group being classified stops after its chunk
            raise
        pool.shutdown()

    def _stopped(self) -> bool:
        return self.fatal is not None or self.writer.fatal is not None

    def _stop(self, cause: BlockError) -> None:
        """No new sample is loaded or classified; loaders waiting for memory give up."""
        self.fatal = self.fatal or cause
        self.audio.close()
        self.classifier.cancel()

    def _interrupt(self) -> None:
        self.interrupted = self.writer.interrupted = True
        self._stop(Interrupted(f"interrupted: no new sample was started and writes in flight had up to "
                               f"{WRITE_GRACE_S:g} s to finish; rerun to label the samples named below "
                               f"({self._rerun_note()})"))

    def _rerun_note(self) -> str:
        """What a rerun after a stop does with the samples this run finished."""
        return "finished samples are skipped" if self.target.rerun_skips_finished else \
            "a rerun labels every sample again"

    def _close_writer(self) -> None:
        """Wait for the writes; a signal while waiting leaves the writes already started WRITE_GRACE_S."""
        while not self.interrupted:
            if self.writer.close(SIGNAL_POLL_S):
                return
            if self.stop.is_set():
                self._interrupt()
        self.writer.close(WRITE_GRACE_S)

    def _wait(self, futures, timeout_s: float | None) -> set[cf.Future]:
        """The futures done once the first is (or the timeout passes), looking at the stop signal every
        SIGNAL_POLL_S while waiting (raising KeyboardInterrupt)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if self.stop.is_set() and not self.interrupted:
                raise KeyboardInterrupt
            left_s = SIGNAL_POLL_S if deadline is None else min(SIGNAL_POLL_S, deadline - time.monotonic())
            done, _ = cf.wait(futures, timeout=max(0.0, left_s), return_when=cf.FIRST_COMPLETED)
            if done or (deadline is not None and time.monotonic() >= deadline):
                return done

    def _every_outcome(self) -> list[SampleOutcome]:
        """What happened to each sample; an interrupted run names the samples it never finished."""
        outcomes = self.outcomes + self.writer.outcomes
        seen = collections.Counter(o.sample_id for o in outcomes)
        for sample_id in self.ids:
            if seen[sample_id]:
                seen[sample_id] -= 1
            else:
                outcomes.append(SampleOutcome(sample_id, self._names.get(sample_id, ""), False, STOPPED))
        return outcomes

    def _groups(self) -> Iterator[list[PlannedSample]]:
        """Loaded samples, in the order they arrive, gathered until their windows fill the backend's batch."""
        group: list[PlannedSample] = []
        todo = iter(enumerate(self.ids, start=1))
        pending: dict[cf.Future, tuple[int, int]] = {}
        lookahead = LOOKAHEAD_PER_LOADER * self.target.parallel
        pool = cf.ThreadPoolExecutor(max_workers=self.target.parallel, thread_name_prefix="load")
        try:
            while True:
                while len(pending) < lookahead and not self._stopped() and \
                        (item := next(todo, None)) is not None:
                    pending[pool.submit(self._load, item[1])] = item
                if not pending:
                    break
                if self._stopped():  # samples not started yet are not read at all
                    for future in pending:
                        future.cancel()
                # While this generator waits at a yield, it holds no sample it has handed out.
                arrived = self._arrivals(pending, GROUP_WAIT_S if group else None)
                if arrived is None:  # nothing arrived for a while: classify what is here
                    yield group
                    group = []
                    continue
                while arrived:
                    group.append(arrived.pop(0))
                    if sum(len(p.windows) for p in group) >= self.classifier.preferred_batch or \
                            len(group) >= MAX_GROUP_SAMPLES:
                        yield group
                        group = []
        except BaseException:  # interrupted or closed early: never wait for a download
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            self.audio.close()  # a stopped run: loaders waiting for memory give up
        pool.shutdown()
        if group:
            yield group
        for position, sample_id in todo:  # never handed out: the run stopped
            self._fail(position, sample_id, "", STOPPED, quiet=True)

    def _arrivals(self, pending: dict[cf.Future, tuple[int, int]],
                  timeout_s: float | None) -> list[PlannedSample] | None:
        """Samples whose loads finished (failures recorded), or None if none finished within the timeout."""
        done = self._wait(pending, timeout_s)
        if not done:
            return None
        arrived = []
        for future in done:
            planned = self._plan(*pending.pop(future), future)
            if planned is not None:
                arrived.append(planned)
        return arrived

    def _load(self, sample_id: int) -> LoadedSample:
        """Load one sample within the audio budget; give the budget back if the sample never arrives."""
        admitted: list[float] = []

        def admit(info: SampleInfo) -> None:
            self.audio.reserve(audio_seconds(info))
            admitted.append(audio_seconds(info))

        try:
            return self.target.load(sample_id, admit)
        except BaseException:
            for seconds in admitted:
                self.audio.release(seconds)
            raise

    def _plan(self, position: int, sample_id: int, future: cf.Future) -> PlannedSample | None:
        """Take a finished download; record why the sample cannot be labeled if so."""
        try:
            sample = future.result()
        except cf.CancelledError:
            self._fail(position, sample_id, "", STOPPED, quiet=True)
            return None
        except AlreadyLabeled as done:
            log(f"{self._prefix(position, sample_id)} ({done.info.name}): already labeled with these "
                "settings, skipped (--force relabels)")
            self.outcomes.append(SampleOutcome(sample_id, done.info.name, True, "skipped", skipped=True))
            self.progress.finished(planned=False)
            return None
        except SampleError as exc:
            self._fail(position, sample_id, "", str(exc), quiet=self._stopped())
            return None
        except ConfigError as exc:
            self._stop(exc)
            self._fail(position, sample_id, "", str(exc), quiet=True)
            return None
        except Exception as exc:  # noqa: BLE001 - one odd sample must not end the run
            self._fail(position, sample_id, "", f"loading failed: {describe(exc)}")
            return None
        info = sample.info
        self._names[sample_id] = info.name
        if self._stopped():
            self.audio.release(audio_seconds(info))
            self._fail(position, sample_id, info.name, STOPPED, quiet=True)
            return None
        try:
            planned = plan_sample(position, sample, self.settings, time.monotonic(),
                                  self.classifier.model_input)
        except Exception as exc:  # noqa: BLE001 - one odd sample must not end the run
            self.audio.release(audio_seconds(info))
            self._fail(position, sample_id, info.name, f"planning failed: {describe(exc)}")
            return None
        self.progress.planned(len(planned.windows))
        return planned

    def _flush(self, group: list[PlannedSample]) -> None:
        """Classify a group; label the samples whose windows all scored, then give each other sample
        one more try of only its failed windows. A fatal error stops the run."""
        if self._stopped():
            self._fail_group(group, STOPPED, quiet=True)
            return
        n_classes = len(self.classifier.class_names)
        rows = [np.zeros((len(p.windows), n_classes), dtype=np.float32) for p in group]
        failed: list[dict[int, str]] = [{} for _ in group]
        self._score(group, [(s, w) for s, p in enumerate(group) for w in range(len(p.windows))], rows, failed)
        todo = sorted(zip(group, rows, failed), key=lambda item: bool(item[2]))  # complete samples first
        group.clear()  # from here on, a sample's audio goes as soon as it is labeled or failed
        del rows, failed
        # A backend that just failed a whole call's windows, each after its own retries, gets no more.
        retries = None if self.breaker.suspect else Tally()
        while todo:
            self._finish(*todo.pop(0), retries)
        if retries is not None and retries.windows:  # the retries count as one call, whichever sample came first
            self._count(retries.windows, retries.failed, retries.error, retries.reported, retries.samples)

    def _score(self, samples: Sequence[PlannedSample], pairs: list[tuple[int, int]], rows: list[np.ndarray],
               failed: list[dict[int, str]], tally: Tally | None = None) -> None:
        """Classify (sample, window) pairs in chunks that keep the backend busy, with progress between
        them; fill ``rows[s][w]``, or say in ``failed[s][w]`` why that window has no scores. Each
        chunk feeds the circuit breaker, or adds to ``tally`` when given."""
        size = max(1, CHUNK_BATCHES * self.classifier.preferred_batch)
        for start in range(0, len(pairs), size):
            chunk = pairs[start : start + size]
            if self._stopped():
                failed_now, scores, error = set(range(len(chunk))), None, STOPPED
            else:
                try:
                    failed_now, scores, error, reported = self._classify_chunk(samples, chunk)
                except (ConfigError, FatalInferenceError) as exc:
                    self._stop(exc)
                    failed_now, scores, error = set(range(len(chunk))), None, str(exc)
                else:
                    self.progress.classified(len(chunk) - len(failed_now))
                    ids = {samples[chunk[i][0]].sample.info.sample_id for i in failed_now}
                    if tally is None:
                        self._count(len(chunk), len(failed_now), error, reported, ids)
                    else:
                        tally.add(len(chunk), len(failed_now), error, reported, ids)
            for i, (s, w) in enumerate(chunk):
                if i in failed_now:
                    failed[s][w] = error
                else:
                    rows[s][w] = scores[i]

    def _count(self, windows: int, failed: int, error: str, reported: bool, samples: set[int]) -> None:
        """Feed the circuit breaker one call's outcome; a backend that keeps failing stops the run."""
        if self.breaker.record(windows, failed, reported, samples) and not self._stopped():
            name = getattr(self.classifier, "name", "the classifier")
            self._stop(FatalInferenceError(
                f"{name} failed {self.breaker.in_a_row} windows in a row with no success in between (last: "
                f"{error}); stopped the run: fix what that error names (is it up?), "
                f"then rerun ({self._rerun_note()})"))

    def _classify_chunk(self, samples: Sequence[PlannedSample],
                        chunk: list[tuple[int, int]]) -> tuple[set[int], np.ndarray | None, str, bool]:
        """One classify call: which of its windows failed, the score rows, why they failed, and
        whether the backend reported it (rather than raising something unexpected)."""
        everything = set(range(len(chunk)))
        failed, error = set(), ""
        try:
            audio = [window_audio(samples[s].sample.audio_16k, samples[s].windows[w],
                                  samples[s].sample.info.frequency_hz) for s, w in chunk]
            scores = self.classifier.classify(audio)
        except (ConfigError, FatalInferenceError):
            raise
        except InferenceError as exc:
            (failed, scores), error = call_failures(exc, len(chunk)), one_line(str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug or running out of memory costs these windows only
            return everything, None, f"inference failed: {describe(exc)}", False
        if scores is None:
            return everything, None, error, True
        if np.shape(scores) != (len(chunk), len(self.classifier.class_names)):
            shape = f"scores of shape {np.shape(scores)} for {len(chunk)} windows"
            return everything, None, f"inference failed: {shape}", False
        # NaN would compare below every threshold and quietly label the window other.
        not_finite = set(np.flatnonzero(~np.isfinite(scores).all(axis=1)).tolist()) - failed
        if not_finite:
            error = error or ("inference failed: the backend returned scores that are not finite numbers "
                              "(audio far outside -1..1, or a broken model)")
        return failed | not_finite, scores, error, True

    def _finish(self, planned: PlannedSample, rows: np.ndarray, failed: dict[int, str],
                retries: Tally | None) -> None:
        """Label a sample whose windows all scored; retry only the failed windows of one that did not."""
        if failed and retries is not None and not self._stopped():
            retry, failed = sorted(failed), {}
            self._score([planned], [(0, w) for w in retry], [rows], [failed], retries)
        if failed:
            error = list(failed.values())[-1]
            detail = error if error == STOPPED else f"{error} ({len(failed)} of {len(planned.windows)} windows)"
            self._fail_planned(planned, detail, self._stopped(), abandoned=len(failed))
            return
        try:
            job = self._labeling(planned, rows)
        except Exception as exc:  # noqa: BLE001 - one odd sample must not end the run
            self._fail_planned(planned, f"labeling failed: {describe(exc)}", abandoned=0)
            return
        info = planned.sample.info
        del planned  # the last reference to its audio: free it before the next sample may load
        self.audio.release(audio_seconds(info))
        self.writer.submit(*job)

    def _labeling(self, planned: PlannedSample, scores: np.ndarray) -> tuple:
        """The labels of a scored sample, shown to the observers; returns the writer's job."""
        info = planned.sample.info
        step = step_ix(info.values_count, info.frequency_hz, self.settings)
        labeling = label_sample(planned.windows, scores, info.values_count, step, self.settings, self.class_index)
        segments = labeling.segments
        self._observe(planned, scores, labeling)
        used = ", ".join(sorted({s.label for s in segments}))
        count = plural(len(planned.windows), "window")
        prefix = self._prefix(planned.position, info.sample_id)
        result = f"label [{labeling.single_label}]" if labeling.single_label is not None else \
            f"{plural(len(segments), 'segment')} [{used}]"
        summary = f"{prefix} ({info.name}): {count} -> {result} {self.target.verb}"
        return info, labeling, prefix, summary, planned.started

    def _observe(self, planned: PlannedSample, scores: np.ndarray, labeling: Labeling) -> None:
        """Show a labeled sample to the observers, unless the run stopped or they are finished."""
        with self._observing:
            if not self._observers_open or self.interrupted:
                return
            self._observer_calls += 1
        try:
            for observer in self.observers:
                try:
                    observer.sample_labeled(planned.sample, planned.windows, scores, labeling)
                except Exception as exc:  # noqa: BLE001 - a report or plot problem must not lose the labels
                    log(f"WARNING: sample {planned.sample.info.sample_id}: {type(observer).__name__} failed: "
                        f"{describe(exc)}")
        finally:
            with self._observing:
                self._observer_calls -= 1
                self._observing.notify_all()

    def _fail_group(self, group: Sequence[PlannedSample], detail: str, quiet: bool = False) -> None:
        for p in group:
            self._fail_planned(p, detail, quiet, abandoned=len(p.windows))

    def _fail_planned(self, planned: PlannedSample, detail: str, quiet: bool = False, abandoned: int = 0) -> None:
        info = planned.sample.info
        self.audio.release(audio_seconds(info))
        self._fail(planned.position, info.sample_id, info.name, detail, quiet, abandoned)

    def _prefix(self, position: int, sample_id: int) -> str:
        return f"[{position:>{len(str(len(self.ids)))}}/{len(self.ids)}] sample {sample_id}"

    def _fail(self, position: int, sample_id: int, name: str, detail: str, quiet: bool = False,
              abandoned: int | None = None) -> None:
        """Record a sample not labeled; ``abandoned`` (its windows never classified) is None before it was planned."""
        if not quiet:
            log(f"{self._prefix(position, sample_id)}{f' ({name})' if name else ''}: FAILED: {detail}")
        self.outcomes.append(SampleOutcome(sample_id, name, False, detail))
        self.progress.finished(planned=abandoned is not None, abandoned=abandoned or 0)


def run(ids: Sequence[int], target: Target, classifier: Classifier, settings: Settings,
        observers: Sequence[Observer] = (), stop: threading.Event | None = None) -> list[SampleOutcome]:
    return Labeler(ids, target, classifier, settings, observers, stop).run()


__all__ = ["Labeler", "Observer", "RunStopped", "SignalStop", "Target", "run"]


class RunStopped(Exception):
    """A fatal error stopped the run; carries what was done before it."""

    def __init__(self, cause: BlockError, outcomes: list[SampleOutcome]):
        super().__init__(str(cause))
        self.cause, self.outcomes = cause, outcomes

"""The pipeline: samples loaded ahead of inference -> windows of several samples classified in
full batches -> labels handed to writer threads, with progress lines and one outcome per sample.
A fatal error (bad credentials, a backend that never comes up) stops the run; any other failure
costs only its own sample.

As many samples are loaded and written at once as the target allows (``Target.parallel``; for
Studio its request budget, which bounds the requests themselves), so thousands of short clips
keep Studio busy. Memory is bounded by audio, not by sample count: the seconds of audio held
between download and labeling are capped (``PREFETCH_AUDIO_S``), and samples are taken in the
order their downloads finish, so a long sample never blocks the short ones behind it.

May import: ``core``, ``audio``, ``timeline``, ``classifiers`` (the protocol). Targets (Studio, a
folder) and observers (report, plots) arrive as objects; this module never builds them.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .audio import MODEL_MAX_INPUT_MS, window_audio
from .classifiers import Classifier
from .core import (AlreadyLabeled, BlockError, ConfigError, FatalInferenceError, InferenceError, LoadedSample,
                   SampleError, SampleInfo, SampleOutcome, Settings, log)
from .timeline import Labeling, Window, class_index, label_sample, plan_windows, step_ix

# Seconds of audio held between download and labeling (16 kHz float32: 64 KB per second, so
# 38 MB); one sample longer than this is still loaded, alone.
PREFETCH_AUDIO_S = 600.0
LOOKAHEAD_PER_LOADER = 2  # ids handed to the loaders ahead of the one being classified
MAX_GROUP_SAMPLES = 64  # samples whose windows share one inference call (short samples fill batches)
# A partial group goes to inference after this long without another sample arriving: its audio
# may be what other downloads wait for, and the backend would idle anyway.
GROUP_WAIT_S = 0.25
PROGRESS_EVERY_S = 10.0


class Target(Protocol):
    """Where samples come from and where their labels go: a Studio project or a folder of files."""

    verb: str  # how the log says labels were stored
    parallel: int  # samples loaded, and samples written, at once

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


def plan_sample(position: int, sample: LoadedSample, settings: Settings, started: float) -> PlannedSample:
    info = sample.info
    if settings.win_size_ms == 0 and info.values_count / info.frequency_hz * 1000 > MODEL_MAX_INPUT_MS:
        log(f"WARNING: sample {info.sample_id} is longer than {MODEL_MAX_INPUT_MS / 1000:g} s; with "
            "--win-size-ms 0 the model only hears its first 10.24 s")
    windows = plan_windows(info.values_count, info.frequency_hz, settings.win_size_ms, settings.win_stride_ms)
    return PlannedSample(position, sample, windows, started)


def classify_group(group: Sequence[PlannedSample], classifier: Classifier) -> list[np.ndarray]:
    """Classify the windows of several samples in one call (full batches); split the scores back."""
    audio = [window_audio(p.sample.audio_16k, w, p.sample.info.frequency_hz) for p in group for w in p.windows]
    scores = classifier.classify(audio)
    bounds = np.cumsum([0] + [len(p.windows) for p in group])
    return [scores[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def audio_seconds(info: SampleInfo) -> float:
    return info.values_count / info.frequency_hz


class AudioBudget:
    """Caps the seconds of audio held between download and labeling; a longer sample waits until none is held."""

    def __init__(self, max_s: float):
        self.max_s, self.held_s, self.peak_s = max_s, 0.0, 0.0
        self._closed = False
        self._cond = threading.Condition()

    def reserve(self, seconds: float) -> None:
        with self._cond:
            while not self._closed and self.held_s > 0 and self.held_s + seconds > self.max_s:
                self._cond.wait()
            if self._closed:
                raise SampleError("not labeled (run stopped)")
            self.held_s += seconds
            self.peak_s = max(self.peak_s, self.held_s)

    def release(self, seconds: float) -> None:
        with self._cond:
            self.held_s = max(0.0, self.held_s - seconds)
            self._cond.notify_all()

    def close(self) -> None:
        """The run is stopping: nothing waits for memory any more."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Progress:
    """Samples done, windows per second and an ETA, printed every few seconds as plain lines."""

    def __init__(self, total: int):
        self.total, self.every_s = total, PROGRESS_EVERY_S
        self.done = self.windows = 0
        self.started = self._last = time.monotonic()
        self._lock = threading.Lock()

    def add(self, samples: int, windows: int) -> None:
        with self._lock:
            self.done += samples
            self.windows += windows
            now = time.monotonic()
            if now - self._last < self.every_s or self.done >= self.total:
                return
            self._last = now
        elapsed = now - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        log(f"progress: {self.done}/{self.total} samples, {self.windows / elapsed:.1f} windows/s, "
            f"ETA {_format_duration(eta)}")


def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Writer:
    """Writes labels on their own threads so inference never waits on Studio."""

    def __init__(self, target: Target, progress: Progress):
        self._target, self._progress = target, progress
        self._queue: queue.Queue = queue.Queue(maxsize=2 * target.parallel)
        self.outcomes: list[SampleOutcome] = []
        self.fatal: BlockError | None = None
        # One thread writes all of a sample's calls in order; several samples are written at once.
        self._threads = [threading.Thread(target=self._run, name=f"writer-{i}", daemon=True)
                         for i in range(target.parallel)]
        for thread in self._threads:
            thread.start()

    def submit(self, info: SampleInfo, labeling: Labeling, prefix: str, summary: str, started: float,
               windows: int) -> None:
        self._queue.put((info, labeling, prefix, summary, started, windows))

    def close(self) -> list[SampleOutcome]:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        return self.outcomes

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            info, labeling, prefix, summary, started, windows = item
            if self.fatal is not None:
                self.outcomes.append(SampleOutcome(info.sample_id, info.name, False, "not written (run stopped)"))
                continue
            try:
                note = self._target.write(info, labeling)
            except ConfigError as exc:
                self.fatal = exc
                self.outcomes.append(SampleOutcome(info.sample_id, info.name, False, str(exc)))
            except SampleError as exc:
                log(f"{prefix} ({info.name}): FAILED: {exc}")
                self.outcomes.append(SampleOutcome(info.sample_id, info.name, False, str(exc)))
            else:
                summary += f" ({note})" if note else ""
                log(f"{summary} in {time.monotonic() - started:.2f} s")
                self.outcomes.append(SampleOutcome(info.sample_id, info.name, True, summary))
            self._progress.add(1, windows)


class Labeler:
    """The pipeline: prefetched samples -> batched inference across samples -> Studio writer."""

    def __init__(self, ids: Sequence[int], target: Target, classifier: Classifier, settings: Settings,
                 observers: Sequence[Observer] = ()):
        self.ids, self.target, self.classifier, self.settings = ids, target, classifier, settings
        self.observers = observers
        self.class_index = class_index(classifier.class_names)
        self.outcomes: list[SampleOutcome] = []
        self.fatal: BlockError | None = None
        self.progress = Progress(len(ids))
        self.audio = AudioBudget(PREFETCH_AUDIO_S)
        self.writer = Writer(target, self.progress)

    def run(self) -> list[SampleOutcome]:
        """Label every sample; per-sample failures are recorded, a fatal one stops the run."""
        parallel = self.classifier.parallel_groups
        try:
            # Groups are classified on their own thread(s) while the next group is being gathered;
            # at most `parallel` groups wait or run at once, which bounds memory.
            with cf.ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="classify") as pool:
                in_flight: collections.deque[cf.Future] = collections.deque()
                for group in self._groups():
                    in_flight.append(pool.submit(self._flush, group))
                    while len(in_flight) > parallel:
                        in_flight.popleft().result()
                for future in in_flight:
                    future.result()
        finally:
            self.audio.close()
            self.outcomes.extend(self.writer.close())
            self.target.finish()
            for observer in self.observers:
                observer.finish()
        fatal = self.fatal or self.writer.fatal
        if fatal is not None:
            raise RunStopped(fatal, self.outcomes)
        return self.outcomes

    def _stopped(self) -> bool:
        return self.fatal is not None or self.writer.fatal is not None

    def _groups(self) -> Iterator[list[PlannedSample]]:
        """Loaded samples, in the order they arrive, gathered until their windows fill the backend's batch."""
        group: list[PlannedSample] = []
        todo = iter(enumerate(self.ids, start=1))
        pending: dict[cf.Future, tuple[int, int]] = {}
        lookahead = LOOKAHEAD_PER_LOADER * self.target.parallel
        with cf.ThreadPoolExecutor(max_workers=self.target.parallel, thread_name_prefix="load") as pool:
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
            finally:
                self.audio.close()  # a stopped run: loaders waiting for memory give up
        if group:
            yield group
        for position, sample_id in todo:  # never handed out: the run stopped
            self._fail(position, sample_id, "", "not labeled (run stopped)", quiet=True)

    def _arrivals(self, pending: dict[cf.Future, tuple[int, int]],
                  timeout_s: float | None) -> list[PlannedSample] | None:
        """Samples whose loads finished (failures recorded), or None if none finished within the timeout."""
        done, _ = cf.wait(pending, timeout=timeout_s, return_when=cf.FIRST_COMPLETED)
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
            self._fail(position, sample_id, "", "not labeled (run stopped)", quiet=True)
            return None
        except AlreadyLabeled as done:
            log(f"{self._prefix(position, sample_id)} ({done.info.name}): already labeled with these "
                "settings, skipped (--force relabels)")
            self.outcomes.append(SampleOutcome(sample_id, done.info.name, True, "skipped", skipped=True))
            self.progress.add(1, 0)
            return None
        except SampleError as exc:
            self._fail(position, sample_id, "", str(exc), quiet=self._stopped())
            return None
        except ConfigError as exc:
            self.fatal = self.fatal or exc
            self._fail(position, sample_id, "", str(exc), quiet=True)
            return None
        except Exception as exc:  # noqa: BLE001 - one odd sample must not end the run
            self._fail(position, sample_id, "", f"unexpected {type(exc).__name__}: {exc}")
            return None
        if self._stopped():
            self.audio.release(audio_seconds(sample.info))
            self._fail(position, sample_id, sample.info.name, "not labeled (run stopped)", quiet=True)
            return None
        try:
            return plan_sample(position, sample, self.settings, time.monotonic())
        except Exception as exc:  # noqa: BLE001 - one odd sample must not end the run
            self.audio.release(audio_seconds(sample.info))
            self._fail(position, sample_id, sample.info.name, f"unexpected {type(exc).__name__}: {exc}")
            return None

    def _flush(self, group: list[PlannedSample]) -> None:
        """Classify a group and hand its labels to the writer; a fatal error stops the run."""
        if self._stopped():
            self._fail_group(group, "not labeled (run stopped)", quiet=True)
            return
        try:
            scores = classify_group(group, self.classifier)
        except (ConfigError, FatalInferenceError) as exc:
            self.fatal = self.fatal or exc
            self._fail_group(group, str(exc), quiet=True)
            return
        except InferenceError as exc:
            if len(group) > 1:  # find which sample failed; the others still get labeled
                for p in group:
                    self._flush([p])
                return
            self._fail_group(group, str(exc))
            return
        labeled = list(zip(group, scores))
        group.clear()  # from here on, a sample's audio goes as soon as it is labeled
        while labeled:
            self._label(*labeled.pop(0))

    def _label(self, planned: PlannedSample, scores: np.ndarray) -> None:
        info = planned.sample.info
        step = step_ix(info.values_count, info.frequency_hz, self.settings)
        labeling = label_sample(planned.windows, scores, info.values_count, step, self.settings, self.class_index)
        segments = labeling.segments
        for observer in self.observers:
            try:
                observer.sample_labeled(planned.sample, planned.windows, scores, labeling)
            except Exception as exc:  # noqa: BLE001 - a report or plot problem must not lose the labels
                log(f"WARNING: sample {info.sample_id}: {type(observer).__name__} failed: {exc}")
        used = ", ".join(sorted({s.label for s in segments}))
        count = f"{len(planned.windows)} window{'s' * (len(planned.windows) != 1)}"
        prefix = self._prefix(planned.position, info.sample_id)
        result = f"label [{labeling.single_label}]" if labeling.single_label is not None else \
            f"{len(segments)} segment{'s' * (len(segments) != 1)} [{used}]"
        summary = f"{prefix} ({info.name}): {count} -> {result} {self.target.verb}"
        started, windows = planned.started, len(planned.windows)
        del planned  # the last reference to its audio: free it before the next sample may load
        self.audio.release(audio_seconds(info))
        self.writer.submit(info, labeling, prefix, summary, started, windows)

    def _fail_group(self, group: Sequence[PlannedSample], detail: str, quiet: bool = False) -> None:
        for p in group:
            self.audio.release(audio_seconds(p.sample.info))
            self._fail(p.position, p.sample.info.sample_id, p.sample.info.name, detail, quiet)

    def _prefix(self, position: int, sample_id: int) -> str:
        return f"[{position:>{len(str(len(self.ids)))}}/{len(self.ids)}] sample {sample_id}"

    def _fail(self, position: int, sample_id: int, name: str, detail: str, quiet: bool = False) -> None:
        if not quiet:
            log(f"{self._prefix(position, sample_id)}: FAILED: {detail}")
        self.outcomes.append(SampleOutcome(sample_id, name, False, detail))
        self.progress.add(1, 0)


def run(ids: Sequence[int], target: Target, classifier: Classifier, settings: Settings,
        observers: Sequence[Observer] = ()) -> list[SampleOutcome]:
    return Labeler(ids, target, classifier, settings, observers).run()


class RunStopped(Exception):
    """A fatal error stopped the run; carries what was done before it."""

    def __init__(self, cause: BlockError, outcomes: list[SampleOutcome]):
        super().__init__(str(cause))
        self.cause, self.outcomes = cause, outcomes

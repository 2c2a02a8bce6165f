"""The pipeline's parts: the audio budget, the circuit breaker, progress lines, the writer threads,
and one-line descriptions of failures.

May import: ``core``, ``timeline`` (types). ``Target`` is the protocol in this package's ``__init__``.
"""

from __future__ import annotations

import math
import queue
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..core import BlockError, ConfigError, InferenceError, SampleError, SampleInfo, SampleOutcome, log
from ..timeline import Labeling

if TYPE_CHECKING:
    from . import Target

SUBMIT_POLL_S = 0.1  # how often a classify thread waiting for room in the write queue checks for a stop
DETAIL_MAX_CHARS = 200  # an error detail is cut to this many characters, on one line
STOPPED = "not labeled (run stopped)"


def one_line(text: str) -> str:
    return " ".join(text.split())[:DETAIL_MAX_CHARS]


def describe(exc: BaseException) -> str:
    """One line for an unexpected exception; running out of memory (host or GPU) says so plainly."""
    kind, text = type(exc).__name__, one_line(str(exc))
    if isinstance(exc, MemoryError) or kind == "OutOfMemoryError":
        return f"out of memory ({kind}{': ' + text if text else ''})"
    return f"{kind}: {text}" if text else kind


def call_failures(exc: InferenceError, n: int) -> tuple[set[int], np.ndarray | None]:
    """Which of a failed call's ``n`` windows failed, and score rows for all ``n`` (None: no usable rows).

    Rows may come one per window, or only for the windows that succeeded, in order.
    """
    everything = set(range(n))
    failed = everything if exc.failed is None else {i for i in exc.failed if 0 <= i < n}
    scores = exc.scores
    if failed == everything or scores is None or scores.ndim != 2:
        return everything, None
    if len(scores) == n:
        return failed, scores
    if len(scores) == n - len(failed):
        rows = np.zeros((n, scores.shape[1]), dtype=scores.dtype)
        rows[sorted(everything - failed)] = scores
        return failed, rows
    return everything, None


def audio_seconds(info: SampleInfo) -> float:
    return info.values_count / info.frequency_hz


def _left_s(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class CircuitBreaker:
    """Tells a backend that is down from one bad batch.

    Counts the windows that failed in a row: a classify call adds its windows only when all of
    them failed, and any success resets the count. From ``limit`` windows on the backend is
    suspect (failed windows are not retried). It trips there when the backend itself reported the
    failures (each window after its own retries); an unexpected error, which may be one bad
    batch, trips it only once a second call has failed too. Either way the failures must span
    two samples: one sample the backend cannot score (however many windows it has) fails alone.
    """

    def __init__(self, limit: int):
        self.limit, self.in_a_row, self.calls = limit, 0, 0
        self.samples: set[int] = set()  # the samples whose windows make up the current run of failures
        self._lock = threading.Lock()

    @property
    def suspect(self) -> bool:
        return self.in_a_row >= self.limit

    def record(self, windows: int, failed: int, reported: bool = True, samples: Iterable[int] = ()) -> bool:
        """One classify call's outcome (``samples``: ids of the samples whose windows failed); True
        when the run should stop."""
        with self._lock:
            if windows and failed == windows:
                self.in_a_row, self.calls = self.in_a_row + failed, self.calls + 1
                self.samples.update(samples)
            else:
                self.in_a_row = self.calls = 0
                self.samples = set()
            return self.suspect and (reported or self.calls >= 2) and len(self.samples) >= 2


@dataclass
class Tally:
    """Windows tried and failed over several classify calls that the breaker sees as one."""

    windows: int = 0
    failed: int = 0
    error: str = ""
    reported: bool = True  # every failure came from the backend itself, none was unexpected
    samples: set[int] = field(default_factory=set)  # ids of the samples with failed windows

    def add(self, windows: int, failed: int, error: str, reported: bool, samples: Iterable[int] = ()) -> None:
        self.windows, self.failed = self.windows + windows, self.failed + failed
        self.error, self.reported = error or self.error, self.reported and (reported or not failed)
        self.samples.update(samples)


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
                raise SampleError(STOPPED)
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
    """Samples done, windows per second and an ETA, printed every few seconds as plain lines.

    Work is counted in windows as they are classified, so one long sample reports while it runs.
    The ETA is the windows left (those of loaded samples, and for samples not loaded yet the
    average so far) at the rate so far.
    """

    def __init__(self, total: int, every_s: float):
        self.total, self.every_s = total, every_s
        self.done = self.windows = 0  # samples finished, windows classified
        self._planned = self._planned_windows = self._resolved_windows = self._done_unplanned = 0
        self.started = self._last = time.monotonic()
        self._lock = threading.Lock()

    def planned(self, windows: int) -> None:
        with self._lock:
            self._planned += 1
            self._planned_windows += windows

    def classified(self, windows: int) -> None:
        if windows:
            self._update(windows=windows)

    def finished(self, planned: bool = True, abandoned: int = 0) -> None:
        """A sample is done; ``abandoned``: how many of its windows will never be classified."""
        self._update(samples=1, unplanned=not planned, abandoned=abandoned)

    def _update(self, samples: int = 0, windows: int = 0, unplanned: bool = False, abandoned: int = 0) -> None:
        with self._lock:
            self.done += samples
            self.windows += windows
            self._done_unplanned += unplanned
            self._resolved_windows += windows + abandoned
            now = time.monotonic()
            if now - self._last < self.every_s or self.done >= self.total:
                return
            self._last = now
            line = self._line(now - self.started)
        log(line)

    def _line(self, elapsed_s: float) -> str:
        rate = self.windows / max(elapsed_s, 1e-9)
        if self.windows and self._planned:
            not_loaded = max(0, self.total - self._planned - self._done_unplanned)
            left = max(0, self._planned_windows - self._resolved_windows) + \
                not_loaded * self._planned_windows / self._planned
            eta = left / rate
        else:
            eta = elapsed_s / self.done * (self.total - self.done) if self.done else float("nan")
        return f"progress: {self.done}/{self.total} samples, {rate:.1f} windows/s, ETA {_format_duration(eta)}"


def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Writer:
    """Writes labels on their own threads so inference never waits on Studio.

    Once ``interrupted``, a sample whose write has not started is not written; ``close`` can bound
    how long it waits for the writes already started.
    """

    def __init__(self, target: Target, progress: Progress):
        self._target, self._progress = target, progress
        self._queue: queue.Queue = queue.Queue(maxsize=2 * target.parallel)
        self.outcomes: list[SampleOutcome] = []
        self.fatal: BlockError | None = None
        self.interrupted = self._closed = False
        self._ends_sent = 0  # end markers queued by close(), one per writer thread
        # One thread writes all of a sample's calls in order; several samples are written at once.
        self._threads = [threading.Thread(target=self._run, name=f"writer-{i}", daemon=True)
                         for i in range(target.parallel)]
        for thread in self._threads:
            thread.start()

    def submit(self, info: SampleInfo, labeling: Labeling, prefix: str, summary: str, started: float) -> None:
        while not (self.interrupted or self._closed):  # waiting for room must not outlive the run
            try:
                self._queue.put((info, labeling, prefix, summary, started), timeout=SUBMIT_POLL_S)
                return
            except queue.Full:
                pass
        self._record(info, False, "not written (run stopped)")

    def close(self, wait_s: float | None = None) -> bool:
        """Let every queued write finish, waiting at most ``wait_s`` (None: as long as it takes);
        True once every writer thread has finished. May be called again to wait longer."""
        deadline = None if wait_s is None else time.monotonic() + wait_s
        self._closed = True
        try:
            while self._ends_sent < len(self._threads):
                self._queue.put(None, timeout=_left_s(deadline))
                self._ends_sent += 1
        except queue.Full:
            return False
        for thread in self._threads:
            thread.join(_left_s(deadline))
        return not any(thread.is_alive() for thread in self._threads)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self.fatal is not None or self.interrupted:
                self._record(item[0], False, "not written (run stopped)")
            else:
                self._write(*item)

    def _write(self, info: SampleInfo, labeling: Labeling, prefix: str, summary: str, started: float) -> None:
        try:
            note = self._target.write(info, labeling)
        except ConfigError as exc:
            self.fatal = exc
            self._record(info, False, str(exc))
        except Exception as exc:  # noqa: BLE001 - one odd write costs its own sample only
            detail = str(exc) if isinstance(exc, SampleError) else f"write failed: {describe(exc)}"
            log(f"{prefix} ({info.name}): FAILED: {detail}")
            self._record(info, False, detail)
        else:
            summary += f" ({note})" if note else ""
            log(f"{summary} in {time.monotonic() - started:.2f} s")
            self._record(info, True, summary)

    def _record(self, info: SampleInfo, ok: bool, detail: str) -> None:
        self.outcomes.append(SampleOutcome(info.sample_id, info.name, ok, detail))
        self._progress.finished()


class SignalStop:
    """SIGTERM and Ctrl-C for one run.

    In the container Python is PID 1, where SIGTERM (docker stop, a Studio cancel) is otherwise
    ignored until the SIGKILL. Before the run starts a signal interrupts the setup
    (KeyboardInterrupt); once it runs, a signal only sets ``event``, which the pipeline notices
    where its main thread waits, so a signal can never cut into a write, a summary or the
    writing of info.labels. Handlers are set only on the main thread and put back by ``restore``.
    """

    def __init__(self):
        self.event = threading.Event()
        self.raising = True  # until the run starts
        self._old: dict[int, object] = {}

    def install(self) -> SignalStop:
        if threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._old = {}

    def _handle(self, signum: int, frame) -> None:
        first = not self.event.is_set()
        self.event.set()
        if first and self.raising:
            self.raising = False
            raise KeyboardInterrupt

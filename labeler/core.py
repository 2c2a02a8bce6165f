"""What every module of the block shares: the errors that cross modules, the settings that decide
a sample's labels (with their fingerprint), the sample records, logging, retry waits, the adaptive
limit on requests in flight (Studio and inference), and safe file writes.

May import: the standard library and numpy only. Everything else in ``labeler`` may import this.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BLOCK_NAME = "ast-audio-labeler"
BLOCK_VERSION = "1.0.0"  # part of every settings fingerprint: changing it relabels every finished sample

LABEL_MODES = ("multi", "single")  # time-ranged structured labels, or one label per sample
COMBINE_RULES = ("min", "mean")  # how overlapping windows score the stride step they share
DEFAULT_LABEL_MODE, DEFAULT_COMBINE = "multi", "min"

# Waits between retries of one request (inference and Studio): exponential, capped.
HTTP_BACKOFF_BASE_S = 0.5
HTTP_BACKOFF_MAX_S = 30.0
# An adaptive limit says so in the log when it changes, at most this often.
LIMIT_LOG_EVERY_S = 10.0
# Secret values shorter than this are not redacted: no real key is that short, and replacing a few
# common characters would garble every line.
MIN_SECRET_CHARS = 6
REDACTED = "[redacted]"
# A file the block writes gets these permissions when it does not exist yet (an existing one keeps its own).
NEW_FILE_MODE = 0o644


# --- errors: named inside, turned into messages and exit codes only in transform.main() -----------

class BlockError(Exception):
    """Base of every error this block reports to the user."""


class ConfigError(BlockError):
    """Bad arguments, environment or credentials: stop before touching any sample."""


class SampleError(BlockError):
    """This sample cannot be labeled; the others still are."""


class InferenceError(SampleError):
    """The classifier failed for some or all of one ``classify`` call's windows.

    ``failed`` lists the indices (into that call's windows) that failed; None means every window
    failed or the backend cannot tell which. ``scores`` (windows, classes) holds the rows of the
    windows that succeeded (rows of failed windows are meaningless); None when there are none.
    Whoever retries needs to retry only ``failed``.
    """

    def __init__(self, message: str, failed: Sequence[int] | None = None, scores: np.ndarray | None = None):
        super().__init__(message)
        self.failed = None if failed is None else tuple(failed)
        self.scores = scores


class FatalInferenceError(BlockError):
    """The inference backend is unusable for every sample (e.g. never finished loading)."""


class AuthError(ConfigError):
    """A service rejected the credentials."""


class AlreadyLabeled(Exception):
    """The sample carries a finished labeling with the same settings: nothing to do."""

    def __init__(self, info: SampleInfo):
        super().__init__(info.name)
        self.info = info



# --- records ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelSpec:
    """One label of interest: which model class, what to write, and its threshold."""

    model_label: str
    output_label: str
    threshold: float | None = None  # None: use --min-confidence



@dataclass(frozen=True)
class Settings:
    """Everything that decides the labels a sample gets."""

    specs: tuple[LabelSpec, ...]
    other_label: str
    win_size_ms: int
    win_stride_ms: int
    min_confidence: float
    model: str
    label_mode: str = DEFAULT_LABEL_MODE
    combine: str = DEFAULT_COMBINE
    disable_other: bool = False  # disable samples in which no label of interest is found
    score_function: str = "sigmoid"  # how the model's logits became scores (resolved: sigmoid or softmax)

    def threshold(self, spec: LabelSpec) -> float:
        return self.min_confidence if spec.threshold is None else spec.threshold

    def fingerprint(self) -> str:
        """A compact, stable description stored with the labels (strings only in metadata).

        Options added after 1.0.0 appear only when they differ from their defaults, so samples
        finished by an older block with the same settings keep the same fingerprint (and are skipped).
        """
        described = {
            "block": BLOCK_VERSION,
            "model": self.model,
            "labels": [[s.model_label, s.output_label, self.threshold(s)] for s in self.specs],
            "other": self.other_label,
            "win_ms": self.win_size_ms,
            "stride_ms": self.win_stride_ms,
        }
        if self.label_mode != DEFAULT_LABEL_MODE:
            described["mode"] = self.label_mode
        if self.combine != DEFAULT_COMBINE:
            described["combine"] = self.combine
        if self.disable_other:
            described["disable_other"] = True
        if self.score_function != "sigmoid":
            described["score"] = self.score_function
        return json.dumps(described, separators=(",", ":"))


@dataclass(frozen=True)
class SampleInfo:
    """The fields of a Studio sample that labeling needs."""

    sample_id: int
    name: str
    frequency_hz: float
    values_count: int
    axis_ix: int
    metadata: dict[str, str]
    is_disabled: bool = False
    has_structured_labels: bool = False  # Studio ignores a plain label while these exist


@dataclass(frozen=True)
class LoadedSample:
    """A sample with its audio decoded and resampled to the model rate."""

    info: SampleInfo
    audio_16k: np.ndarray  # float32 mono at MODEL_RATE_HZ


@dataclass(frozen=True)
class SampleOutcome:
    sample_id: int
    name: str
    ok: bool
    detail: str
    skipped: bool = False  # already labeled with the same settings by an earlier run


# --- logging, retry waits, files ----------------------------------------------------------------------

_log_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def set_secrets(values: Sequence[str]) -> None:
    """The secret values of this run (keys, tokens): ``log`` never prints them, nor any line or
    word of one, whatever a message says."""
    global _secrets
    parts = {part for value in values for part in (value, value.strip(), *value.split())}
    _secrets = tuple(sorted({v for v in parts if len(v) >= MIN_SECRET_CHARS}, key=len, reverse=True))


def clean_keys(environ: dict[str, str], names: Sequence[str]) -> dict[str, str]:
    """Strip stray whitespace around the keys this run uses; refuse keys no service could take.

    A key with a line break or a space inside would end up quoted in some client's error message;
    the refusal names the variable, never its value.
    """
    cleaned = dict(environ)
    for name in names:
        if name not in environ:
            continue
        cleaned[name] = value = environ[name].strip()
        if value and not re.fullmatch(r"[\x21-\x7e]+", value):
            raise ConfigError(f"{name} holds a line break, space or other character no key has; "
                              "set it to the key alone")
    return cleaned


def redact(text: str) -> str:
    for secret in _secrets:  # longest first, so a key that contains another is removed whole
        text = text.replace(secret, REDACTED)
    return text


def log(message: str, stream=None) -> None:
    """One whole line at a time, whichever thread prints it, with every secret redacted."""
    message = redact(message)
    with _log_lock:
        print(message, file=stream or sys.stdout, flush=True)


def plural(count: int, noun: str) -> str:
    """"1 file", "2 files"."""
    return f"{count} {noun}{'s' * (count != 1)}"


def first_few(items: Sequence, shown: int) -> str:
    """The first ``shown`` items, comma-separated, with ", ..." when there are more."""
    return ", ".join(map(str, items[:shown])) + (", ..." if len(items) > shown else "")


def backoff_s(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based)."""
    return min(HTTP_BACKOFF_MAX_S, HTTP_BACKOFF_BASE_S * 2**attempt)


def retry_after_s(headers, default: float) -> float:
    """A server's Retry-After in seconds (the number form), or ``default``.

    Values that are not finite numbers ("inf", "nan") are ignored; callers cap finite ones.
    """
    value = headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else default
    except ValueError:
        return default
    return max(0.0, seconds) if math.isfinite(seconds) else default


# --- adaptive concurrency: one budget of requests in flight, shared by every caller of one service ------


@dataclass(frozen=True)
class Ticket:
    """A slot in an AdaptiveLimit: the budget's generation when the request started."""

    generation: int


class AdaptiveLimit:
    """Caps requests in flight; halves the cap when the service pushes back and grows it back.

    Additive increase, multiplicative decrease: the cap grows by one after a cap's worth of
    successes and halves on a 429, a 5xx, a timeout or a "too many requests" answer. A burst of
    refusals to requests that were all in flight together halves it once, not once per refusal
    (``throttled(ticket)`` ignores requests started before the last decrease). A Retry-After
    holds every new request until it has passed. Urgent slots (writes of samples already in
    flight) go before ordinary ones (reads of new samples).
    """

    def __init__(self, maximum: int, name: str = ""):
        self.maximum = self.limit = self.lowest = maximum
        self.name = name  # for the log; empty: changes are not logged
        self.decreases = self.peak_in_flight = 0
        self._in_flight = self._successes = self._urgent_waiting = self._generation = 0
        self._resume_at = 0.0  # monotonic time before which no request starts (Retry-After)
        self._logged_at, self._logged_limit = -LIMIT_LOG_EVERY_S, maximum
        self._cond = threading.Condition()

    def acquire(self, urgent: bool = False) -> Ticket:
        with self._cond:
            self._urgent_waiting += urgent
            try:
                while True:
                    wait_s = self._resume_at - time.monotonic()
                    if wait_s <= 0 and self._in_flight < self.limit and (urgent or not self._urgent_waiting):
                        break
                    self._cond.wait(wait_s if wait_s > 0 else None)
            finally:
                self._urgent_waiting -= urgent
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            return Ticket(self._generation)

    def release(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def __enter__(self) -> Ticket:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def throttled(self, ticket: Ticket | None = None, retry_after_s: float | None = None) -> None:
        """The service pushed back; ``ticket`` (when given) says whether this request saw the current cap."""
        with self._cond:
            if retry_after_s:
                self._resume_at = max(self._resume_at, time.monotonic() + retry_after_s)
            if ticket is not None and ticket.generation != self._generation:
                return  # started before the last decrease: that decrease already answered it
            self.limit, self._successes = max(1, self.limit // 2), 0
            self._generation += 1
            self.decreases += 1
            self.lowest = min(self.lowest, self.limit)
            self._maybe_log()

    def succeeded(self) -> None:
        with self._cond:
            self._successes += 1
            if self.limit < self.maximum and self._successes >= self.limit:
                self.limit, self._successes = self.limit + 1, 0
                self._cond.notify_all()
                self._maybe_log()

    def summary(self) -> str:
        """What the limit did during the run, for the summary line; empty when it never moved."""
        if not self.decreases:
            return ""
        return (f"{self.name} pushed back {plural(self.decreases, 'time')} (requests in flight "
                f"{self.maximum} -> as low as {self.lowest}, now {self.limit})")

    def _maybe_log(self) -> None:
        now = time.monotonic()
        if self.name and self.limit != self._logged_limit and now - self._logged_at >= LIMIT_LOG_EVERY_S:
            log(f"{self.name}: requests in flight {self._logged_limit} -> {self.limit} "
                f"(max {self.maximum}; halved on rate limits, errors and timeouts, grows back on successes)")
            self._logged_at, self._logged_limit = now, self.limit


def write_file_atomically(path: str, text: str) -> None:
    """Write to a new temporary file beside ``path``, then rename: readers never see half a file.

    The temporary file is created exclusively under an unpredictable name (a planted symlink is
    never followed) and removed if anything fails, leaving the old file as it was.
    """
    folder, name = os.path.split(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = NEW_FILE_MODE
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)  # mkstemp makes it private; the file keeps the mode readers expect
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def check_writable_folder(path: str) -> None:
    """Create ``path`` if needed and prove a file can be created in it (raises OSError if not).

    Trying is the only reliable test: permission bits say nothing about read-only mounts, and
    root passes every access() check.
    """
    os.makedirs(path, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
    os.close(fd)
    os.unlink(probe)

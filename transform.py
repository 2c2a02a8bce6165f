"""Label audio samples in Edge Impulse Studio with the Audio Spectrogram Transformer (AST).

Edge Impulse runs this file as an AI labeling ("AI Actions") block. For every sample id in
``--data-ids-file`` it downloads the sample's audio once, cuts it into windows, scores every
window over all AudioSet classes, and writes gap-free, time-ranged structured labels back to
Studio (or, with ``--propose-actions JOB``, proposes them for preview).

Usage (the arguments Studio passes; secrets and endpoints come from the environment):

    EI_PROJECT_API_KEY=ei_... python3 -u transform.py \\
        --data-ids-file ids.json \\
        --audioset-labels "Speech\\nDog (dog, 0.3)\\nMusic (music)" \\
        --win-size-ms 2000 --win-stride-ms 1000 --min-confidence 0.2 [--propose-actions 42]

Without Studio, label a folder of audio files and get an info.labels file for the uploader,
a run report (window scores, segments, Audacity labels) and one plot per file:

    python3 -u transform.py --input-dir examples --audioset-labels "Speech\nMusic" \
        --report-dir report --plot-dir plots

The model runs in-process by default (``--backend local``: CPU or CUDA, batched); ``--backend
remote --inference-url URL`` sends windows to a Hugging Face-protocol endpoint instead.

A labels line is ``Model label``, ``Model label (new name)`` or ``Model label (new name, 0.35)``
(a per-label threshold). Windows whose best label of interest stays below its threshold get
``--other-label``. Exit codes: 0 all samples labeled, 1 some samples could not be labeled
(the summary names them), 2 usage or configuration error (nothing was written).
"""

from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures as cf
import difflib
import io
import json
import math
import os
import queue
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

BLOCK_NAME = "ast-audio-labeler"
BLOCK_VERSION = "1.0.0"

DEFAULT_MODEL = "MIT/ast-finetuned-audioset-10-10-0.4593"
DEFAULT_INFERENCE_URL = "https://router.huggingface.co/hf-inference/models/{model}"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_EI_API_ENDPOINT = "https://studio.edgeimpulse.com/v1"

MODEL_RATE_HZ = 16_000
# AST pads or cuts every input to 1024 frames of 10 ms: anything past 10.24 s is never heard.
MODEL_MAX_INPUT_MS = 10_240

DEFAULT_WIN_SIZE_MS = 2000
DEFAULT_MIN_CONFIDENCE = 0.2
DEFAULT_CONCURRENCY = 16  # hides a 100 ms round trip; a rate-limited endpoint makes the block back off
DEFAULT_MAX_WAIT_S = 300.0  # per inference request: loading, rate limits and retries together

HTTP_CONNECT_TIMEOUT_S = 10.0
HTTP_READ_TIMEOUT_S = 120.0
HTTP_MAX_ATTEMPTS = 6
HTTP_BACKOFF_BASE_S = 0.5
HTTP_BACKOFF_MAX_S = 30.0

STUDIO_TIMEOUT_S = (10.0, 120.0)  # (connect, read)
STUDIO_RETRIES = 6
PREFETCH_SAMPLES = 4  # samples downloaded ahead of inference; bounds memory
WRITE_QUEUE_SAMPLES = 16  # labeled samples waiting for their Studio write
WRITE_WORKERS = 4  # samples written to Studio at once
MAX_GROUP_SAMPLES = 64  # samples whose windows share one inference call (short samples fill batches)
PROGRESS_EVERY_S = 10.0

EXIT_OK, EXIT_SOME_FAILED, EXIT_CONFIG = 0, 1, 2

SECRET_ENV_VARS = ("EI_PROJECT_API_KEY", "EI_API_KEY", "HF_API_KEY", "HF_TOKEN")


# ---------------------------------------------------------------------------------------------
# Errors: named inside, turned into messages and exit codes only in main()
# ---------------------------------------------------------------------------------------------


class BlockError(Exception):
    """Base of every error this block reports to the user."""


class ConfigError(BlockError):
    """Bad arguments, environment or credentials: stop before touching any sample."""


class SampleError(BlockError):
    """This sample cannot be labeled; the others still are."""


class InferenceError(SampleError):
    """The classifier failed for this sample's windows."""


class FatalInferenceError(BlockError):
    """The inference backend is unusable for every sample (e.g. never finished loading)."""


class AuthError(ConfigError):
    """A service rejected the credentials."""


# ---------------------------------------------------------------------------------------------
# Data types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelSpec:
    """One label of interest: which model class, what to write, and its threshold."""

    model_label: str
    output_label: str
    threshold: float | None = None  # None: use --min-confidence


@dataclass(frozen=True)
class Window:
    """A window of sample indices, half-open: [start_ix, stop_ix)."""

    start_ix: int
    stop_ix: int


@dataclass(frozen=True)
class Segment:
    """A structured label as Studio stores it: inclusive end_ix."""

    start_ix: int
    end_ix: int
    label: str


@dataclass(frozen=True)
class Settings:
    """Everything that decides the labels a sample gets."""

    specs: tuple[LabelSpec, ...]
    other_label: str
    win_size_ms: int
    win_stride_ms: int
    min_confidence: float
    model: str

    def threshold(self, spec: LabelSpec) -> float:
        return self.min_confidence if spec.threshold is None else spec.threshold

    def fingerprint(self) -> str:
        """A compact, stable description stored with the labels (strings only in metadata)."""
        return json.dumps(
            {
                "block": BLOCK_VERSION,
                "model": self.model,
                "labels": [[s.model_label, s.output_label, self.threshold(s)] for s in self.specs],
                "other": self.other_label,
                "win_ms": self.win_size_ms,
                "stride_ms": self.win_stride_ms,
            },
            separators=(",", ":"),
        )


@dataclass(frozen=True)
class SampleInfo:
    """The fields of a Studio sample that labeling needs."""

    sample_id: int
    name: str
    frequency_hz: float
    values_count: int
    axis_ix: int
    metadata: dict[str, str]


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


# ---------------------------------------------------------------------------------------------
# Label specs
# ---------------------------------------------------------------------------------------------

_RENAME_RE = re.compile(r"^(?P<model>.*?)\s*\((?P<inner>[^()]*)\)\s*$")


def split_label_lines(text: str) -> list[str]:
    """Studio sends multiline text with literal backslash-n; accept both kinds of newline."""
    lines = text.replace("\\n", "\n").splitlines()
    return [line.strip() for line in lines if line.strip()]


def parse_label_line(line: str, known_lower: dict[str, str] | None) -> LabelSpec:
    """Parse one labels line; ``known_lower`` maps lowercased model labels to their real names.

    A line that is itself a model label wins over the rename syntax, because some AudioSet
    names contain parentheses ("Roaring cats (lions, tigers)").
    """
    if known_lower is not None and line.lower() in known_lower:
        return LabelSpec(known_lower[line.lower()], line)
    match = _RENAME_RE.match(line)
    if not match or not match.group("model"):
        return LabelSpec(_canonical(line, known_lower), line)
    model_text, inner = match.group("model").strip(), match.group("inner").strip()
    name, threshold = inner, None
    head, sep, tail = inner.rpartition(",")
    if sep and _looks_like_number(tail):
        name, threshold = head.strip(), _parse_threshold(tail.strip(), line)
    return LabelSpec(_canonical(model_text, known_lower), name or model_text, threshold)


def _looks_like_number(text: str) -> bool:
    return re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", text) is not None


def _parse_threshold(text: str, line: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(
            f"--audioset-labels: threshold {text} in line {line!r} is out of range; use a value from 0 to 1"
        )
    return value


def _canonical(model_text: str, known_lower: dict[str, str] | None) -> str:
    if known_lower is None:
        return model_text
    return known_lower.get(model_text.lower(), model_text)


def parse_label_specs(text: str, known_labels: Sequence[str] | None) -> tuple[LabelSpec, ...]:
    """Parse and validate ``--audioset-labels``; unknown labels raise with close matches."""
    known_lower = None if known_labels is None else {k.lower(): k for k in known_labels}
    specs = tuple(parse_label_line(line, known_lower) for line in split_label_lines(text))
    if not specs:
        raise ConfigError("--audioset-labels is empty; give at least one AudioSet label, one per line")
    if known_lower is not None:
        unknown = [s.model_label for s in specs if s.model_label.lower() not in known_lower]
        if unknown:
            raise ConfigError("; ".join(_unknown_label_message(u, known_labels or []) for u in unknown))
    seen: set[str] = set()
    for spec in specs:
        if spec.model_label.lower() in seen:
            raise ConfigError(f"--audioset-labels: {spec.model_label!r} is listed twice; list each model label once")
        seen.add(spec.model_label.lower())
    return specs


def _unknown_label_message(label: str, known: Sequence[str]) -> str:
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(label.lower(), list(by_lower), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(repr(by_lower[c]) for c in close)}?" if close else ""
    return f"unknown AudioSet label {label!r} in --audioset-labels.{hint}"


# ---------------------------------------------------------------------------------------------
# Windows, scores and segments (pure, in the sample's own index space)
# ---------------------------------------------------------------------------------------------


def ms_to_ix(ms: float, frequency_hz: float) -> int:
    """Milliseconds to a whole number of samples (at least 1)."""
    return max(1, round(ms * frequency_hz / 1000.0))


def plan_windows(values_count: int, frequency_hz: float, win_size_ms: int, win_stride_ms: int) -> list[Window]:
    """Windows that cover every index; a last window is aligned to the end to cover the tail.

    Every window but the tail one starts on a multiple of the stride. A sample shorter than one
    window (or ``win_size_ms == 0``) is one window.
    """
    if values_count <= 0:
        return []
    win_ix = values_count if win_size_ms == 0 else ms_to_ix(win_size_ms, frequency_hz)
    if win_ix >= values_count:
        return [Window(0, values_count)]
    stride_ix = ms_to_ix(win_stride_ms, frequency_hz)
    windows = [Window(s, s + win_ix) for s in range(0, values_count - win_ix + 1, stride_ix)]
    if windows[-1].stop_ix < values_count:
        windows.append(Window(values_count - win_ix, values_count))
    return windows


def step_ix(values_count: int, frequency_hz: float, settings: Settings) -> int:
    """The resolution of the labels: one stride, or the whole sample for whole-sample windows."""
    if settings.win_size_ms == 0:
        return values_count
    return min(values_count, ms_to_ix(settings.win_stride_ms, frequency_hz))


def aggregate_steps(windows: Sequence[Window], scores: np.ndarray, values_count: int, step: int) -> np.ndarray:
    """Score each stride step by the mean of the windows covering it, weighted by overlap.

    ``scores`` is (windows, classes); the result is (steps, classes) with
    ``steps = ceil(values_count / step)``. Every step is covered by at least one window.
    """
    n_steps = math.ceil(values_count / step)
    sums = np.zeros((n_steps, scores.shape[1]), dtype=np.float64)
    weights = np.zeros(n_steps, dtype=np.float64)
    for window, row in zip(windows, scores):
        for k in range(window.start_ix // step, math.ceil(window.stop_ix / step)):
            overlap = min(window.stop_ix, (k + 1) * step, values_count) - max(window.start_ix, k * step)
            if overlap > 0:
                sums[k] += overlap * row
                weights[k] += overlap
    return sums / weights[:, None]


def winning_specs(step_scores: np.ndarray, specs: Sequence[LabelSpec], settings: Settings) -> np.ndarray:
    """Per step, the index of the best-scoring spec at or above its threshold, or -1 (other)."""
    thresholds = np.array([settings.threshold(s) for s in specs])
    passing = np.where(step_scores >= thresholds, step_scores, -np.inf)
    best = passing.argmax(axis=1)
    return np.where(np.isfinite(passing[np.arange(len(best)), best]), best, -1)


def choose_labels(step_scores: np.ndarray, specs: Sequence[LabelSpec], settings: Settings) -> list[str]:
    """Per step: the best-scoring label of interest at or above its threshold, else other."""
    return [specs[w].output_label if w >= 0 else settings.other_label
            for w in winning_specs(step_scores, specs, settings)]


def steps_to_segments(labels: Sequence[str], step: int, values_count: int) -> list[Segment]:
    """Merge equal neighbouring steps into segments with inclusive ends covering 0..N-1."""
    segments: list[Segment] = []
    for k, label in enumerate(labels):
        start, end = k * step, min((k + 1) * step, values_count) - 1
        if segments and segments[-1].label == label:
            segments[-1] = Segment(segments[-1].start_ix, end, label)
        else:
            segments.append(Segment(start, end, label))
    return segments


@dataclass(frozen=True)
class Labeling:
    """What a sample's window scores became: segments, and the per-step evidence behind them."""

    segments: list[Segment]
    step: int  # stride step in sample indices
    step_scores: np.ndarray  # (steps, specs): mean score of each label of interest
    winners: np.ndarray  # (steps,): index of the winning spec, -1 for other


def class_index(names: Sequence[str]) -> dict[str, int]:
    """Column of each class by lowercased name (label matching is case-insensitive everywhere)."""
    return {name.lower(): i for i, name in enumerate(names)}


def label_sample(windows: Sequence[Window], class_scores: np.ndarray, values_count: int, step: int,
                 settings: Settings, index: dict[str, int]) -> Labeling:
    """From window scores over all classes (columns named by ``index``) to segments covering the sample."""
    columns = [index[s.model_label.lower()] for s in settings.specs]
    step_scores = aggregate_steps(windows, class_scores[:, columns], values_count, step)
    winners = winning_specs(step_scores, settings.specs, settings)
    labels = [settings.specs[w].output_label if w >= 0 else settings.other_label for w in winners]
    return Labeling(steps_to_segments(labels, step, values_count), step, step_scores, winners)


def confidence(labeling: Labeling, values_count: int) -> dict[str, str]:
    """Metadata to filter doubtful samples by: winning scores and the share of time labeled other."""
    lengths = np.minimum(labeling.step, values_count - labeling.step * np.arange(len(labeling.winners)))
    won = labeling.winners >= 0
    scores = labeling.step_scores[np.arange(len(won)), labeling.winners][won]
    other_share = float(lengths[~won].sum() / lengths.sum())
    return {
        "ast_confidence_mean": f"{float(np.average(scores, weights=lengths[won])):.3f}" if won.any() else "none",
        "ast_confidence_min": f"{float(scores.min()):.3f}" if won.any() else "none",
        "ast_other_share": f"{other_share:.3f}",
    }


def window_audio(audio_16k: np.ndarray, window: Window, frequency_hz: float) -> np.ndarray:
    """The 16 kHz slice (a view, not a copy) that a window of sample indices covers."""
    ratio = MODEL_RATE_HZ / frequency_hz
    start, stop = round(window.start_ix * ratio), round(window.stop_ix * ratio)
    return audio_16k[start : max(stop, start + 1)]


# ---------------------------------------------------------------------------------------------
# Audio decoding
# ---------------------------------------------------------------------------------------------


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a WAV file in memory to float32 mono; raise SampleError if it is not usable."""
    import soundfile

    if not data.startswith(b"RIFF"):
        raise SampleError(f"Studio did not return a WAV file ({_describe_bytes(data)})")
    try:
        audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises its own and RuntimeError variants
        raise SampleError(f"the WAV file is corrupt ({exc})") from None
    if audio.shape[0] == 0:
        raise SampleError("the WAV file holds no audio frames")
    return to_mono(audio), int(rate)


def to_mono(frames: np.ndarray) -> np.ndarray:
    """(frames, channels) to contiguous float32 mono: a view for one channel, the channel mean otherwise."""
    mono = frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _describe_bytes(data: bytes) -> str:
    if not data:
        return "empty response"
    head = data[:80].decode("utf-8", errors="replace").replace("\n", " ")
    return f"{len(data)} bytes starting {head!r}"


def resample_to_model_rate(audio: np.ndarray, rate_hz: int) -> np.ndarray:
    """Resample once per sample; windows are then views into the result."""
    if rate_hz == MODEL_RATE_HZ:
        return audio
    import librosa

    return librosa.resample(audio, orig_sr=rate_hz, target_sr=MODEL_RATE_HZ, res_type="soxr_hq").astype(
        np.float32, copy=False
    )


def encode_audio_16k(audio: np.ndarray) -> bytes:
    """A 16-bit mono FLAC file at the model rate for the remote protocol.

    Measured on 1 s windows (benchmarks/bench_throughput.py): FLAC is 31 % of the WAV size for a
    tone and 77 % for speech-band audio with noise (93 % for white noise) for ~0.2 ms more CPU, and
    every Hugging Face server decodes it (ffmpeg or libsndfile).
    """
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.clip(audio, -1.0, 1.0), MODEL_RATE_HZ, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Classifiers: one small interface, two backends
# ---------------------------------------------------------------------------------------------


class Classifier(Protocol):
    """Scores 16 kHz mono windows over ``class_names`` (sigmoid, multi-label)."""

    class_names: Sequence[str]
    preferred_batch: int  # windows per classify() call that keep the backend busy
    parallel_groups: int  # classify() calls that may run at once

    def classify(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Return float32 scores of shape (len(windows), len(class_names))."""
        ...


def _backoff_s(attempt: int) -> float:
    return min(HTTP_BACKOFF_MAX_S, HTTP_BACKOFF_BASE_S * 2**attempt)


def _retry_after_s(headers: dict, default: float) -> float:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


class AdaptiveLimit:
    """Caps requests in flight; halves the cap on a 429 and grows it back one step per cap's worth of successes.

    Additive increase, multiplicative decrease: a rate-limited endpoint sees the block back off
    instead of being hammered by ``--concurrency`` retries, and full speed returns once it recovers.
    """

    def __init__(self, maximum: int):
        self.maximum = self.limit = maximum
        self._in_flight = self._successes = 0
        self._cond = threading.Condition()

    def __enter__(self) -> AdaptiveLimit:
        with self._cond:
            while self._in_flight >= self.limit:
                self._cond.wait()
            self._in_flight += 1
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify()

    def throttled(self) -> None:
        with self._cond:
            self.limit, self._successes = max(1, self.limit // 2), 0

    def succeeded(self) -> None:
        with self._cond:
            self._successes += 1
            if self.limit < self.maximum and self._successes >= self.limit:
                self.limit, self._successes = self.limit + 1, 0
                self._cond.notify()


class RemoteClassifier:
    """Posts each window to an endpoint that speaks the Hugging Face audio-classification protocol."""

    def __init__(self, url: str, token: str | None, class_names: Sequence[str], concurrency: int,
                 max_wait_s: float):
        import requests
        from requests.adapters import HTTPAdapter

        self.url = url
        self.class_names = list(class_names)
        self._index = class_index(self.class_names)
        self._max_wait_s = max_wait_s
        self._session = requests.Session()
        # Retries are ours (they need to read HF's "loading" bodies); the adapter only pools.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=concurrency, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.trust_env = False
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._pool = cf.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="infer")
        self._limit = AdaptiveLimit(concurrency)
        # Windows of several samples are in flight together, and further groups queue behind the
        # current one so the endpoint never waits for a group's slowest request.
        self.preferred_batch, self.parallel_groups = concurrency, 3
        self._unavailable: str | None = None

    def classify(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        futures = [self._pool.submit(self._classify_one, w) for w in windows]
        rows = [f.result() for f in futures]
        return np.stack(rows) if rows else np.zeros((0, len(self.class_names)), np.float32)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()

    def _body(self, window: np.ndarray) -> bytes:
        if len(window) < FBANK_FRAME_LEN:  # servers reject audio shorter than one 25 ms frame
            window = np.pad(window, (0, FBANK_FRAME_LEN - len(window)))
        return json.dumps({
            "inputs": base64.b64encode(encode_audio_16k(window)).decode("ascii"),
            "parameters": {"top_k": len(self.class_names), "function_to_apply": "sigmoid"},
        }).encode()

    def _classify_one(self, window: np.ndarray) -> np.ndarray:
        import requests

        if self._unavailable:
            raise FatalInferenceError(self._unavailable)
        body = self._body(window)
        deadline = time.monotonic() + self._max_wait_s
        failures, problem = 0, "no attempt made"
        while failures < HTTP_MAX_ATTEMPTS:
            try:
                with self._limit:
                    resp = self._session.post(self.url, data=body, headers=self._headers,
                                              timeout=(HTTP_CONNECT_TIMEOUT_S, HTTP_READ_TIMEOUT_S),
                                              allow_redirects=False)
            except requests.RequestException as exc:
                problem, wait, loading = f"connection failed ({type(exc).__name__})", _backoff_s(failures), False
            else:
                if resp.status_code == 200:
                    self._limit.succeeded()
                    return self._parse_scores(resp)
                if resp.status_code == 429:
                    self._limit.throttled()
                problem, wait, loading = self._problem(resp, failures)
            failures += 0 if loading else 1  # a loading model is not failing; the deadline bounds it
            if time.monotonic() + wait > deadline:
                if loading:
                    self._unavailable = (f"the inference endpoint {self.url} was still loading the model after "
                                         f"{self._max_wait_s:g} s; try again later or raise --max-wait-s")
                    raise FatalInferenceError(self._unavailable)
                break
            time.sleep(wait)
        raise InferenceError(f"inference failed after {failures} attempts: {problem}")

    def _problem(self, resp, failures: int) -> tuple[str, float, bool]:
        """Describe a non-200 answer: (problem, seconds to wait, still loading); raise if retrying is pointless."""
        status, message = resp.status_code, _error_message(resp)
        if status in (401, 403):
            raise AuthError(f"the inference endpoint rejected the token (HTTP {status}: {message}); "
                            f"set HF_TOKEN (or HF_API_KEY) to a token that may call {self.url}")
        if status in (301, 302, 303, 307, 308):
            raise ConfigError(f"the inference endpoint {self.url} redirects (HTTP {status}); "
                              "set --inference-url to the final URL (tokens are never sent to a redirect)")
        if status in (404, 405, 410):
            raise ConfigError(f"the inference endpoint {self.url} answered HTTP {status} ({message}); "
                              "check --inference-url")
        estimate = _loading_estimate(resp) if status == 503 else None
        if estimate is not None:
            return f"model loading ({message})", min(max(estimate, 1.0), HTTP_BACKOFF_MAX_S), True
        if status == 429:
            return f"rate limited (HTTP 429: {message})", _retry_after_s(resp.headers, _backoff_s(failures)), False
        if status >= 500:
            return f"HTTP {status}: {message}", _retry_after_s(resp.headers, _backoff_s(failures)), False
        raise InferenceError(f"the inference endpoint refused the audio (HTTP {status}: {message})")

    def _parse_scores(self, resp) -> np.ndarray:
        try:
            items = resp.json()
            pairs = [(str(item["label"]), float(item["score"])) for item in items]
        except (ValueError, TypeError, KeyError) as exc:
            raise InferenceError(f"the inference endpoint returned an unexpected answer ({exc!r:.120})") from None
        row = np.zeros(len(self.class_names), dtype=np.float32)
        for label, score in pairs:
            ix = self._index.get(label.lower())
            if ix is not None:
                row[ix] = score
        return row


def _error_message(resp) -> str:
    try:
        error = resp.json().get("error", "")
        return str(error if not isinstance(error, list) else "; ".join(map(str, error)))[:200]
    except (ValueError, AttributeError):
        return (resp.text or resp.reason or "").strip().replace("\n", " ")[:200]


def _loading_estimate(resp) -> float | None:
    try:
        body = resp.json()
        return float(body["estimated_time"]) if "estimated_time" in body else None
    except (ValueError, AttributeError, TypeError, KeyError):
        return None


# AST input: Kaldi-style log-mel fbank, 25 ms frames every 10 ms, padded or cut to 1024 frames.
FBANK_FRAME_LEN = 400
FBANK_HOP = 160
FBANK_FFT = 512
FBANK_PREEMPHASIS = 0.97
FBANK_MEL_FLOOR = 1.192092955078125e-07
DTYPES = ("auto", "float32", "bfloat16", "float16")


class TorchFbank:
    """ASTFeatureExtractor's features for a whole batch at once, with torch on the model's device.

    The reference extractor loops over frames in numpy (about 10 ms per window on a CPU); this
    computes the same values (same window, mel filters, pre-emphasis, padding and normalisation)
    as a few batched tensor ops, so features never bottleneck a GPU.
    """

    def __init__(self, extractor, device):
        import torch

        self.max_frames = int(extractor.max_length)
        self.mean, self.std = float(extractor.mean), float(extractor.std)
        self.do_normalize = bool(getattr(extractor, "do_normalize", True))
        mel = getattr(extractor, "mel_filters", None)
        window = getattr(extractor, "window", None)
        if mel is None or window is None:  # torchaudio installed: the extractor keeps no tables
            from transformers.audio_utils import mel_filter_bank, window_function

            mel = mel_filter_bank(num_frequency_bins=FBANK_FFT // 2 + 1, num_mel_filters=extractor.num_mel_bins,
                                  min_frequency=20, max_frequency=extractor.sampling_rate // 2,
                                  sampling_rate=extractor.sampling_rate, norm=None, mel_scale="kaldi",
                                  triangularize_in_mel_space=True)
            window = window_function(FBANK_FRAME_LEN, "hann", periodic=False)
        self.mel = torch.as_tensor(mel, dtype=torch.float32, device=device)
        self.window = torch.as_tensor(window, dtype=torch.float32, device=device)
        self.device = device

    def max_samples(self) -> int:
        return FBANK_FRAME_LEN + (self.max_frames - 1) * FBANK_HOP

    def __call__(self, windows: Sequence[np.ndarray]):
        """(B, max_frames, mel bins) float32 features for 16 kHz mono windows of any lengths."""
        import torch

        limit = self.max_samples()
        lengths = [min(len(w), limit) for w in windows]
        width = max(max(lengths), FBANK_FRAME_LEN)
        audio = np.zeros((len(windows), width), dtype=np.float32)
        for row, (w, n) in enumerate(zip(windows, lengths)):
            audio[row, :n] = w[:n]
        frames = torch.from_numpy(audio).to(self.device).unfold(1, FBANK_FRAME_LEN, FBANK_HOP)
        frames = frames - frames.mean(dim=2, keepdim=True)
        frames = torch.cat([frames[..., :1] * (1 - FBANK_PREEMPHASIS),
                            frames[..., 1:] - FBANK_PREEMPHASIS * frames[..., :-1]], dim=2) * self.window
        power = torch.fft.rfft(frames, n=FBANK_FFT).abs().square()
        fbank = torch.clamp(power @ self.mel, min=FBANK_MEL_FLOOR).log()
        n_frames = torch.tensor([max(0, 1 + (n - FBANK_FRAME_LEN) // FBANK_HOP) for n in lengths], device=self.device)
        valid = torch.arange(fbank.shape[1], device=self.device)[None, :] < n_frames[:, None]
        fbank = fbank * valid[..., None]  # frames past a window's end are zero, as the extractor pads
        fbank = torch.nn.functional.pad(fbank, (0, 0, 0, max(0, self.max_frames - fbank.shape[1])))
        fbank = fbank[:, : self.max_frames]
        return (fbank - self.mean) / (2 * self.std) if self.do_normalize else fbank


def available_cpus() -> int:
    """CPUs this process may use: affinity, capped by a cgroup CPU quota (containers)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX, where bf16 matmuls run faster than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = fh.read()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, str]:
    """Pick the device and precision: CUDA when present; bf16 where the hardware runs it natively."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch; use --device cpu or install the CUDA build")
    if dtype == "auto":
        if device == "cuda":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype = "bfloat16" if cpu_has_native_bf16() else "float32"
    if dtype == "float16" and device == "cpu":
        raise ConfigError("--dtype float16 is for GPUs; on a CPU use float32 or bfloat16")
    return device, dtype


class LocalClassifier:
    """AST in-process with transformers: batched, inference mode, sigmoid over every class."""

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", batch_size: int = 0,
                 threads: int = 0):
        import torch

        torch.set_num_threads(threads or available_cpus())
        self.device, self.dtype_name = resolve_device_dtype(device, dtype)
        self._torch_dtype = getattr(torch, self.dtype_name)
        started = time.monotonic()
        self._extractor, self._model = _load_model(model, self._torch_dtype, self.device)
        id2label = self._model.config.id2label
        self.class_names = [id2label[i] for i in range(len(id2label))]
        self.batch_size = batch_size or (64 if self.device == "cuda" else 8)
        self.preferred_batch, self.parallel_groups = self.batch_size, 1  # torch already uses every core
        self._fbank = TorchFbank(self._extractor, self.device)
        self.classify([np.zeros(MODEL_RATE_HZ, dtype=np.float32)])  # first call allocates; keep it out of labeling
        self.load_s = time.monotonic() - started

    def classify(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        out = np.zeros((len(windows), len(self.class_names)), dtype=np.float32)
        for start in range(0, len(windows), self.batch_size):
            batch = windows[start : start + self.batch_size]
            with torch.inference_mode():
                features = self._fbank(batch).to(self._torch_dtype)
                logits = self._model(input_values=features).logits
                out[start : start + len(batch)] = logits.float().sigmoid().cpu().numpy()
        return out

    def close(self) -> None:
        pass


def _load_model(model: str, dtype, device: str):
    """Load the feature extractor and model; every failure becomes a one-line ConfigError."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # carriage-return bars garble Studio's job log
    looks_local = model.startswith((".", "/", "~")) or os.path.isdir(model)
    if looks_local and not os.path.isdir(os.path.expanduser(model)):
        raise ConfigError(f"--model {model}: no such folder; give a model folder or a Hugging Face model id")
    path = os.path.expanduser(model) if looks_local else model
    try:
        with warnings.catch_warnings():  # the reference mel table has empty filters by design
            warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
            extractor = AutoFeatureExtractor.from_pretrained(path)
        network = AutoModelForAudioClassification.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        offline = " (HF_HUB_OFFLINE is set: the model must already be in the hub cache)" if \
            os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") and not looks_local else ""
        first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--model {model}: cannot load it as an audio classifier{offline}: {first_line}") from None
    if not getattr(network.config, "id2label", None) or not hasattr(extractor, "max_length"):
        raise ConfigError(f"--model {model}: not an AST-style audio classifier (no labels or no fbank extractor)")
    return extractor, network.to(device).eval()


def fetch_model_labels(model: str, hf_endpoint: str, token: str | None) -> list[str] | None:
    """The model's id2label from its config.json on the hub (or a local folder); None if unreadable."""
    import requests

    try:
        if os.path.isdir(model):
            with open(os.path.join(model, "config.json"), encoding="utf-8") as fh:
                config = json.load(fh)
        else:
            url = f"{hf_endpoint.rstrip('/')}/{model}/resolve/main/config.json"
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            with requests.Session() as session:
                session.trust_env = False
                # The hub may redirect to a CDN; requests drops Authorization when the host changes.
                resp = session.get(url, headers=headers, timeout=(HTTP_CONNECT_TIMEOUT_S, 30.0))
            resp.raise_for_status()
            config = resp.json()
        id2label = config["id2label"]
        return [id2label[k] for k in sorted(id2label, key=int)]
    except (OSError, ValueError, KeyError, TypeError, requests.RequestException) as exc:
        log(f"WARNING: could not read the label list of {model} ({type(exc).__name__}); "
            "labels are not validated before the run")
        return None


# ---------------------------------------------------------------------------------------------
# Studio adapter
# ---------------------------------------------------------------------------------------------


class Studio:
    """The few Studio calls this block makes, with retries, timeouts and named errors."""

    def __init__(self, endpoint: str, api_key: str, project_id: int | None):
        import urllib3
        import edgeimpulse_api as ei

        config = ei.Configuration(host=endpoint, api_key={"ApiKeyAuthentication": api_key})
        # Every write here is a "set" (idempotent), so retrying POSTs is safe.
        config.retries = urllib3.Retry(
            total=STUDIO_RETRIES, connect=STUDIO_RETRIES, read=STUDIO_RETRIES, backoff_factor=0.5,
            backoff_max=HTTP_BACKOFF_MAX_S, status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=None, respect_retry_after_header=True, raise_on_status=False,
            # Studio may redirect downloads to storage: the key must not follow to another host.
            remove_headers_on_redirect=["Authorization", "Cookie", "Proxy-Authorization", "x-api-key"],
        )
        self._ei = ei
        self._client = ei.ApiClient(config)
        self._raw = ei.RawDataApi(self._client)
        self.project_id = self._resolve_project(project_id)

    def _resolve_project(self, project_id: int | None) -> int:
        try:
            projects = self._call(lambda: self._ei.ProjectsApi(self._client).list_projects(
                _request_timeout=STUDIO_TIMEOUT_S), "listing projects").projects or []
        except SampleError as exc:  # before any sample: Studio itself is unusable
            raise ConfigError(f"{exc}; check EI_API_ENDPOINT") from None
        if project_id is not None:
            return project_id
        if not projects:
            raise ConfigError("the Studio API key gives access to no project; use a project API key")
        return int(projects[0].id)

    def read_sample(self, sample_id: int, job_id: int | None) -> SampleInfo:
        resp = self._call(lambda: self._raw.get_sample(
            self.project_id, sample_id, limit_payload_values=1, proposed_actions_job_id=job_id,
            _request_timeout=STUDIO_TIMEOUT_S), f"reading sample {sample_id}")
        sample = resp.sample
        axes = [s for s in (sample.sensors or []) if (s.units or "").lower() == "wav"]
        if not axes:
            units = ", ".join(f"{s.name} ({s.units})" for s in sample.sensors or []) or "none"
            raise SampleError(f"not an audio sample (its axes are: {units})")
        if not sample.frequency or not sample.values_count:
            raise SampleError("the sample has no audio values (frequency or valuesCount is 0)")
        return SampleInfo(int(sample.id or sample_id), sample.filename or str(sample_id), float(sample.frequency),
                          int(sample.values_count), int(axes[0].index), dict(sample.metadata or {}))

    def download_wav(self, info: SampleInfo) -> bytes:
        resp = self._call(lambda: self._raw.get_sample_as_audio(
            self.project_id, info.sample_id, axis_ix=info.axis_ix, _preload_content=False,
            _request_timeout=STUDIO_TIMEOUT_S), f"downloading sample {info.sample_id}")
        return resp.data

    def set_labels(self, sample_id: int, segments: Sequence[Segment]) -> None:
        request = self._ei.SetSampleStructuredLabelsRequest.from_dict(
            {"structuredLabels": [_segment_json(s) for s in segments]})
        self._call(lambda: self._raw.set_sample_structured_labels(
            self.project_id, sample_id, request, _request_timeout=STUDIO_TIMEOUT_S),
            f"writing labels of sample {sample_id}")

    def set_metadata(self, sample_id: int, metadata: dict[str, str]) -> None:
        request = self._ei.SetSampleMetadataRequest.from_dict({"metadata": metadata})
        self._call(lambda: self._raw.set_sample_metadata(
            self.project_id, sample_id, request, _request_timeout=STUDIO_TIMEOUT_S),
            f"writing metadata of sample {sample_id}")

    def propose(self, sample_id: int, job_id: int, changes: dict) -> None:
        request = self._ei.SetSampleProposedChangesRequest.from_dict({"jobId": job_id, "proposedChanges": changes})
        self._call(lambda: self._raw.set_sample_proposed_changes(
            self.project_id, sample_id, request, _request_timeout=STUDIO_TIMEOUT_S),
            f"proposing changes for sample {sample_id}")

    def _call(self, fn: Callable, what: str):
        """Run one client call; HTTP-level retries are urllib3's, transient refusals are retried here."""
        for attempt in range(STUDIO_RETRIES + 1):
            try:
                return self._call_once(fn, what)
            except TransientStudioError as exc:
                if attempt == STUDIO_RETRIES:
                    raise SampleError(str(exc)) from None
                time.sleep(_backoff_s(attempt))
        raise AssertionError("unreachable")

    def _call_once(self, fn: Callable, what: str):
        import urllib3

        exceptions = self._ei.exceptions
        try:
            return fn()
        except (exceptions.UnauthorizedException, exceptions.ForbiddenException) as exc:
            raise AuthError(f"Studio rejected EI_PROJECT_API_KEY while {what} (HTTP {exc.status}); "
                            "use the project's API key (Dashboard > Keys)") from None
        except exceptions.ApiException as exc:
            raise SampleError(f"Studio failed while {what} (HTTP {exc.status} {exc.reason})") from None
        except urllib3.exceptions.HTTPError as exc:
            raise SampleError(f"could not reach Studio while {what} ({type(exc).__name__})") from None
        except (KeyError, TypeError) as exc:
            raise SampleError(f"Studio sent an unexpected answer while {what} ({exc!r:.80})") from None
        except Exception as exc:  # the client raises a plain Exception for {"success": false}
            message = f"Studio refused {what}: {str(exc)[:200]}"
            if _TRANSIENT_STUDIO_RE.search(str(exc)):
                raise TransientStudioError(message) from None
            raise SampleError(message) from None


# Studio answers most failures as 200 {"success": false}; these words mark the ones worth retrying.
_TRANSIENT_STUDIO_RE = re.compile(r"try again|timed? ?out|temporar|too many requests|rate limit|unavailable|busy",
                                  re.IGNORECASE)


class TransientStudioError(Exception):
    """A Studio refusal that a retry may fix."""


def _segment_json(segment: Segment) -> dict:
    return {"startIndex": segment.start_ix, "endIndex": segment.end_ix, "label": segment.label}


STATUS_KEY, SETTINGS_KEY = "ast_status", "ast_settings"
STATUS_LABELING, STATUS_DONE = "labeling", "done"


def block_metadata(existing: dict[str, str], settings: Settings, status: str) -> dict[str, str]:
    """The sample's metadata plus this block's keys (Studio replaces the whole map)."""
    return {
        **existing,
        "labeled_by": BLOCK_NAME,
        "ast_model": settings.model,
        "ast_labels": "; ".join(s.output_label for s in settings.specs),
        SETTINGS_KEY: settings.fingerprint(),
        STATUS_KEY: status,
    }


def already_labeled(metadata: dict[str, str], settings: Settings) -> bool:
    """True when a finished run with the same settings labeled this sample (manual edits since are kept)."""
    return metadata.get(STATUS_KEY) == STATUS_DONE and metadata.get(SETTINGS_KEY) == settings.fingerprint()


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------


_log_lock = threading.Lock()


def log(message: str, stream=None) -> None:
    with _log_lock:
        print(message, file=stream or sys.stdout, flush=True)


class AlreadyLabeled(Exception):
    """The sample carries a finished labeling with the same settings: nothing to do."""

    def __init__(self, info: SampleInfo):
        super().__init__(info.name)
        self.info = info


def load_sample(studio: Studio, sample_id: int, job_id: int | None, skip_done: Settings | None = None) -> LoadedSample:
    """Read, download and decode one sample; with ``skip_done``, stop early if it is already labeled."""
    info = studio.read_sample(sample_id, job_id)
    if skip_done is not None and already_labeled(info.metadata, skip_done):
        raise AlreadyLabeled(info)
    audio, rate_hz = decode_wav(studio.download_wav(info))
    expected_s, got_s = info.values_count / info.frequency_hz, len(audio) / rate_hz
    if abs(expected_s - got_s) > max(0.05, 0.01 * expected_s):
        log(f"WARNING: sample {sample_id}: Studio says {expected_s:.2f} s but the WAV holds {got_s:.2f} s; "
            "labels follow Studio's length")
    return LoadedSample(info, resample_to_model_rate(audio, rate_hz))


def prefetch(ids: Sequence[int], fetch: Callable[[int], LoadedSample], depth: int) -> Iterator[tuple[int, cf.Future]]:
    """Yield (id, future) in order while keeping at most ``depth`` downloads in flight."""
    with cf.ThreadPoolExecutor(max_workers=depth, thread_name_prefix="fetch") as pool:
        pending: list[tuple[int, cf.Future]] = []
        for sample_id in ids:
            pending.append((sample_id, pool.submit(fetch, sample_id)))
            if len(pending) >= depth:
                yield pending.pop(0)
        while pending:
            yield pending.pop(0)


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


class Target(Protocol):
    """Where samples come from and where their labels go: a Studio project or a folder of files."""

    verb: str  # how the log says labels were stored

    def load(self, key: int) -> LoadedSample: ...

    def write(self, info: SampleInfo, labeling: Labeling) -> None: ...

    def finish(self) -> None: ...


class Observer(Protocol):
    """Sees every labeled sample (reports, plots); never changes what is written."""

    def sample_labeled(self, planned: PlannedSample, scores: np.ndarray, labeling: Labeling) -> None: ...

    def finish(self) -> None: ...


def write_result(studio: Studio, info: SampleInfo, labeling: Labeling, settings: Settings,
                 job_id: int | None) -> None:
    """Apply: mark the sample as being labeled, write the labels, then mark it done.

    Studio has no transaction, so the metadata brackets the labels: a run killed anywhere in
    between leaves status "labeling" (or older settings), and the next run relabels the sample.
    Preview: one propose-changes with labels and metadata together.
    """
    done = {**block_metadata(info.metadata, settings, STATUS_DONE), **confidence(labeling, info.values_count)}
    if job_id is not None:
        studio.propose(info.sample_id, job_id, {"structuredLabels": [_segment_json(s) for s in labeling.segments],
                                                "metadata": done})
        return
    studio.set_metadata(info.sample_id, block_metadata(info.metadata, settings, STATUS_LABELING))
    studio.set_labels(info.sample_id, labeling.segments)
    studio.set_metadata(info.sample_id, done)


class StudioTarget:
    """Samples read from and labels written to a Studio project."""

    def __init__(self, studio: Studio, job_id: int | None, settings: Settings, force: bool):
        self.studio, self.job_id, self.settings = studio, job_id, settings
        # Preview never skips: Studio shows only samples that got a proposal.
        self._skip_done = None if force or job_id is not None else settings
        self.verb = "proposed" if job_id is not None else "written"

    def load(self, sample_id: int) -> LoadedSample:
        return load_sample(self.studio, sample_id, self.job_id, self._skip_done)

    def write(self, info: SampleInfo, labeling: Labeling) -> None:
        write_result(self.studio, info, labeling, self.settings, self.job_id)

    def finish(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# Without Studio, and for review: a folder as the target, run reports, plots
# ---------------------------------------------------------------------------------------------

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


class FolderTarget:
    """Audio files in a folder, labeled without Studio; the labels go into an info.labels file.

    ``DIR/info.labels`` lists every file with multi-label segments in its own frame indices, so
    ``edge-impulse-uploader --info-file DIR/info.labels`` uploads the folder already labeled.
    """

    verb = "labeled"

    def __init__(self, root: str, settings: Settings, category: str = "split"):
        self.root, self.settings, self.category = root, settings, category
        self.files = sorted(
            os.path.relpath(os.path.join(folder, name), root)
            for folder, _, names in os.walk(root) for name in names if name.lower().endswith(AUDIO_SUFFIXES))
        if not self.files:
            raise ConfigError(f"--input-dir {root}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found")
        self._entries: dict[int, dict] = {}
        self._lock = threading.Lock()

    def keys(self) -> list[int]:
        return list(range(1, len(self.files) + 1))

    def load(self, key: int) -> LoadedSample:
        import soundfile

        path = self.files[key - 1]
        try:
            audio, rate = soundfile.read(os.path.join(self.root, path), dtype="float32", always_2d=True)
        except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
            raise SampleError(f"{path}: cannot decode it ({exc})") from None
        if audio.shape[0] == 0:
            raise SampleError(f"{path}: the file holds no audio frames")
        mono = to_mono(audio)
        info = SampleInfo(key, path, float(rate), len(mono), 0, {})
        return LoadedSample(info, resample_to_model_rate(mono, int(rate)))

    def write(self, info: SampleInfo, labeling: Labeling) -> None:
        entry = {"path": info.name, "name": os.path.splitext(os.path.basename(info.name))[0],
                 "category": self.category,
                 "label": {"type": "multi-label", "labels": [_segment_json(s) for s in labeling.segments]},
                 "metadata": {**block_metadata({}, self.settings, STATUS_DONE),
                              **confidence(labeling, info.values_count)},
                 "boundingBoxes": []}
        with self._lock:
            self._entries[info.sample_id] = entry

    def finish(self) -> None:
        """Write info.labels once, atomically, with every file that was labeled."""
        if not self._entries:
            return
        document = {"version": 1, "files": [self._entries[k] for k in sorted(self._entries)]}
        write_file_atomically(os.path.join(self.root, "info.labels"), json.dumps(document, indent=2))
        log(f"Wrote {os.path.join(self.root, 'info.labels')} ({len(self._entries)} files); upload with "
            f"edge-impulse-uploader --info-file {os.path.join(self.root, 'info.labels')}")


def write_file_atomically(path: str, text: str) -> None:
    """Write to a temporary name beside the file, then rename: readers never see half a file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _safe_name(info: SampleInfo) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(info.name)[0]).strip("_") or "sample"
    return f"{info.sample_id}_{stem}"[:120]


class Report:
    """--report-dir: per-window top scores, segments, per-label totals, and Audacity label files."""

    TOP_K = 5

    def __init__(self, folder: str, settings: Settings, class_names: Sequence[str]):
        self.folder, self.settings, self.class_names = folder, settings, list(class_names)
        index = class_index(self.class_names)
        self._interest = [(s.output_label, index[s.model_label.lower()]) for s in settings.specs]
        os.makedirs(os.path.join(folder, "audacity"), exist_ok=True)
        self._windows = open(os.path.join(folder, "windows.jsonl"), "w", encoding="utf-8")
        self._segments = open(os.path.join(folder, "segments.jsonl"), "w", encoding="utf-8")
        self._totals: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def sample_labeled(self, planned: PlannedSample, scores: np.ndarray, labeling: Labeling) -> None:
        info = planned.sample.info
        hz = info.frequency_hz
        lines = []
        for window, row in zip(planned.windows, scores):
            top = np.argsort(row)[::-1][: self.TOP_K]
            lines.append(json.dumps({
                "sample_id": info.sample_id, "name": info.name, "start_ix": window.start_ix,
                "end_ix": window.stop_ix - 1, "start_s": round(window.start_ix / hz, 4),
                "end_s": round(window.stop_ix / hz, 4),
                "top": [[self.class_names[i], round(float(row[i]), 4)] for i in top],
                "labels_of_interest": {label: round(float(row[column]), 4) for label, column in self._interest}}))
        segments = [{**_segment_json(seg), "start_s": round(seg.start_ix / hz, 4),
                     "end_s": round((seg.end_ix + 1) / hz, 4)} for seg in labeling.segments]
        audacity = "".join(f"{seg['start_s']:.4f}\t{seg['end_s']:.4f}\t{seg['label']}\n" for seg in segments)
        with self._lock:
            self._windows.write("\n".join(lines) + "\n")
            self._segments.write(json.dumps({"sample_id": info.sample_id, "name": info.name,
                                             "segments": segments, **confidence(labeling, info.values_count)}) + "\n")
            for seg in segments:
                total = self._totals.setdefault(seg["label"], {"segments": 0, "seconds": 0.0, "samples": set()})
                total["segments"] += 1
                total["seconds"] += seg["end_s"] - seg["start_s"]
                total["samples"].add(info.sample_id)
        with open(os.path.join(self.folder, "audacity", f"{_safe_name(info)}.txt"), "w", encoding="utf-8") as fh:
            fh.write(audacity)

    def finish(self) -> None:
        self._windows.close()
        self._segments.close()
        totals = {label: {"segments": t["segments"], "seconds": round(t["seconds"], 3), "samples": len(t["samples"])}
                  for label, t in sorted(self._totals.items())}
        write_file_atomically(os.path.join(self.folder, "label_totals.json"), json.dumps(totals, indent=2))


class Plotter:
    """--plot-dir: one PNG per sample: log-mel spectrogram with the segments as colored bands, and the
    score curves of the labels of interest against their thresholds."""

    def __init__(self, folder: str, settings: Settings):
        self.folder, self.settings = folder, settings
        os.makedirs(folder, exist_ok=True)
        names = [s.output_label for s in settings.specs] + [settings.other_label]
        palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]
        self.colors = {name: palette[i % len(palette)] for i, name in enumerate(dict.fromkeys(names))}
        self.colors[settings.other_label] = "#b0b0b0"

    def sample_labeled(self, planned: PlannedSample, scores: np.ndarray, labeling: Labeling) -> None:
        figure = self.figure(planned.sample, labeling)
        figure.savefig(os.path.join(self.folder, f"{_safe_name(planned.sample.info)}.png"), dpi=100)

    def figure(self, sample: LoadedSample, labeling: Labeling):
        """The figure for one sample (object-oriented matplotlib: safe off the main thread)."""
        import librosa
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch

        info, audio = sample.info, sample.audio_16k
        duration_s = info.values_count / info.frequency_hz
        hop = max(160, len(audio) // 2000)  # at most ~2000 columns, whatever the length
        mel = librosa.power_to_db(librosa.feature.melspectrogram(y=audio, sr=MODEL_RATE_HZ, n_mels=64,
                                                                 hop_length=hop, n_fft=max(400, hop)), ref=np.max)
        fig = Figure(figsize=(12, 5.5), layout="constrained")
        spec_ax, score_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
        spec_ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=(0, duration_s, 0, 64))
        spec_ax.set_ylabel("mel band")
        count = len(labeling.segments)
        spec_ax.set_title(f"{info.name} (sample {info.sample_id}): {count} segment{'s' * (count != 1)}")
        for seg in labeling.segments:
            start, end = seg.start_ix / info.frequency_hz, (seg.end_ix + 1) / info.frequency_hz
            spec_ax.axvspan(start, end, ymin=0.92, ymax=1.0, color=self.colors[seg.label], label="_band")
            score_ax.axvspan(start, end, color=self.colors[seg.label], alpha=0.12)
        step_s = labeling.step / info.frequency_hz
        times = np.append(np.arange(len(labeling.winners)) * step_s, duration_s)
        for k, spec in enumerate(self.settings.specs):
            color = self.colors[spec.output_label]
            curve = np.append(labeling.step_scores[:, k], labeling.step_scores[-1, k])
            score_ax.step(times, curve, where="post", color=color, lw=1.8, label=spec.output_label)
            score_ax.axhline(self.settings.threshold(spec), color=color, ls="--", lw=1)
        score_ax.set_ylim(0, 1)
        score_ax.set_xlim(0, duration_s)
        score_ax.set_xlabel("time (s)")
        score_ax.set_ylabel("score (dashed: threshold)")
        handles = [Patch(color=c, label=n) for n, c in self.colors.items()]
        fig.legend(handles=handles, loc="outside right upper", fontsize=9)
        return fig

    def finish(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# The pipeline: prefetched samples -> batched inference -> writers
# ---------------------------------------------------------------------------------------------


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
        self._queue: queue.Queue = queue.Queue(maxsize=WRITE_QUEUE_SAMPLES)
        self.outcomes: list[SampleOutcome] = []
        self.fatal: BlockError | None = None
        # One thread writes all of a sample's calls in order; several samples are written at once.
        self._threads = [threading.Thread(target=self._run, name=f"writer-{i}", daemon=True)
                         for i in range(WRITE_WORKERS)]
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
                self._target.write(info, labeling)
            except ConfigError as exc:
                self.fatal = exc
                self.outcomes.append(SampleOutcome(info.sample_id, info.name, False, str(exc)))
            except SampleError as exc:
                log(f"{prefix} ({info.name}): FAILED: {exc}")
                self.outcomes.append(SampleOutcome(info.sample_id, info.name, False, str(exc)))
            else:
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
        """Loaded samples in id order, gathered until their windows fill the backend's preferred batch."""
        group: list[PlannedSample] = []
        for position, (sample_id, future) in enumerate(prefetch(self.ids, self.target.load, PREFETCH_SAMPLES),
                                                       start=1):
            if self._stopped():
                future.cancel()
                self._fail(position, sample_id, "", "not labeled (run stopped)", quiet=True)
                continue
            planned = self._plan(position, sample_id, future)
            if planned is not None:
                group.append(planned)
            if sum(len(p.windows) for p in group) >= self.classifier.preferred_batch or \
                    len(group) >= MAX_GROUP_SAMPLES:
                yield group
                group = []
        if group:
            yield group

    def _plan(self, position: int, sample_id: int, future: cf.Future) -> PlannedSample | None:
        """Wait for a sample's download; record why it cannot be labeled if so."""
        try:
            return plan_sample(position, future.result(), self.settings, time.monotonic())
        except AlreadyLabeled as done:
            log(f"{self._prefix(position, sample_id)} ({done.info.name}): already labeled with these "
                "settings, skipped (--force relabels)")
            self.outcomes.append(SampleOutcome(sample_id, done.info.name, True, "skipped", skipped=True))
            self.progress.add(1, 0)
        except SampleError as exc:
            self._fail(position, sample_id, "", str(exc))
        except ConfigError as exc:
            self.fatal = self.fatal or exc
            self._fail(position, sample_id, "", str(exc), quiet=True)
        except Exception as exc:  # noqa: BLE001 - one odd sample must not end the run
            self._fail(position, sample_id, "", f"unexpected {type(exc).__name__}: {exc}")
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
        for p, sample_scores in zip(group, scores):
            self._label(p, sample_scores)

    def _label(self, planned: PlannedSample, scores: np.ndarray) -> None:
        info = planned.sample.info
        step = step_ix(info.values_count, info.frequency_hz, self.settings)
        labeling = label_sample(planned.windows, scores, info.values_count, step, self.settings, self.class_index)
        segments = labeling.segments
        for observer in self.observers:
            try:
                observer.sample_labeled(planned, scores, labeling)
            except Exception as exc:  # noqa: BLE001 - a report or plot problem must not lose the labels
                log(f"WARNING: sample {info.sample_id}: {type(observer).__name__} failed: {exc}")
        used = ", ".join(sorted({s.label for s in segments}))
        count = f"{len(planned.windows)} window{'s' * (len(planned.windows) != 1)}"
        prefix = self._prefix(planned.position, info.sample_id)
        summary = (f"{prefix} ({info.name}): {count} -> "
                   f"{len(segments)} segment{'s' * (len(segments) != 1)} [{used}] {self.target.verb}")
        self.writer.submit(info, labeling, prefix, summary, planned.started, len(planned.windows))

    def _fail_group(self, group: Sequence[PlannedSample], detail: str, quiet: bool = False) -> None:
        for p in group:
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


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _int_range(flag: str, low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            allowed = f"{low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{flag} {value} is out of range (allowed: {allowed})")
        return value
    return parse


def _float_range(flag: str, low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{flag} {value:g} is out of range (allowed: {low:g}..{high:g})")
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="transform.py", description="Label audio samples in Edge Impulse with AST.")
    p.add_argument("--data-ids-file", help="JSON file: [id, ...] or {\"ids\": [id, ...]} (Studio passes it)")
    p.add_argument("--input-dir", help="label the audio files in this folder instead of Studio samples; "
                                       "writes DIR/info.labels for edge-impulse-uploader")
    p.add_argument("--report-dir", help="write per-window scores, segments, label totals and Audacity labels here")
    p.add_argument("--plot-dir", help="write one PNG per sample here: spectrogram, segments and score curves")
    p.add_argument("--propose-actions", type=_int_range("--propose-actions", 1), metavar="JOB",
                   help="preview mode: propose changes for this AI Actions job instead of writing")
    p.add_argument("--audioset-labels", required=True,
                   help="one per line: 'Model label', 'Model label (new name)' or 'Model label (new name, 0.35)'")
    p.add_argument("--other-label", default="other", help="label for windows with no label of interest")
    p.add_argument("--win-size-ms", type=_int_range("--win-size-ms", 0, 3_600_000), default=DEFAULT_WIN_SIZE_MS,
                   help="window length in ms (0: the whole sample is one window)")
    p.add_argument("--win-stride-ms", type=_int_range("--win-stride-ms", 1, 3_600_000), default=None,
                   help="step between windows in ms (default: the window size)")
    p.add_argument("--min-confidence", type=_float_range("--min-confidence", 0.0, 1.0),
                   default=DEFAULT_MIN_CONFIDENCE, help="score a label of interest needs (0..1)")
    p.add_argument("--force", action="store_true",
                   help="relabel samples already labeled with the same settings (default: skip them)")
    p.add_argument("--backend", choices=("local", "remote"), default="local",
                   help="local: run the model in this process; remote: an endpoint speaking the HF inference protocol")
    p.add_argument("--model", default=DEFAULT_MODEL, help="Hugging Face model id or local model folder")
    p.add_argument("--inference-url", default=None,
                   help=f"full POST URL for --backend remote (default {DEFAULT_INFERENCE_URL})")
    p.add_argument("--concurrency", type=_int_range("--concurrency", 1, 256), default=DEFAULT_CONCURRENCY,
                   help="inference requests in flight (remote backend)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="local backend: where the model runs (auto: CUDA when present)")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="local backend precision (auto: bfloat16 on GPUs and CPUs with native bf16, else float32)")
    p.add_argument("--batch-size", type=_int_range("--batch-size", 0, 4096), default=0,
                   help="local backend: windows per forward pass (0: 64 on GPU, 8 on CPU)")
    p.add_argument("--threads", type=_int_range("--threads", 0, 1024), default=0,
                   help="local backend: torch CPU threads (0: the CPUs available to the container)")
    p.add_argument("--max-wait-s", type=_float_range("--max-wait-s", 1.0, 3600.0), default=DEFAULT_MAX_WAIT_S,
                   help="longest an inference request may wait on loading, rate limits and retries")
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        log(f"WARNING: ignoring unknown arguments: {' '.join(unknown)}")
    if bool(args.data_ids_file) == bool(args.input_dir):
        raise ConfigError("give --data-ids-file (samples in Studio) or --input-dir (audio files), not both or neither")
    if args.input_dir and args.propose_actions:
        raise ConfigError("--propose-actions is for Studio jobs; it cannot be used with --input-dir")
    if args.input_dir and not os.path.isdir(args.input_dir):
        raise ConfigError(f"--input-dir {args.input_dir}: no such folder")
    if args.win_stride_ms is None:
        args.win_stride_ms = args.win_size_ms or DEFAULT_WIN_SIZE_MS
    if args.win_size_ms and args.win_stride_ms > args.win_size_ms:
        raise ConfigError(f"--win-stride-ms {args.win_stride_ms} is larger than --win-size-ms "
                          f"{args.win_size_ms}; use a stride from 1 to the window size")
    if args.win_size_ms > MODEL_MAX_INPUT_MS:
        log(f"WARNING: --win-size-ms {args.win_size_ms} is longer than the model's {MODEL_MAX_INPUT_MS} ms input; "
            "the model only hears the first 10.24 s of each window")
    url = args.inference_url or DEFAULT_INFERENCE_URL.format(model=args.model)
    if not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(f"--inference-url {url!r} is not an http(s) URL")
    args.inference_url = url
    return args


def read_ids(path: str) -> list[int]:
    """Read ids.json: a bare array (what Studio writes) or {"ids": [...]} (what the docs show)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ConfigError(f"--data-ids-file {path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(f"--data-ids-file {path}: not valid JSON ({exc})") from None
    ids = data.get("ids") if isinstance(data, dict) else data
    if not isinstance(ids, list):
        raise ConfigError(f"--data-ids-file {path}: expected a JSON array of sample ids or {{\"ids\": [...]}}")
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, int) or i <= 0]
    if bad:
        raise ConfigError(f"--data-ids-file {path}: sample ids must be positive integers, got {bad[0]!r}")
    return list(dict.fromkeys(ids))  # a repeated id is labeled once


def env_settings(environ: dict[str, str]) -> tuple[str, str, int | None]:
    key = environ.get("EI_PROJECT_API_KEY", "").strip()
    if not key:
        raise ConfigError("EI_PROJECT_API_KEY is not set; set it to the project's API key (Dashboard > Keys)")
    endpoint = environ.get("EI_API_ENDPOINT", "").strip() or DEFAULT_EI_API_ENDPOINT
    if not re.match(r"^https?://", endpoint):
        raise ConfigError(f"EI_API_ENDPOINT {endpoint!r} is not an http(s) URL")
    project = environ.get("EI_PROJECT_ID", "").strip()
    if project and (not project.isdigit() or int(project) <= 0):
        raise ConfigError(f"EI_PROJECT_ID {project!r} is not a positive integer")
    return endpoint.rstrip("/"), key, int(project) if project else None


def build_classifier(args: argparse.Namespace, environ: dict[str, str]) -> tuple[Classifier, tuple[LabelSpec, ...]]:
    """Load or connect the backend and validate the labels against the model's own label list."""
    if args.backend == "local":
        classifier = LocalClassifier(args.model, args.device, args.dtype, args.batch_size, args.threads)
        log(f"Loaded {args.model} on {classifier.device} ({classifier.dtype_name}, batch {classifier.batch_size}) "
            f"in {classifier.load_s:.1f} s")
        return classifier, parse_label_specs(args.audioset_labels, classifier.class_names)
    token = environ.get("HF_TOKEN") or environ.get("HF_API_KEY")
    if not token:
        log("WARNING: neither HF_TOKEN nor HF_API_KEY is set; inference requests carry no Authorization header")
    labels = fetch_model_labels(args.model, environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT, token)
    specs = parse_label_specs(args.audioset_labels, labels)
    class_names = list(labels) if labels is not None else [s.model_label for s in specs]
    return RemoteClassifier(args.inference_url, token, class_names, args.concurrency, args.max_wait_s), specs


def build_classifier_and_settings(args: argparse.Namespace, environ: dict[str, str]) -> tuple[Classifier, Settings]:
    classifier, specs = build_classifier(args, environ)
    return classifier, Settings(specs, args.other_label.strip() or "other", args.win_size_ms, args.win_stride_ms,
                                args.min_confidence, args.model)


def build_observers(args: argparse.Namespace, settings: Settings, classifier: Classifier) -> list[Observer]:
    observers: list[Observer] = []
    try:
        if args.report_dir:
            observers.append(Report(args.report_dir, settings, classifier.class_names))
        if args.plot_dir:
            observers.append(Plotter(args.plot_dir, settings))
    except OSError as exc:
        raise ConfigError(f"cannot write to {exc.filename}: {exc.strerror}") from None
    return observers


def print_summary(outcomes: Sequence[SampleOutcome], elapsed_s: float) -> int:
    failed = [o for o in outcomes if not o.ok]
    skipped = sum(o.skipped for o in outcomes)
    skip_note = f" ({skipped} already labeled with these settings, skipped)" if skipped else ""
    log(f"Done: {len(outcomes) - len(failed)} of {len(outcomes)} samples labeled{skip_note} in {elapsed_s:.1f} s")
    for o in failed:
        log(f"  not labeled: sample {o.sample_id}{f' ({o.name})' if o.name else ''}: {o.detail}")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    started = time.monotonic()
    classifier = None
    try:
        args = parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.input_dir:
            classifier, settings = build_classifier_and_settings(args, environ)
            target: Target = FolderTarget(args.input_dir, settings)
            ids: list[int] = target.keys()
            where = f"files in {args.input_dir}"
        else:
            ids = read_ids(args.data_ids_file)
            studio = Studio(*env_settings(environ))
            classifier, settings = build_classifier_and_settings(args, environ)
            target = StudioTarget(studio, args.propose_actions, settings, args.force)
            mode = f"preview (job {args.propose_actions})" if args.propose_actions else "apply"
            where = f"samples of project {studio.project_id} in {mode} mode"
        log(f"Labeling {len(ids)} {where} with {args.model} ({args.backend}); labels: "
            f"{', '.join(s.output_label for s in settings.specs)}")
        outcomes = run(ids, target, classifier, settings, build_observers(args, settings, classifier))
        return print_summary(outcomes, time.monotonic() - started)
    except RunStopped as stop:
        log(f"ERROR: {stop.cause}", sys.stderr)
        print_summary(stop.outcomes, time.monotonic() - started)
        return EXIT_CONFIG if isinstance(stop.cause, ConfigError) else EXIT_SOME_FAILED
    except ConfigError as exc:
        log(f"ERROR: {exc}", sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        log("ERROR: interrupted", sys.stderr)
        return EXIT_SOME_FAILED
    finally:
        if classifier is not None:
            classifier.close()


if __name__ == "__main__":
    sys.exit(main())

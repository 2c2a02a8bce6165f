"""The remote backend: windows posted to an endpoint that speaks the Hugging Face
audio-classification protocol (dedicated Inference Endpoints, self-hosted servers), with
concurrency that backs off on 429, retries for loading models, starting endpoints and transient
failures, and the model's config.json (labels, score function) and preprocessor_config.json (how much
of a window it hears) read from the hub; the labels are learned from the endpoint's answer when unreadable.
A test request proves the endpoint honours the request's parameters; an answer missing classes is a failure.
The endpoint's token reaches the hub only when the endpoint is Hugging Face's own (``choose_tokens``).

May import: ``core``, ``audio``, ``timeline``, ``models``. ``requests`` is imported when a client is built.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from ..audio import MODEL_FRAME_SAMPLES, MODEL_RATE_HZ, encode_audio_16k
from ..core import (HTTP_BACKOFF_MAX_S, AdaptiveLimit, AuthError, ConfigError, FatalInferenceError, InferenceError,
                    backoff_s, retry_after_s)
from ..models import AST_INPUT, ModelInput
from ..timeline import class_index

DEFAULT_INFERENCE_URL = "https://router.huggingface.co/hf-inference/models/{model}"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_CONCURRENCY = 16  # hides a 100 ms round trip; a rate-limited endpoint makes the block back off
DEFAULT_MAX_WAIT_S = 300.0  # per inference request: loading, rate limits and retries together

HTTP_CONNECT_TIMEOUT_S = 10.0
HTTP_READ_TIMEOUT_S = 120.0
HUB_READ_TIMEOUT_S = 30.0  # a config file is small: a hub that takes longer is failing
CONFIG_FILE, EXTRACTOR_FILE = "config.json", "preprocessor_config.json"
UNREACHABLE = "hub unreachable"
HTTP_MAX_ATTEMPTS = 6
PREFLIGHT_WINDOW_S = 0.1  # the silent window sent once before any sample is read
CANCEL_POLL_S = 0.1  # how often a classify call waiting on its windows looks for cancel()
# Asked of the preflight when the hub's label list is unreadable: above any model's class count,
# so the answer lists every class (servers cap top_k at the model's classes).
LEARN_TOP_K = 10_000
# Sigmoid scores of this many classes or more that sum to 1 within the tolerance are softmax ones:
# the endpoint ignored function_to_apply (two sigmoid scores sum to 1 too easily to tell).
SOFTMAX_MIN_CLASSES = 3
SOFTMAX_SUM_TOLERANCE = 1e-3
# Hosts Hugging Face runs, each with its subdomains: the hub, its short domain, dedicated Inference
# Endpoints (*.endpoints.huggingface.cloud) and Spaces. Their token is a hub token.
HUGGING_FACE_DOMAINS = ("huggingface.co", "hf.co", "huggingface.cloud", "hf.space")
DEFAULT_PORTS = {"http": 80, "https": 443}
HUB_REFUSALS = (401, 403, 404)  # what the hub answers a private or gated model's file read without a token
HF_TOKEN_FIX = "set HF_TOKEN (or HF_API_KEY) to a token that may call {url}"
SERVER_TOKEN_FIX = "set HF_API_KEY to the server's token (or HF_TOKEN when only that is set)"
WITHHELD_HINT = ("; the endpoint's token is not sent to the hub: set HF_TOKEN to a hub token for a private or "
                 "gated model (and HF_API_KEY to the server's token)")
HONOUR_PARAMETERS = ("use an endpoint that honours the request's parameters top_k and function_to_apply "
                     "(a Hugging Face Inference Endpoint running transformers' audio-classification pipeline does)")


class LabelListUnavailable(Exception):
    """The model's label list could not be read from the hub or its folder (the message says why)."""


class RemoteClassifier:
    """Posts each window to an endpoint that speaks the Hugging Face audio-classification protocol."""

    def __init__(self, url: str, token: str | None, class_names: Sequence[str] | None, concurrency: int,
                 max_wait_s: float, score_function: str = "sigmoid", model_input: ModelInput = AST_INPUT,
                 hugging_face: bool = True):
        """``class_names`` None: learn them from the preflight's answer (the hub's list was unreadable).
        ``hugging_face`` False: the token is another server's (a rejected one is told to set HF_API_KEY)."""
        import requests
        from requests.adapters import HTTPAdapter

        self.url = url
        self._token_fix = (HF_TOKEN_FIX if hugging_face else SERVER_TOKEN_FIX).format(url=url)
        self.name = f"the inference endpoint {url}"
        self.class_names = list(class_names or ())
        self.score_function, self.model_input = score_function, model_input
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
        self._cancelled = threading.Event()  # the run is stopping: no new attempt, no more waiting
        # Until the endpoint answers once, a bare 503 is a scaled-to-zero endpoint starting, not a failure.
        self._answered = False

    def preflight(self) -> None:
        """Classify one short silent window before any sample is read.

        A missing or rejected token, a wrong URL or a redirect stops the run here (ConfigError,
        from ``_problem``); a model that is loading or an endpoint that is starting is waited for,
        up to --max-wait-s; an endpoint that accepts requests without a token passes without one.
        Without a class list, the answer's labels become it.
        An endpoint that ignores the request's parameters (top_k, function_to_apply) stops it too:
        with the hub's list every class must be in the answer; a learned list is checked with one
        more request asking for a single class; and sigmoid scores must not sum to 1 like softmax.
        """
        learn = not self.class_names
        pairs = self._test_request(LEARN_TOP_K if learn else len(self.class_names))
        if learn:
            learned: dict[str, str] = {}  # case-insensitive, as answers are matched: one column per class
            for label, _ in pairs:
                learned.setdefault(label.lower(), label)
            names = list(learned.values())
            if not names:
                raise ConfigError(f"{self.name} answered a test request with no classes; check --inference-url")
            self.class_names, self._index = names, class_index(names)
            self._check_top_k_honoured()
        else:
            self._check_every_class(pairs)
        if self.score_function == "sigmoid":
            self._check_sigmoid(pairs)

    def _test_request(self, top_k: int) -> list[tuple[str, float]]:
        silent = np.zeros(round(PREFLIGHT_WINDOW_S * MODEL_RATE_HZ), dtype=np.float32)
        try:
            return self._request(silent, top_k)
        except (InferenceError, FatalInferenceError) as exc:
            raise ConfigError(f"{self.name} failed a test request before any sample was read ({exc}); "
                              "check --inference-url and that the endpoint is running") from None

    def _check_every_class(self, pairs: list[tuple[str, float]]) -> None:
        """Every class of the hub's list must be in an answer that asked for all of them."""
        found, total = len(self._columns(pairs)), len(self._index)
        if found == total:
            return
        unknown = list(dict.fromkeys(label for label, _ in pairs if label.lower() not in self._index))
        asked = (f"{self.name} answered {found} of the model's {total} classes to a test request asking for all "
                 f"of them (top_k {len(self.class_names)})")
        if unknown:
            raise ConfigError(f"{asked}, and {len(unknown)} classes the model does not have (e.g. {unknown[0]!r}): "
                              "it runs another model; point --inference-url at an endpoint that runs --model")
        raise ConfigError(f"{asked}: it ignores the request's parameters or caps top_k at {len(pairs)}; "
                          f"{HONOUR_PARAMETERS}")

    def _check_top_k_honoured(self) -> None:
        """A learned list cannot show a missing class: ask for one class and count what comes back."""
        answered = len(self._test_request(1))
        if answered > 1:
            raise ConfigError(f"{self.name} answered {answered} classes to a test request asking for 1 (top_k 1): "
                              f"it ignores the request's parameters; {HONOUR_PARAMETERS}")

    def _check_sigmoid(self, pairs: list[tuple[str, float]]) -> None:
        scores = list(self._columns(pairs).values())  # the model's classes: extra ones may be anything
        total = sum(scores)
        if len(scores) >= SOFTMAX_MIN_CLASSES and abs(total - 1.0) <= SOFTMAX_SUM_TOLERANCE:
            raise ConfigError(f"{self.name} answered a test request asking for sigmoid scores with {len(scores)} "
                              f"scores that sum to {total:.4f}, like softmax: it ignores function_to_apply; "
                              f"{HONOUR_PARAMETERS}")

    def classify(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Scores of every window; waits for all of them, then names the ones that failed.

        InferenceError carries ``failed`` (indices) and the rows of the rest; errors that no retry
        mends (FatalInferenceError, ConfigError, AuthError) propagate, cancelling windows not yet sent.
        """
        futures = [self._pool.submit(self._classify_one, w) for w in windows]
        rows = np.zeros((len(windows), len(self.class_names)), np.float32)
        failed: list[int] = []
        problem = ""
        try:
            for ix, future in enumerate(futures):
                # A cancelled run must not wait out a hanging request (up to the 120 s read timeout).
                while not cf.wait([future], timeout=CANCEL_POLL_S).done:
                    if self._cancelled.is_set():
                        raise FatalInferenceError(self._unavailable or "not classified (run stopped)")
                try:
                    rows[ix] = future.result()
                except InferenceError as exc:
                    failed.append(ix)
                    problem = problem or str(exc)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        if failed:
            # ``failed`` says which windows: the pipeline counts them per sample in its message
            raise InferenceError(problem, failed, rows if len(failed) < len(windows) else None)
        return rows

    def cancel(self) -> None:
        """Windows still queued or between retries give up at once (a dead endpoint would cost each ~16 s)."""
        self._unavailable = self._unavailable or "not classified (run stopped)"
        self._cancelled.set()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()

    def _body(self, window: np.ndarray, top_k: int) -> bytes:
        window = window[: self.model_input.heard_samples]  # the model never hears the rest: do not upload it
        if len(window) < MODEL_FRAME_SAMPLES:  # servers reject audio shorter than one 25 ms frame
            window = np.pad(window, (0, MODEL_FRAME_SAMPLES - len(window)))
        return json.dumps({
            "inputs": base64.b64encode(encode_audio_16k(window)).decode("ascii"),
            "parameters": {"top_k": top_k, "function_to_apply": self.score_function},
        }).encode()

    def _classify_one(self, window: np.ndarray) -> np.ndarray:
        """One window's scores; an answer missing classes fails the window (a missing class is not a 0)."""
        row = np.zeros(len(self.class_names), dtype=np.float32)
        pairs = self._request(window, len(self.class_names))
        columns = self._columns(pairs)
        if len(columns) < len(self._index):
            raise InferenceError(f"the inference endpoint answered {len(columns)} of {len(self._index)} classes to "
                                 f"a request asking for all of them (top_k {len(self.class_names)})")
        for ix, score in columns.items():
            row[ix] = score
        return row

    def _columns(self, pairs: list[tuple[str, float]]) -> dict[int, float]:
        """The answer's scores by column; classes the model does not have are ignored."""
        columns: dict[int, float] = {}
        for label, score in pairs:
            ix = self._index.get(label.lower())
            if ix is not None:
                columns.setdefault(ix, score)
        return columns

    def _request(self, window: np.ndarray, top_k: int) -> list[tuple[str, float]]:
        """POST one window until it is answered: the (label, score) pairs of the answer."""
        import requests

        if self._unavailable:
            raise FatalInferenceError(self._unavailable)
        body = self._body(window, top_k)
        deadline = time.monotonic() + self._max_wait_s
        failures, polls, problem = 0, 0, "no attempt made"
        while failures < HTTP_MAX_ATTEMPTS:
            if self._cancelled.is_set():
                raise FatalInferenceError(self._unavailable or "not classified (run stopped)")
            try:
                with self._limit:
                    resp = self._session.post(self.url, data=body, headers=self._headers,
                                              timeout=(HTTP_CONNECT_TIMEOUT_S, HTTP_READ_TIMEOUT_S),
                                              allow_redirects=False)
            except requests.RequestException as exc:
                problem, wait, loading = f"connection failed ({type(exc).__name__})", backoff_s(failures), False
            else:
                if resp.status_code == 200:
                    self._answered = True
                    self._limit.succeeded()
                    return _parse_pairs(resp)
                if resp.status_code == 429:
                    self._limit.throttled()
                problem, wait, loading = self._problem(resp, failures, polls)
            failures += 0 if loading else 1  # a loading model is not failing; the deadline bounds it
            polls += loading
            if time.monotonic() + wait > deadline:
                if loading:
                    self._unavailable = (f"{self.name} was still loading the model after {self._max_wait_s:g} s "
                                         f"({problem}); try again later or raise --max-wait-s")
                    raise FatalInferenceError(self._unavailable)
                break
            self._cancelled.wait(wait)
        raise InferenceError(f"inference failed after {failures} attempts: {problem}")

    def _problem(self, resp, failures: int, polls: int) -> tuple[str, float, bool]:
        """Describe a non-200 answer: (problem, seconds to wait, still loading); raise if retrying is pointless.

        ``failures`` and ``polls`` count this request's earlier failed and loading answers.
        """
        status, message = resp.status_code, _error_message(resp)
        if status in (401, 403):
            what = "the token" if "Authorization" in self._headers else "a request without a token"
            raise AuthError(f"the inference endpoint rejected {what} (HTTP {status}: {message}); {self._token_fix}")
        if status in (301, 302, 303, 307, 308):
            raise ConfigError(f"the inference endpoint {self.url} redirects (HTTP {status}); "
                              "set --inference-url to the final URL (tokens are never sent to a redirect)")
        if status in (404, 405, 410):
            raise ConfigError(f"the inference endpoint {self.url} answered HTTP {status} ({message}); "
                              "check --inference-url")
        estimate = _loading_estimate(resp) if status == 503 else None
        if estimate is not None:
            return f"model loading ({message})", min(max(estimate, 1.0), HTTP_BACKOFF_MAX_S), True
        if status == 503 and not self._answered:
            return f"endpoint starting (HTTP 503: {message})", retry_after_s(resp.headers, backoff_s(polls)), True
        if status == 429:
            return f"rate limited (HTTP 429: {message})", retry_after_s(resp.headers, backoff_s(failures)), False
        if status >= 500:
            return f"HTTP {status}: {message}", retry_after_s(resp.headers, backoff_s(failures)), False
        raise InferenceError(f"the inference endpoint refused the audio (HTTP {status}: {message})")


def _parse_pairs(resp) -> list[tuple[str, float]]:
    try:
        return [(str(item["label"]), float(item["score"])) for item in resp.json()]
    except (ValueError, TypeError, KeyError) as exc:
        raise InferenceError(f"the inference endpoint returned an unexpected answer ({exc!r:.120})") from None


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


def is_hugging_face_host(url: str) -> bool:
    """The URL's host is one of ``HUGGING_FACE_DOMAINS`` or under one (the parsed host, never a substring)."""
    host = (urlsplit(url).hostname or "").rstrip(".")  # hostname is lower case; "huggingface.co." is the same host
    return any(host == domain or host.endswith(f".{domain}") for domain in HUGGING_FACE_DOMAINS)


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) with the scheme's default port filled in; None for a URL without a valid one."""
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:  # a port that is no number: no origin to share
        return None
    return (parts.scheme.lower(), (parts.hostname or "").rstrip("."), port) if parts.hostname else None


def hub_may_see_endpoint_token(inference_url: str, hub_endpoint: str) -> bool:
    """True when the endpoint's token may go to the hub: a Hugging Face endpoint takes a hub token, and
    an endpoint on the hub's own origin gets every request the hub gets anyway."""
    origin = _origin(inference_url)
    return is_hugging_face_host(inference_url) or (origin is not None and origin == _origin(hub_endpoint))


@dataclass(frozen=True)
class Tokens:
    """Which token goes where; ``hugging_face`` False means the endpoint's token is another server's."""

    endpoint: str | None
    hub: str | None
    hugging_face: bool

    def hub_hint(self, problem: str) -> str:
        """Appended to the problem of a hub file the hub refused while the endpoint's token was withheld."""
        refused = problem in {f"HTTP {status}" for status in HUB_REFUSALS}
        withheld = not self.hugging_face and bool(self.endpoint) and not self.hub
        return WITHHELD_HINT if refused and withheld else ""


def choose_tokens(inference_url: str, hub_endpoint: str, environ: Mapping[str, str]) -> Tokens:
    """A Hugging Face endpoint (or one on the hub's origin): HF_TOKEN, else HF_API_KEY, for both.
    Another server: HF_API_KEY, else HF_TOKEN, for the endpoint; the hub gets HF_TOKEN only when
    it is not the endpoint's token (both set: HF_TOKEN for the hub, HF_API_KEY for the server)."""
    hf_token, api_key = environ.get("HF_TOKEN") or None, environ.get("HF_API_KEY") or None
    if hub_may_see_endpoint_token(inference_url, hub_endpoint):
        return Tokens(hf_token or api_key, hf_token or api_key, True)
    endpoint = api_key or hf_token
    return Tokens(endpoint, hf_token if hf_token != endpoint else None, False)


@dataclass(frozen=True)
class ModelFiles:
    """The model's config.json and preprocessor_config.json as read; None with the reason when unreadable."""

    config: dict | None
    config_problem: str
    extractor: dict | None
    extractor_problem: str


def fetch_model_files(model: str, hf_endpoint: str, token: str | None) -> ModelFiles:
    """The model's ``config.json`` and ``preprocessor_config.json``, from the hub or a local folder.

    A reason is why a file is unreadable (never the token). When the hub cannot be reached for the
    first file, the second is not tried: one connect timeout, not two.
    """
    import requests

    with requests.Session() as session:
        session.trust_env = False
        config, config_problem = _read_json(session, model, CONFIG_FILE, hf_endpoint, token)
        if config is None and config_problem.startswith(UNREACHABLE):
            return ModelFiles(None, config_problem, None, config_problem)
        extractor, extractor_problem = _read_json(session, model, EXTRACTOR_FILE, hf_endpoint, token)
    return ModelFiles(config, config_problem, extractor, extractor_problem)


def _read_json(session, model: str, filename: str, hf_endpoint: str, token: str | None) -> tuple[dict | None, str]:
    """(the file's JSON object, "") or (None, why it is unreadable)."""
    import requests

    try:
        if os.path.isdir(model):
            with open(os.path.join(model, filename), encoding="utf-8") as fh:
                data = json.load(fh)
        else:
            url = f"{hf_endpoint.rstrip('/')}/{model}/resolve/main/{filename}"
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            # The hub may redirect to a CDN; requests drops Authorization when the host changes.
            resp = session.get(url, headers=headers, timeout=(HTTP_CONNECT_TIMEOUT_S, HUB_READ_TIMEOUT_S))
            if resp.status_code != 200:
                return None, f"HTTP {resp.status_code}"
            data = resp.json()
    except requests.RequestException as exc:
        return None, f"{UNREACHABLE} ({type(exc).__name__})"
    except (OSError, ValueError) as exc:
        return None, type(exc).__name__
    if not isinstance(data, dict):
        return None, f"{filename} is not a JSON object"
    return data, ""


def model_labels(files: ModelFiles) -> list[str]:
    """The model's id2label in id order; LabelListUnavailable naming why when there is none."""
    if files.config is None:
        raise LabelListUnavailable(files.config_problem)
    try:
        id2label = files.config["id2label"]
        labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LabelListUnavailable(f"no id2label in its config ({type(exc).__name__})") from None
    if not labels:
        raise LabelListUnavailable("its id2label is empty")
    return labels

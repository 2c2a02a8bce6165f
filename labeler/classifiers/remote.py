"""The remote backend: windows posted to an endpoint that speaks the Hugging Face
audio-classification protocol (dedicated Inference Endpoints, self-hosted servers), with
concurrency that backs off on 429, retries for loading models and transient failures, and the
model's label list read from the hub.

May import: ``core``, ``audio``, ``timeline``. ``requests`` is imported when a client is built.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json
import os
import time
from collections.abc import Sequence

import numpy as np

from ..audio import MODEL_FRAME_SAMPLES, MODEL_RATE_HZ, encode_audio_16k
from ..core import (HTTP_BACKOFF_MAX_S, AdaptiveLimit, AuthError, ConfigError, FatalInferenceError, InferenceError,
                    backoff_s, log, retry_after_s)
from ..timeline import class_index

DEFAULT_INFERENCE_URL = "https://router.huggingface.co/hf-inference/models/{model}"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_CONCURRENCY = 16  # hides a 100 ms round trip; a rate-limited endpoint makes the block back off
DEFAULT_MAX_WAIT_S = 300.0  # per inference request: loading, rate limits and retries together

HTTP_CONNECT_TIMEOUT_S = 10.0
HTTP_READ_TIMEOUT_S = 120.0
HTTP_MAX_ATTEMPTS = 6
PREFLIGHT_WINDOW_S = 0.1  # the silent window sent once before any sample is read


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

    def preflight(self) -> None:
        """Classify one short silent window before any sample is read.

        A missing or rejected token, a wrong URL or a redirect stops the run here (ConfigError,
        from ``_problem``); a model that is loading is waited for, up to --max-wait-s; an endpoint
        that accepts requests without a token passes without one.
        """
        try:
            self._classify_one(np.zeros(round(PREFLIGHT_WINDOW_S * MODEL_RATE_HZ), dtype=np.float32))
        except (InferenceError, FatalInferenceError) as exc:
            raise ConfigError(f"the inference endpoint {self.url} failed a test request before any sample was "
                              f"read ({exc}); check --inference-url and that the endpoint is running") from None

    def classify(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        futures = [self._pool.submit(self._classify_one, w) for w in windows]
        rows = [f.result() for f in futures]
        return np.stack(rows) if rows else np.zeros((0, len(self.class_names)), np.float32)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()

    def _body(self, window: np.ndarray) -> bytes:
        if len(window) < MODEL_FRAME_SAMPLES:  # servers reject audio shorter than one 25 ms frame
            window = np.pad(window, (0, MODEL_FRAME_SAMPLES - len(window)))
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
                problem, wait, loading = f"connection failed ({type(exc).__name__})", backoff_s(failures), False
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
            what = "the token" if "Authorization" in self._headers else "a request without a token"
            raise AuthError(f"the inference endpoint rejected {what} (HTTP {status}: {message}); "
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
            return f"rate limited (HTTP 429: {message})", retry_after_s(resp.headers, backoff_s(failures)), False
        if status >= 500:
            return f"HTTP {status}: {message}", retry_after_s(resp.headers, backoff_s(failures)), False
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

"""A real HTTP server that speaks the Hugging Face audio-classification protocol, and serves a
model's config.json and preprocessor_config.json like the hub does.

By default, scores are deterministic functions of the audio content (see ``score_audio``), so tests
can say which label each window must get. Given a model folder (``model_dir``), it serves that
model instead, through transformers' ``pipeline("audio-classification")`` called with the request's
parameters, as a Hugging Face Inference Endpoint does, and the folder's files on its hub routes.
Faults (loading, 429, 5xx, dropped connections, latency) are injected per request number in both
modes. Protocol: ../shared/docs/ast-and-inference.md section 1.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import soundfile

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ
from loopback import LoopbackServer

MODEL_ID = "MIT/ast-finetuned-audioset-10-10-0.4593"
# Real AudioSet display names, including ones with commas and parentheses.
LABELS = [
    "Speech", "Male speech, man speaking", "Music", "Dog", "Bark", "Silence", "Vehicle", "Bird",
    "Roaring cats (lions, tigers)", "Whistle", "Guitar", "Piano", "Drum", "Rain", "Wind",
]
BASE_SCORE = 0.02
PIPELINE_TOP_K = 5  # what transformers' pipeline answered without top_k, up to 4.48
# The hub's files for the default model (MIT's AudioSet AST), trimmed to what the block reads.
AST_CONFIG = {"architectures": ["ASTForAudioClassification"], "model_type": "audio-spectrogram-transformer"}
AST_EXTRACTOR = {"feature_extractor_type": "ASTFeatureExtractor", "feature_size": 1, "max_length": 1024,
                 "mean": -4.2677393, "std": 4.5689974, "num_mel_bins": 128, "do_normalize": True,
                 "padding_value": 0.0, "return_attention_mask": False, "sampling_rate": 16000}
PARTIAL_CLASSES = 5  # classes in an answer after ``partial_after``


def score_audio(audio: np.ndarray, rate_hz: int) -> dict[str, float]:
    """Sigmoid-like scores per label from the window's loudness and dominant frequency.

    - near silence: Silence 0.95
    - 440 Hz tone: Music 0.9, then six instruments-ish classes 0.5..0.35, then Bird 0.3 (8th)
    - 1 kHz tone: Speech 0.8, Male speech 0.4
    - 3 kHz tone: Dog 0.7, Bark 0.6
    - broadband noise: Vehicle 0.6
    """
    scores = dict.fromkeys(LABELS, BASE_SCORE)
    rms = float(np.sqrt(np.mean(np.square(audio)))) if len(audio) else 0.0
    if rms < 0.01:
        scores["Silence"] = 0.95
        return scores
    spectrum = np.abs(np.fft.rfft(audio))
    freqs = np.fft.rfftfreq(len(audio), 1.0 / rate_hz)
    flatness = float(np.exp(np.mean(np.log(spectrum + 1e-12))) / (np.mean(spectrum) + 1e-12))
    dominant = float(freqs[int(np.argmax(spectrum))])
    if flatness > 0.3:
        scores["Vehicle"] = 0.6
    elif abs(dominant - MUSIC_HZ) < 60:
        scores.update({"Music": 0.9, "Guitar": 0.5, "Piano": 0.48, "Drum": 0.45, "Whistle": 0.42,
                       "Wind": 0.4, "Rain": 0.35, "Bird": 0.3})
    elif abs(dominant - SPEECH_HZ) < 60:
        scores.update({"Speech": 0.8, "Male speech, man speaking": 0.4})
    elif abs(dominant - DOG_HZ) < 100:
        scores.update({"Dog": 0.7, "Bark": 0.6})
    return scores


PRESENCE_FRAME_S = 0.1


def frame_scores(audio: np.ndarray, rate_hz: int) -> list[dict[str, float]]:
    """``score_audio`` of each 100 ms frame of the window (a last frame under 50 ms joins none)."""
    frame = max(1, int(PRESENCE_FRAME_S * rate_hz))
    frames = [audio[i : i + frame] for i in range(0, max(1, len(audio) - frame // 2), frame)]
    return [score_audio(f, rate_hz) for f in frames if len(f)]


def score_presence(audio: np.ndarray, rate_hz: int) -> dict[str, float]:
    """Scores the way a model trained on weak (clip-level) labels answers: a class scores as high
    as in its best 100 ms frame, so a window that only touches a sound scores like one full of it."""
    per_frame = frame_scores(audio, rate_hz)
    return {label: max(scores[label] for scores in per_frame) for label in LABELS}


def score_fill(audio: np.ndarray, rate_hz: int) -> dict[str, float]:
    """Scores that grow with how much of the window a sound fills: the mean over its 100 ms frames."""
    per_frame = frame_scores(audio, rate_hz)
    return {label: float(np.mean([scores[label] for scores in per_frame])) for label in LABELS}


SCORERS = {"window": score_audio, "presence": score_presence, "fill": score_fill}


@dataclass
class InferenceState:
    token: str | None
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    # "window": the whole window's spectrum; "presence": its best 100 ms frame; "fill": its mean frame
    scoring: str = "window"
    model_id: str = MODEL_ID
    pipeline: object | None = None  # a transformers audio-classification pipeline: scores come from it
    model_dir: Path | None = None  # its folder: the hub routes serve its files
    serve_config: bool = True
    serve_preprocessor: bool = True
    config_update: dict = field(default_factory=dict)  # merged into the default config.json (e.g. problem_type)
    preprocessor_update: dict = field(default_factory=dict)  # merged into the default preprocessor_config.json
    requests: list[dict] = field(default_factory=list)  # parsed request records
    hub_requests: list[dict] = field(default_factory=list)  # GETs of the hub routes: path and headers
    hub_token: str | None = None  # when set, hub GETs without it answer 401 (a private model)
    loading_requests: int = 0  # the first N requests answer 503 "loading"
    always_loading: bool = False
    rate_limit_every: int = 0  # every k-th request answers 429
    retry_after: str | None = "1"
    error_every: int = 0  # every k-th request answers 500
    error_after: int = 0  # when > 0, every request after the first N answers 500 (dies after the preflight)
    cold_requests: int = 0  # the first N requests answer 503 with no estimated_time (a scaled-to-zero endpoint)
    drop_every: int = 0  # every k-th request drops the connection
    latency_s: float = 0.0
    capacity: int = 0  # when > 0, requests beyond this many in flight answer 429 (a saturated endpoint)
    redirect_to: str | None = None  # answer POSTs with a 307 to this URL
    config_redirect_to: str | None = None  # answer the config.json GET with a 302 to this URL
    preprocessor_redirect_to: str | None = None  # the same for preprocessor_config.json
    # Classifier hardening: a window the server always fails on, an endpoint scaled to zero mid-run.
    fail_label: str | None = None  # windows whose best label is this one answer 500 on every attempt
    cold_after: int = 0  # when > 0, every request after the first N answers 503 with no estimated_time
    # Servers that answer something other than what was asked (all default to an honest server):
    ignore_parameters: bool = False  # answers like transformers' pipeline defaults before 4.49: top 5, softmax
    softmax_always: bool = False  # ignores function_to_apply only (transformers' default for AST is softmax)
    top_k_cap: int = 0  # when > 0, answers at most this many classes
    answer_names: list[str] | None = None  # the names its model gives LABELS (a server running another model)
    partial_after: int = 0  # when > 0, every request after the first N answers its top PARTIAL_CLASSES classes only
    extra_labels: list[str] = field(default_factory=list)  # classes beyond LABELS, added to every answer at 0.01
    count: int = 0
    faults: int = 0  # injected fault answers (loading, 429, 5xx, drops)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    model_lock: threading.Lock = field(default_factory=threading.Lock)  # one pipeline call at a time


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stalls
    state: InferenceState

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        st = self.state
        with st.lock:
            st.hub_requests.append({"path": self.path, "headers": dict(self.headers)})
        if st.hub_token and self.headers.get("Authorization") != f"Bearer {st.hub_token}":
            return self._json({"error": "Invalid credentials in Authorization header"}, 401)
        if st.config_redirect_to and self.path.endswith("/config.json"):
            return self._json({}, 302, {"Location": st.config_redirect_to})
        if st.preprocessor_redirect_to and self.path.endswith("/preprocessor_config.json"):
            return self._json({}, 302, {"Location": st.preprocessor_redirect_to})
        name = self.path.rpartition("/")[2]
        served = {"config.json": st.serve_config, "preprocessor_config.json": st.serve_preprocessor}
        if self.path == f"/{st.model_id}/resolve/main/{name}" and served.get(name):
            return self._json(self._hub_file(name))
        self._json({"error": "Entry not found"}, 404)

    def _hub_file(self, name: str) -> dict:
        st = self.state
        if st.model_dir is not None:
            return json.loads((st.model_dir / name).read_text())
        if name == "config.json":
            return {**AST_CONFIG, "id2label": {str(i): label for i, label in enumerate(st.labels)},
                    **st.config_update}
        return {**AST_EXTRACTOR, **st.preprocessor_update}

    def do_POST(self) -> None:
        st = self.state
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.path.startswith("/hf-inference/models/"):
            return self._json({"error": "Not Found"}, 404)
        with st.lock:
            st.count += 1
            n = st.count
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
            record = {"path": self.path, "headers": dict(self.headers), "size": len(body), "at": time.monotonic()}
            st.requests.append(record)
        try:
            if st.latency_s:
                time.sleep(st.latency_s)
            self._answer(n, body, record)
        finally:
            with st.lock:
                st.in_flight -= 1

    def _answer(self, n: int, body: bytes, record: dict) -> None:
        st = self.state
        if st.redirect_to:
            return self._json({}, 307, {"Location": st.redirect_to})
        if st.token and self.headers.get("Authorization") != f"Bearer {st.token}":
            return self._json({"error": "Invalid credentials in Authorization header"}, 401)
        if n <= st.cold_requests or (st.cold_after and n > st.cold_after):
            self._count_fault()
            return self._json({"error": "Service Unavailable"}, 503)
        if st.error_after and n > st.error_after:
            self._count_fault()
            return self._json({"error": "unknown error"}, 500)
        if st.always_loading or n <= st.loading_requests:
            self._count_fault()
            return self._json({"error": f"Model {MODEL_ID} is currently loading", "estimated_time": 0.2}, 503)
        if st.drop_every and n % st.drop_every == 0:
            self._count_fault()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        with st.lock:
            over_capacity = st.capacity and st.in_flight > st.capacity
        if over_capacity or (st.rate_limit_every and n % st.rate_limit_every == 0):
            self._count_fault()
            headers = {"Retry-After": st.retry_after} if st.retry_after is not None else {}
            return self._json({"error": "Rate limit reached"}, 429, headers)
        if st.error_every and n % st.error_every == 0:
            self._count_fault()
            return self._json({"error": "unknown error"}, 500)
        try:
            request = json.loads(body)
            audio, rate = soundfile.read(io.BytesIO(base64.b64decode(request["inputs"], validate=True)),
                                         dtype="float32")
        except Exception as exc:  # noqa: BLE001 - the real server answers 400 for anything undecodable
            return self._json({"error": f"Malformed soundfile ({type(exc).__name__})"}, 400)
        if audio.ndim != 1 or rate != 16000:
            return self._json({"error": f"expected 16 kHz mono, got {rate} Hz, shape {audio.shape}"}, 400)
        params = request.get("parameters") or {}
        with st.lock:
            record.update(params=params, rate=rate, seconds=len(audio) / rate)
        if st.pipeline is not None:
            try:
                return self._json(self._model_answer(audio, rate, {} if st.ignore_parameters else params))
            except (TypeError, ValueError) as exc:  # a parameter the pipeline refuses: the server's 400
                return self._json({"error": str(exc)}, 400)
        scores = SCORERS[st.scoring](audio, rate)
        if st.fail_label and max(scores, key=scores.get) == st.fail_label:
            self._count_fault()
            return self._json({"error": "unknown error"}, 500)
        self._json(self._ranked(n, scores, {} if st.ignore_parameters else params))

    def _model_answer(self, audio: np.ndarray, rate: int, params: dict) -> list[dict]:
        """The served model's answer: the pipeline called with the request's parameters, as the
        Hugging Face inference toolkit does (``pipeline(inputs, **parameters)``)."""
        with self.state.model_lock:
            answer = self.state.pipeline({"raw": audio, "sampling_rate": rate}, **params)
        return [{"score": float(item["score"]), "label": item["label"]} for item in answer]

    def _ranked(self, n: int, scores: dict[str, float], params: dict) -> list[dict]:
        """The answer to the parameters the server heeds: sorted by score, cut to top_k."""
        st = self.state
        if st.softmax_always or params.get("function_to_apply", "softmax") == "softmax":
            total = sum(np.exp(v) for v in scores.values())
            scores = {k: float(np.exp(v) / total) for k, v in scores.items()}
        names = dict(zip(LABELS, st.answer_names or LABELS))
        ranked = sorted(({"score": s, "label": names[k]} for k, s in scores.items() if k in st.labels),
                        key=lambda item: -item["score"])
        top_k = int(params.get("top_k", PIPELINE_TOP_K))
        if st.top_k_cap:
            top_k = min(top_k, st.top_k_cap)
        if st.partial_after and n > st.partial_after:
            top_k = min(top_k, PARTIAL_CLASSES)
        return ranked[:top_k] + [{"score": 0.01, "label": label} for label in st.extra_labels]

    def _count_fault(self) -> None:
        with self.state.lock:
            self.state.faults += 1

    def _json(self, payload, status: int = 200, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class InferenceEmulator(LoopbackServer):
    """``url`` is the POST URL (--inference-url); ``hub`` is HF_ENDPOINT.

    ``model_dir``: serve that saved transformers model as ``model_id`` (scores from the real model).
    """

    def __init__(self, token: str | None, model_dir: Path | None = None, model_id: str = MODEL_ID):
        self.state = InferenceState(token, model_id=model_id)
        if model_dir is not None:
            from transformers import pipeline

            self.state.model_dir = Path(model_dir)
            self.state.pipeline = pipeline("audio-classification", model=str(model_dir), device="cpu")
        super().__init__(type("Handler", (_Handler,), {"state": self.state}))
        self.hub = self.base_url
        self.url = f"{self.hub}/hf-inference/models/{model_id}"

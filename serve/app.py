"""The Ray Serve application: the block's own local classifier (features, precision choice,
out-of-memory halving) behind the Hugging Face audio-classification protocol, with windows of
concurrent requests batched together and each request's score function applied to its own row.

Routes (under the application's route prefix): ``POST /`` classifies one window; ``GET /health``
answers 200 once the replica's model is loaded (a replica takes traffic only after its constructor
returns). With ``SERVE_TOKEN`` set in the replicas' environment, ``POST /`` needs
``Authorization: Bearer <token>``; the token is compared in constant time and never logged.

``build_app`` is what ``python -m serve`` runs; ``build`` is the import path for Serve config files
(``import_path: serve.app:build`` with the options as ``args``).

May import: ``serve.options``, ``serve.protocol``, ``serve.batching``, ``labeler`` (its ``classifiers.local``
inside the replica), ray, starlette.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import hmac
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from labeler.core import InferenceError, plural

from .batching import Batcher
from .options import (TOKEN_ENV, ServerOptions, check_body_limit, check_options, ongoing_requests_for,
                      options_from_args, read_token)
from .protocol import BadRequest, ClassifyRequest, answer, parse_request

APP_NAME = "audio-labeler"
STOP_GRACE_S = 5.0  # a stopping replica's requests in flight get this long (a CPU batch of AST takes seconds)
logger = logging.getLogger("ray.serve")


def replica_threads(requested: int) -> int:
    """The threads a replica runs inference with: as asked, else the CPUs Ray gave it (whole ones,
    at least 1), never more than the container allows."""
    from labeler.classifiers.local import available_cpus

    if requested:
        return requested
    import ray

    assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
    return max(1, min(int(assigned), available_cpus())) if assigned else available_cpus()


def is_authorized(header: str | None, token: str | None) -> bool:
    """No token configured: everyone; else exactly ``Bearer <token>``, compared in constant time."""
    if not token:
        return True
    return hmac.compare_digest((header or "").encode(), f"Bearer {token}".encode())


def error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@dataclass(frozen=True)
class WindowFailed:
    """A window of a batch that could not be scored: the status and message its request gets."""

    status: int
    message: str


class AudioClassifierServer:
    """One replica: the model, loaded once; requests decoded in worker threads, batched by ``Batcher``
    (a batch forms when the model is free), and run in one inference thread, so /health answers while
    a batch runs."""

    def __init__(self, options: ServerOptions):
        from labeler.classifiers.local import LocalClassifier

        check_options(options)
        self._options, self._token = options, read_token(os.environ)  # a bad token fails before the model loads
        started, threads = time.monotonic(), replica_threads(options.threads)
        self._engine = LocalClassifier(options.model, options.device, options.dtype, options.batch_size, threads,
                                       options.score_function)
        check_body_limit(options.max_body_bytes, self._engine.model_input.heard_samples, options.model)
        self._classes = list(self._engine.class_names)
        self._inference = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._batcher = Batcher(self._classify_batch, options.batch_size, options.batch_wait_ms / 1000)
        logger.info(f"loaded {options.model} on {self._engine.device} ({self._engine.dtype_name}, "
                    f"{len(self._classes)} classes, {self._engine.score_function} by default, batch "
                    f"{options.batch_size}, {plural(threads, 'thread')}) in "
                    f"{time.monotonic() - started:.1f} s; auth {'on' if self._token else 'off'}")

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            return await self._route(request)
        except Exception as exc:  # noqa: BLE001 - a client gets one JSON line, never Ray's plain-text traceback
            logger.error(f"{request.method} {request.url.path} failed: {type(exc).__name__}: {exc}")
            return error(500, f"the server failed on this request ({type(exc).__name__})")

    async def _route(self, request: Request) -> JSONResponse:
        path = request.url.path[len(request.scope.get("root_path", "")):] or "/"
        if path.rstrip("/") == "/health":  # "auth" lets python -m serve see that replicas got SERVE_TOKEN
            return JSONResponse({"status": "ok", "model": self._options.model, "classes": len(self._classes),
                                 "auth": self._token is not None})
        if path != "/":
            return error(404, f"no route {path}; POST / classifies audio, GET /health says whether it is up")
        if request.method != "POST":
            return error(405, "POST / with the audio classifies it")
        if not is_authorized(request.headers.get("authorization"), self._token):
            return error(401, "missing or wrong bearer token: send Authorization: Bearer <the server's "
                              f"{TOKEN_ENV}> (the block sends HF_API_KEY, or HF_TOKEN when only that is set)")
        try:
            with self._batcher.arriving():  # a forming batch waits for this window, not for nothing
                body = await _read_body(request, self._options.max_body_bytes)
                parsed = await asyncio.to_thread(parse_request, body, request.headers.get("content-type", ""))
        except BadRequest as exc:
            return error(exc.status, str(exc))
        heard = self._engine.model_input.heard_samples
        result = await self._batcher.submit(ClassifyRequest(parsed.audio[:heard], parsed.top_k, parsed.function))
        if isinstance(result, WindowFailed):
            return error(result.status, result.message)
        return JSONResponse(result)

    async def _classify_batch(self, requests: list[ClassifyRequest]) -> list[list[dict] | WindowFailed]:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        failed: dict[int, WindowFailed] = {}
        try:
            logits = await loop.run_in_executor(self._inference, self._engine.logits, [r.audio for r in requests])
        except InferenceError as exc:  # out of memory on one window: the rest of the batch is still answered
            problem = WindowFailed(503, f"inference failed: {exc}")
            logger.warning(f"batch of {len(requests)} windows: {len(exc.failed or requests)} failed in "
                           f"{(time.perf_counter() - started) * 1000:.0f} ms: {exc}")
            if exc.scores is None:
                return [problem] * len(requests)
            logits, failed = exc.scores, dict.fromkeys(exc.failed or range(len(requests)), problem)
        except Exception as exc:  # noqa: BLE001 - one line to every request of the batch, the replica lives on
            logger.error(f"batch of {len(requests)} windows failed: {type(exc).__name__}: {exc}")
            return [WindowFailed(500, f"inference failed ({type(exc).__name__})")] * len(requests)
        functions = [r.function or self._engine.score_function for r in requests]
        logger.info(f"batch of {len(requests)} windows ({_counts(functions)}) in "
                    f"{(time.perf_counter() - started) * 1000:.0f} ms")
        return [failed.get(i) or answer(logits[i], self._classes, functions[i], r.top_k)
                for i, r in enumerate(requests)]


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it (or its declared length) passes ``limit`` bytes."""
    too_large = BadRequest(413, f"the body is over the server's {limit} byte limit (max_body_bytes); "
                                "send one window at a time")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _counts(functions: list[str]) -> str:
    return ", ".join(f"{n} {name}" for name, n in Counter(functions).items())


AudioClassifier = serve.deployment(AudioClassifierServer, name="AudioClassifier")


def build_app(options: ServerOptions, *, replicas: int = 1, num_cpus: float = 1.0, num_gpus: float = 0.0,
              constructor_retries: int | None = None):
    """The application ``python -m serve`` runs: a fixed number of replicas with these resources each."""
    check_options(options)
    settings = dict(num_replicas=replicas, max_ongoing_requests=ongoing_requests_for(options.batch_size),
                    ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
                    graceful_shutdown_timeout_s=STOP_GRACE_S, graceful_shutdown_wait_loop_s=0.5)
    if constructor_retries is not None:
        settings["max_constructor_retry_count"] = constructor_retries
    return AudioClassifier.options(**settings).bind(options)


def build(args: Mapping[str, object]):
    """The application a Serve config file names (``import_path: serve.app:build``); ``args`` are
    ServerOptions' fields, ``max_body_mb`` in place of ``max_body_bytes``. Replicas, autoscaling and
    resources come from the config's ``deployments`` section."""
    options = options_from_args(args, APP_NAME)
    return AudioClassifier.options(max_ongoing_requests=ongoing_requests_for(options.batch_size)).bind(options)

"""The Hugging Face audio-classification protocol, server side: what a request body may be, how it
becomes 16 kHz mono audio and parameters, and how a row of logits becomes the answer.

A request is JSON ``{"inputs": <base64 audio file>, "parameters": {"top_k": N, "function_to_apply":
"sigmoid"|"softmax"|"none"}}`` (parameters optional), or the audio file itself with an ``audio/*``
(or ``application/octet-stream``) content type, as Hugging Face's servers accept. The answer is
``[{"label": ..., "score": ...}, ...]``, best first. Every problem is a ``BadRequest`` carrying the
HTTP status and a one-line message for the client.

May import: ``labeler.audio``, ``labeler.core``, ``labeler.models`` (pure; no Ray, no torch).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labeler.audio import MODEL_FRAME_SAMPLES, decode_16k
from labeler.core import SampleError
from labeler.models import REQUEST_SCORE_FUNCTIONS, apply_score_function

# Larger than any window the block sends: it uploads at most 30 s (the cap for models without a
# length), 0.96 MB as 16-bit FLAC, 1.3 MB as base64; room is left for clients sending WAV at 48 kHz stereo.
DEFAULT_MAX_BODY_BYTES = 16 * 2**20
# Decoding preallocates the whole 16 kHz result: a small compressed body must not claim gigabytes.
MAX_AUDIO_S = 600.0
PARAMETERS = ("top_k", "function_to_apply")
RAW_AUDIO_TYPES = ("audio/", "application/octet-stream")


class BadRequest(Exception):
    """The request cannot be served as sent: ``status`` (400, 413, 415) and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ClassifyRequest:
    """One window to classify: 16 kHz mono audio, and the answer's length and score function (None: defaults)."""

    audio: np.ndarray
    top_k: int | None
    function: str | None


def parse_request(body: bytes, content_type: str) -> ClassifyRequest:
    """The request's audio (decoded, mixed down, resampled to 16 kHz) and parameters; BadRequest otherwise."""
    if not body:
        raise BadRequest(400, "empty body: send an audio file, or JSON {\"inputs\": <base64 audio>}")
    media = content_type.split(";")[0].strip().lower()
    if media.startswith(RAW_AUDIO_TYPES):
        return ClassifyRequest(decode_audio(body), None, None)
    if media not in ("application/json", ""):
        raise BadRequest(415, f"content type {media!r} is not served: send application/json or audio/*")
    payload = _json_object(body)
    audio_bytes = _base64_inputs(payload.get("inputs"))
    top_k, function = parse_parameters(payload.get("parameters"))
    return ClassifyRequest(decode_audio(audio_bytes), top_k, function)


def _json_object(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested thousands deep
        raise BadRequest(400, f"the body is not JSON ({type(exc).__name__}); send JSON with a base64 \"inputs\" "
                              "or an audio file with an audio/* content type") from None
    if not isinstance(payload, dict):
        raise BadRequest(400, "the JSON body must be an object with \"inputs\"")
    return payload


def _base64_inputs(inputs) -> bytes:
    if not isinstance(inputs, str) or not inputs:
        raise BadRequest(400, "\"inputs\" must be the audio file as a base64 string")
    try:
        return base64.b64decode(inputs, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(400, "\"inputs\" is not valid base64") from None


def parse_parameters(parameters) -> tuple[int | None, str | None]:
    """(top_k, function_to_apply) from the request's ``parameters``; None where absent."""
    if parameters is None:
        return None, None
    if not isinstance(parameters, dict):
        raise BadRequest(400, "\"parameters\" must be an object")
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise BadRequest(400, f"unknown parameter {unknown[0]!r}; this server takes {' and '.join(PARAMETERS)}")
    top_k = parameters.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise BadRequest(400, f"top_k {top_k!r} must be a whole number of 1 or more (or absent: every class)")
    function = parameters.get("function_to_apply")
    if function is not None and function not in REQUEST_SCORE_FUNCTIONS:
        raise BadRequest(400, f"function_to_apply {function!r} must be one of {', '.join(REQUEST_SCORE_FUNCTIONS)}")
    return top_k, function


def decode_audio(data: bytes) -> np.ndarray:
    """Any file libsndfile reads (WAV, FLAC, Ogg, MP3...) as 16 kHz mono float32, at least one 25 ms frame."""
    def refuse_long(rate_hz: int, frames: int) -> None:
        if frames / rate_hz > MAX_AUDIO_S:
            raise BadRequest(413, f"the audio lasts {frames / rate_hz:.0f} s; send windows of at most "
                                  f"{MAX_AUDIO_S:.0f} s (the model hears only the start of a long one)")

    try:
        audio, _, _ = decode_16k(io.BytesIO(data), refuse_long)
    except SampleError as exc:  # BadAudio and UndecodableAudio
        problem = re.sub(r"^Error opening <[^>]*>: ", "", str(exc))  # libsndfile names the buffer object
        raise BadRequest(400, f"the audio cannot be decoded: {problem[:200]}") from None
    if len(audio) < MODEL_FRAME_SAMPLES:  # what the block pads too: the model needs one whole frame
        audio = np.pad(audio, (0, MODEL_FRAME_SAMPLES - len(audio)))
    return audio


def answer(logits_row: np.ndarray, class_names: Sequence[str], function: str, top_k: int | None) -> list[dict]:
    """The answer to one request: its top_k classes (all when None), best first, ties in class order."""
    scores = apply_score_function(logits_row[np.newaxis, :], function)[0]
    order = np.argsort(-scores, kind="stable")[: top_k or len(class_names)]
    return [{"label": class_names[i], "score": float(scores[i])} for i in order]


def largest_block_body_bytes(heard_samples: int) -> int:
    """The most the block uploads for one window of a model hearing ``heard_samples``: 16-bit FLAC of
    incompressible audio (a little over WAV size), in base64, inside JSON."""
    flac_bytes = heard_samples * 2 * 1.02 + 8192
    return int(flac_bytes * 4 / 3) + 512


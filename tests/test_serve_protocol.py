"""The server's side of the Hugging Face audio-classification protocol (serve/protocol.py): what a
body may be, what every bad one is answered with, and how logits become the answer. No Ray here."""

import base64
import io
import json

import numpy as np
import pytest
import soundfile

from audio import SPEECH_HZ, noise, tone
from labeler.audio import encode_audio_16k
from labeler.models import UNKNOWN_INPUT, apply_score_function
from serve.protocol import (DEFAULT_MAX_BODY_BYTES, MAX_AUDIO_S, BadRequest, answer, largest_block_body_bytes,
                            parse_request)

CLASSES = ["Speech", "Music", "Dog", "Bark"]


def json_body(audio_file: bytes, parameters=None) -> bytes:
    payload = {"inputs": base64.b64encode(audio_file).decode()}
    if parameters is not None:
        payload["parameters"] = parameters
    return json.dumps(payload).encode()


def wav_bytes(audio: np.ndarray, rate_hz: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, audio, rate_hz, format="WAV", subtype=subtype)
    return buf.getvalue()


def refusal(body: bytes, content_type: str = "application/json") -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse_request(body, content_type)
    return caught.value


def test_a_json_body_carries_base64_audio_and_the_parameters():
    window = tone(SPEECH_HZ, 0.5, 16000)
    request = parse_request(json_body(encode_audio_16k(window), {"top_k": 3, "function_to_apply": "none"}),
                            "application/json")
    assert (request.top_k, request.function) == (3, "none")
    np.testing.assert_allclose(request.audio, window, atol=1 / 32768)  # 16-bit FLAC: within one step


def test_absent_parameters_are_none_so_the_server_applies_its_defaults():
    request = parse_request(json_body(encode_audio_16k(tone(SPEECH_HZ, 0.5, 16000))), "application/json")
    assert (request.top_k, request.function) == (None, None)


def test_a_raw_audio_body_is_decoded_mixed_down_and_resampled_to_16_khz():
    left, right = tone(SPEECH_HZ, 1.0, 44100, 0.5), np.zeros(44100, np.float32)  # channels that differ
    stereo = wav_bytes(np.stack([left, right], axis=1), 44100)
    request = parse_request(stereo, "audio/wav")
    assert len(request.audio) == 16000
    assert 0.2 < np.abs(request.audio).max() < 0.3  # the mean of the two channels, not the left one alone


def test_a_window_shorter_than_one_frame_is_padded_to_one():
    request = parse_request(wav_bytes(tone(SPEECH_HZ, 0.01, 16000), 16000), "audio/x-wav")
    assert len(request.audio) == 400


@pytest.mark.parametrize("body, content_type, status, says", [
    (b"", "application/json", 400, "empty body"),
    (b"", "audio/flac", 400, "empty body"),
    (b"not json at all", "application/json", 400, "not JSON"),
    (b"[1, 2]", "application/json", 400, "must be an object"),
    (b"[" * 100_000, "application/json", 400, "not JSON (RecursionError)"),
    (json.dumps({"inputs": "%%%not base64%%%"}).encode(), "application/json", 400, "not valid base64"),
    (json.dumps({"inputs": 12}).encode(), "application/json", 400, "base64 string"),
    (json.dumps({"parameters": {}}).encode(), "application/json", 400, "base64 string"),
    (json_body(b"RIFF but not really a wave file"), "application/json", 400, "cannot be decoded"),
    (b"\x00\x01garbage bytes", "audio/wav", 400, "cannot be decoded"),
    (b"<xml/>", "text/xml", 415, "content type 'text/xml'"),
])
def test_a_bad_body_gets_a_client_error_naming_the_problem(body, content_type, status, says):
    problem = refusal(body, content_type)
    assert problem.status == status
    assert says in str(problem)
    assert "<_io.BytesIO" not in str(problem)  # libsndfile's name for the buffer means nothing to a client


@pytest.mark.parametrize("parameters, says", [
    ({"top_k": 0}, "top_k 0 must be a whole number of 1 or more"),
    ({"top_k": 2.5}, "top_k 2.5"),
    ({"top_k": True}, "top_k True"),
    ({"top_k": "5"}, "top_k '5'"),
    ({"function_to_apply": "relu"}, "function_to_apply 'relu' must be one of sigmoid, softmax, none"),
    ({"topk": 5}, "unknown parameter 'topk'"),
    ("top_k=5", "\"parameters\" must be an object"),
])
def test_bad_parameters_get_400_naming_the_parameter(parameters, says):
    problem = refusal(json_body(encode_audio_16k(tone(SPEECH_HZ, 0.5, 16000)), parameters))
    assert problem.status == 400
    assert says in str(problem)


def test_audio_longer_than_the_limit_is_refused_with_413_before_it_is_decoded():
    rate_hz = 1000  # a small file that claims a long duration
    long_file = wav_bytes(np.zeros(int(MAX_AUDIO_S * rate_hz) + rate_hz, np.float32), rate_hz, "PCM_U8")
    problem = refusal(long_file, "audio/wav")
    assert problem.status == 413
    assert f"{MAX_AUDIO_S + 1:.0f} s" in str(problem)


def test_the_answer_lists_classes_best_first_and_top_k_cuts_it():
    logits = np.array([0.5, 2.0, -1.0, 1.0], np.float32)
    full = answer(logits, CLASSES, "sigmoid", None)
    assert [item["label"] for item in full] == ["Music", "Bark", "Speech", "Dog"]
    assert [item["label"] for item in answer(logits, CLASSES, "sigmoid", 2)] == ["Music", "Bark"]
    assert len(answer(logits, CLASSES, "sigmoid", 100)) == 4  # more than there are: every class


def test_ties_keep_the_models_class_order():
    assert [item["label"] for item in answer(np.zeros(4, np.float32), CLASSES, "softmax", None)] == CLASSES


@pytest.mark.parametrize("function", ["sigmoid", "softmax", "none"])
def test_the_answer_applies_the_requested_score_function(function):
    logits = np.array([0.5, 2.0, -1.0, 1.0], np.float32)
    expected = dict(zip(CLASSES, apply_score_function(logits[None], function)[0]))
    got = {item["label"]: item["score"] for item in answer(logits, CLASSES, function, None)}
    assert got == pytest.approx(expected, abs=1e-7)
    if function == "none":
        assert got["Music"] == pytest.approx(2.0)


def test_the_default_body_limit_exceeds_the_largest_window_the_block_sends():
    """The block uploads at most UNKNOWN_INPUT's 30 s; white noise is what FLAC compresses least."""
    window = noise(UNKNOWN_INPUT.heard_samples / 16000, 16000, amplitude=1.0)
    body = json_body(encode_audio_16k(window), {"top_k": 527, "function_to_apply": "sigmoid"})
    assert len(body) <= largest_block_body_bytes(UNKNOWN_INPUT.heard_samples) < DEFAULT_MAX_BODY_BYTES

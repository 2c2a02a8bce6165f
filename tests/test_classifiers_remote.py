"""The remote backend against the inference emulator: protocol, concurrency and faults."""

import time

import numpy as np
import pytest

from audio import MUSIC_HZ, SPEECH_HZ, silence, tone
from conftest import HF_TOKEN
from inference_emulator import LABELS
from labeler.classifiers.remote import RemoteClassifier
from labeler.core import AuthError, ConfigError, FatalInferenceError, InferenceError


def classifier(hf, token=HF_TOKEN, concurrency=4, max_wait_s=30.0):
    return RemoteClassifier(hf.url, token, LABELS, concurrency, max_wait_s)


def test_request_asks_for_every_class_with_sigmoid_and_a_bearer_token(hf):
    scores = classifier(hf).classify([tone(MUSIC_HZ, 1, 16000)])
    request = hf.state.requests[0]
    assert request["params"] == {"top_k": len(LABELS), "function_to_apply": "sigmoid"}
    assert request["headers"]["Authorization"] == f"Bearer {HF_TOKEN}"
    assert request["rate"] == 16000 and request["seconds"] == 1.0
    assert scores.shape == (1, len(LABELS))


def test_scores_are_returned_in_class_order(hf):
    scores = classifier(hf).classify([tone(SPEECH_HZ, 1, 16000), silence(1, 16000)])
    assert scores[0, LABELS.index("Speech")] == pytest.approx(0.8)
    assert scores[1, LABELS.index("Silence")] == pytest.approx(0.95)
    # a class ranked 8th still has its real score (top_k covers every class)
    assert classifier(hf).classify([tone(MUSIC_HZ, 1, 16000)])[0, LABELS.index("Bird")] == pytest.approx(0.3)


def test_windows_are_classified_concurrently(hf):
    hf.state.latency_s = 0.2
    started = time.monotonic()
    classifier(hf, concurrency=8).classify([tone(MUSIC_HZ, 1, 16000)] * 16)
    assert time.monotonic() - started < 16 * 0.2 / 2
    assert hf.state.max_in_flight > 1 and hf.state.max_in_flight <= 8


def test_loading_model_is_waited_for(hf):
    hf.state.loading_requests = 2
    scores = classifier(hf, concurrency=1).classify([tone(MUSIC_HZ, 1, 16000)])
    assert scores[0, LABELS.index("Music")] == pytest.approx(0.9)
    assert hf.state.count == 3


def test_model_that_never_loads_is_fatal_within_the_wait_bound(hf):
    hf.state.always_loading = True
    started = time.monotonic()
    with pytest.raises(FatalInferenceError, match="still loading"):
        classifier(hf, max_wait_s=2).classify([tone(MUSIC_HZ, 1, 16000)])
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("fault", ["rate_limit_every", "error_every", "drop_every"])
def test_transient_faults_are_retried(hf, fault):
    setattr(hf.state, fault, 2)
    hf.state.retry_after = "0"
    scores = classifier(hf, concurrency=1).classify([tone(MUSIC_HZ, 1, 16000)] * 4)
    assert np.allclose(scores[:, LABELS.index("Music")], 0.9)
    assert hf.state.count > 4


def test_rate_limit_honours_retry_after(hf):
    hf.state.rate_limit_every = 1  # every request
    hf.state.retry_after = "1"
    with pytest.raises(InferenceError, match="rate limited"):
        classifier(hf, concurrency=1, max_wait_s=2.5).classify([tone(MUSIC_HZ, 1, 16000)])
    assert hf.state.count == 3  # 0 s, 1 s, 2 s; the next wait would pass the deadline


def test_persistent_server_errors_give_up_after_bounded_attempts(hf):
    hf.state.error_every = 1
    with pytest.raises(InferenceError, match="HTTP 500"):
        classifier(hf, concurrency=1, max_wait_s=60).classify([tone(MUSIC_HZ, 1, 16000)])
    assert hf.state.count == 6


def test_rejected_token_is_an_auth_error(hf):
    with pytest.raises(AuthError, match="rejected the token"):
        classifier(hf, token="hf_wrong").classify([tone(MUSIC_HZ, 1, 16000)])


def test_wrong_url_is_a_config_error(hf):
    bad = RemoteClassifier(hf.hub + "/nothing-here", HF_TOKEN, LABELS, 1, 5)
    with pytest.raises(ConfigError, match="HTTP 404"):
        bad.classify([tone(MUSIC_HZ, 1, 16000)])


def test_rate_limits_make_the_client_slow_down(hf):
    hf.state.capacity, hf.state.latency_s, hf.state.retry_after = 2, 0.05, None
    client = classifier(hf, concurrency=8, max_wait_s=60)
    scores = client.classify([tone(MUSIC_HZ, 1, 16000)] * 40)
    assert np.allclose(scores[:, LABELS.index("Music")], 0.9)
    assert client._limit.limit <= 4  # backed off from 8
    # a client that kept 8 requests in flight would get about 3 refusals per success
    assert hf.state.faults < 40


def test_adaptive_limit_grows_back_after_successes():
    from labeler.classifiers.remote import AdaptiveLimit

    limit = AdaptiveLimit(8)
    limit.throttled()
    limit.throttled()
    assert limit.limit == 2
    for _ in range(2 + 3):
        limit.succeeded()
    assert limit.limit == 4

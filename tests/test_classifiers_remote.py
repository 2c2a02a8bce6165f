"""The remote backend against the inference emulator: protocol, concurrency and faults."""

import time

import numpy as np
import pytest

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, silence, tone
from conftest import HF_TOKEN
from inference_emulator import LABELS, MODEL_ID
from labeler.audio import fbank_heard_samples
from labeler.classifiers.remote import HTTP_MAX_ATTEMPTS, LEARN_TOP_K, RemoteClassifier
from labeler.core import AuthError, ConfigError, FatalInferenceError, InferenceError
from studio_emulator import EmuSample

AUDIOSET_HEARD_SAMPLES = fbank_heard_samples(1024)  # what the emulated AudioSet AST hears of a window


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


def gaps_s(hf) -> list[float]:
    """Seconds between consecutive requests the emulator received."""
    times = [r["at"] for r in hf.state.requests]
    return [b - a for a, b in zip(times, times[1:])]


def test_loading_model_is_waited_for(hf):
    hf.state.loading_requests = 2
    scores = classifier(hf, concurrency=1).classify([tone(MUSIC_HZ, 1, 16000)])
    assert scores[0, LABELS.index("Music")] == pytest.approx(0.9)
    assert hf.state.count == 3
    # estimated_time 0.2 s is waited as 1 s (the floor); the test backoff (20 ms) cannot explain it
    assert all(0.95 <= gap < 1.5 for gap in gaps_s(hf))


def test_model_that_never_loads_is_fatal_within_the_wait_bound(hf):
    hf.state.always_loading = True
    started = time.monotonic()
    with pytest.raises(FatalInferenceError, match="still loading"):
        classifier(hf, max_wait_s=2).classify([tone(MUSIC_HZ, 1, 16000)])
    assert 0.95 <= time.monotonic() - started < 5  # it did wait (1 s per loading answer), then gave up


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
    # the test backoff is 20 ms, so only Retry-After explains a 1 s wait between attempts
    assert all(0.95 <= gap < 1.5 for gap in gaps_s(hf))


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


def test_name_says_where_inference_runs(hf):
    assert classifier(hf).name == f"the inference endpoint {hf.url}"


# --- the class list learned from the endpoint when the hub's is unreadable -----------------------------


def test_preflight_learns_every_class_and_later_requests_ask_for_that_many(hf):
    client = RemoteClassifier(hf.url, HF_TOKEN, None, 4, 30.0)
    client.preflight()
    assert sorted(client.class_names) == sorted(LABELS)
    scores = client.classify([tone(MUSIC_HZ, 1, 16000)])
    assert [r["params"]["top_k"] for r in hf.state.requests] == [LEARN_TOP_K, 1, len(LABELS)]
    # Bird ranks 8th for a music tone: it keeps its real score, and scores are matched by name
    assert scores[0, client.class_names.index("Bird")] == pytest.approx(0.3)
    assert scores[0, client.class_names.index("Music")] == pytest.approx(0.9)


def test_unreadable_label_list_still_finds_a_low_ranked_label(studio, hf, run_block):
    hf.state.serve_config = False
    studio.state.add(EmuSample(201, "music.wav", 16000, [tone(MUSIC_HZ, 4, 16000)]))
    result = run_block(labels="Bird")
    assert result.code == 0, result.out + result.err
    assert studio.state.labels_of(201) == [{"startIndex": 0, "endIndex": 63999, "label": "Bird"}]
    assert (f"could not read the label list of {MODEL_ID} (HTTP 404); labels are "
            f"checked against the {len(LABELS)} classes the inference endpoint {hf.url} answered") in result.out
    assert {r["params"]["top_k"] for r in hf.state.requests[2:]} == {len(LABELS)}


def test_unreadable_label_list_still_rejects_an_unknown_label_and_says_where_the_list_came_from(
        project, hf, run_block):
    hf.state.serve_config = False
    result = run_block(labels="Speech\\nCat")
    assert result.code == 2 and "unknown label 'Cat'" in result.err
    assert (f"(the list of classes came from the inference endpoint {hf.url}, {len(LABELS)} classes, as the "
            "model's own list was unreadable: HTTP 404)") in result.err
    assert project.state.writes == [] and hf.state.count == 2  # the test requests only


# --- cold (scaled-to-zero) endpoints -----------------------------------------------------------------


def test_cold_endpoint_is_waited_for_until_it_answers(hf):
    hf.state.cold_requests = HTTP_MAX_ATTEMPTS + 2  # more bare 503s than failures allowed
    client = classifier(hf, concurrency=1)
    client.preflight()
    assert client.classify([tone(MUSIC_HZ, 1, 16000)])[0, LABELS.index("Music")] == pytest.approx(0.9)
    assert hf.state.count == HTTP_MAX_ATTEMPTS + 4


def test_cold_endpoint_wait_is_bounded_by_max_wait(hf):
    hf.state.cold_requests = 10**6
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"still loading the model after 1 s \(endpoint starting \(HTTP 503"):
        classifier(hf, concurrency=1, max_wait_s=1).preflight()
    assert time.monotonic() - started < 3


def test_bare_503_after_an_answer_is_a_failure(hf):
    hf.state.cold_after = 1  # answers the test request, then scales to zero
    client = classifier(hf, concurrency=1, max_wait_s=10)  # the attempts, not the deadline, end it
    client.preflight()
    with pytest.raises(InferenceError, match="HTTP 503"):
        client.classify([tone(MUSIC_HZ, 1, 16000)])
    assert hf.state.count == 1 + HTTP_MAX_ATTEMPTS


# --- only what the model hears is uploaded -------------------------------------------------------------


def test_heard_samples_match_the_local_feature_window():
    from transformers import ASTFeatureExtractor

    from labeler.classifiers.local import TorchFbank

    assert fbank_heard_samples(1024) == TorchFbank(ASTFeatureExtractor(), "cpu").max_samples() == 164_080


def test_long_window_uploads_only_what_the_model_hears(hf):
    heard = tone(MUSIC_HZ, AUDIOSET_HEARD_SAMPLES / 16000, 16000)
    long = concat(heard, tone(DOG_HZ, 50, 16000))  # whole, it would score as a dog
    scores = classifier(hf, concurrency=1).classify([heard, long])
    assert [r["seconds"] for r in hf.state.requests] == [AUDIOSET_HEARD_SAMPLES / 16000] * 2
    assert hf.state.requests[0]["size"] == hf.state.requests[1]["size"]
    assert np.array_equal(scores[0], scores[1]) and scores[1, LABELS.index("Music")] == pytest.approx(0.9)


def test_whole_sample_window_uploads_only_what_the_model_hears(studio, hf, run_block):
    studio.state.add(EmuSample(301, "long.wav", 16000, [concat(tone(DOG_HZ, 10.3, 16000), silence(50, 16000))]))
    result = run_block("--win-size-ms", "0")
    assert result.code == 0, result.out + result.err
    assert max(r["seconds"] for r in hf.state.requests) == AUDIOSET_HEARD_SAMPLES / 16000
    assert studio.state.labels_of(301) == [{"startIndex": 0, "endIndex": 964_799, "label": "Dog"}]


# --- partial failures -------------------------------------------------------------------------------


def test_failed_windows_are_named_and_the_others_keep_their_scores(hf):
    hf.state.fail_label = "Dog"
    windows = [tone(MUSIC_HZ, 1, 16000), tone(DOG_HZ, 1, 16000), tone(SPEECH_HZ, 1, 16000), tone(DOG_HZ, 2, 16000)]
    with pytest.raises(InferenceError, match=r"HTTP 500") as caught:
        classifier(hf, concurrency=2).classify(windows)
    assert caught.value.failed == (1, 3)
    assert caught.value.scores[0, LABELS.index("Music")] == pytest.approx(0.9)
    assert caught.value.scores[2, LABELS.index("Speech")] == pytest.approx(0.8)
    assert hf.state.count == 2 + 2 * HTTP_MAX_ATTEMPTS  # each failing window: its attempts, no more


def test_dead_endpoint_fails_every_window_within_its_attempts(hf):
    hf.state.error_after = 1  # answers the test request, then every request fails
    client = classifier(hf, concurrency=3, max_wait_s=60)
    client.preflight()
    with pytest.raises(InferenceError) as caught:
        client.classify([tone(MUSIC_HZ, 1, 16000)] * 3)
    assert caught.value.failed == (0, 1, 2) and caught.value.scores is None
    assert hf.state.count == 1 + 3 * HTTP_MAX_ATTEMPTS


def test_cancel_ends_the_retries_of_a_dead_endpoint_at_once(hf, monkeypatch):
    import threading

    import labeler.core

    monkeypatch.setattr(labeler.core, "HTTP_BACKOFF_BASE_S", 5.0)  # each retry would wait 5 s, 10 s, ...
    hf.state.error_after = 1
    client = classifier(hf, concurrency=2, max_wait_s=60)
    client.preflight()
    threading.Timer(0.5, client.cancel).start()
    started = time.monotonic()
    with pytest.raises(FatalInferenceError, match="run stopped"):
        client.classify([tone(MUSIC_HZ, 1, 16000)] * 6)  # 3 rounds of 2 windows, each ~75 s of retries
    assert time.monotonic() - started < 2.0
    assert hf.state.count == 1 + 2  # the two windows in flight were tried once; the queued four never


def test_cancel_does_not_wait_for_a_hanging_request(hf):
    import threading

    client = classifier(hf, concurrency=2, max_wait_s=60)
    client.preflight()
    hf.state.latency_s = 10.0  # the endpoint hangs on every later request
    threading.Timer(0.3, client.cancel).start()
    started = time.monotonic()
    try:
        with pytest.raises(FatalInferenceError, match="run stopped"):
            client.classify([tone(MUSIC_HZ, 1, 16000)] * 2)
        assert time.monotonic() - started < 2.0
    finally:
        hf.state.latency_s = 0.0


def test_fatal_errors_still_propagate_from_a_group(hf):
    hf.state.always_loading = True
    with pytest.raises(FatalInferenceError, match="still loading"):
        classifier(hf, concurrency=2, max_wait_s=1).classify([tone(MUSIC_HZ, 1, 16000)] * 4)


# --- endpoints that answer something other than what was asked ------------------------------------------


def assert_stopped_before_studio(result, studio, *fragments: str) -> None:
    """Exit 2 with one line naming what the endpoint did, and Studio never contacted."""
    assert result.code == 2, result.out + result.err
    errors = [line for line in result.err.splitlines() if line.strip()]
    assert len(errors) == 1 and "Traceback" not in result.err, result.err
    for fragment in fragments:
        assert fragment in errors[0]
    assert studio.state.requests == []


def test_endpoint_that_ignores_parameters_stops_the_run_before_studio(project, hf, run_block):
    hf.state.ignore_parameters = True  # top 5, softmax: every sample would be labeled other and disabled
    result = run_block("--disable-other")
    assert_stopped_before_studio(
        result, project,
        f"the inference endpoint {hf.url} answered 5 of the model's {len(LABELS)} classes to a test request "
        f"asking for all of them (top_k {len(LABELS)}): it ignores the request's parameters or caps top_k at 5",
        "use an endpoint that honours the request's parameters top_k and function_to_apply")


def test_endpoint_that_ignores_parameters_stops_a_run_that_learns_the_classes(project, hf, run_block):
    hf.state.serve_config, hf.state.ignore_parameters = False, True
    result = run_block("--disable-other")
    assert_stopped_before_studio(
        result, project,
        f"the inference endpoint {hf.url} answered 5 classes to a test request asking for 1 (top_k 1): "
        "it ignores the request's parameters")
    assert [r["params"]["top_k"] for r in hf.state.requests] == [LEARN_TOP_K, 1]


def test_endpoint_that_caps_top_k_fails_the_preflight(hf):
    hf.state.top_k_cap = 10
    with pytest.raises(ConfigError, match=f"answered 10 of the model's {len(LABELS)} classes .* caps top_k at 10"):
        classifier(hf).preflight()


def test_endpoint_running_a_model_with_other_class_names_fails_the_preflight(hf):
    hf.state.answer_names = [f"LABEL_{i}" for i in range(len(LABELS))]
    with pytest.raises(ConfigError, match=f"answered 0 of the model's {len(LABELS)} classes .*, and {len(LABELS)} "
                                          r"classes the model does not have \(e.g. 'LABEL_5'\): it runs another model"):
        classifier(hf).preflight()


@pytest.mark.parametrize("class_names", [LABELS, None], ids=["hub list", "learned list"])
def test_softmax_scores_to_a_sigmoid_request_fail_the_preflight(hf, class_names):
    hf.state.softmax_always = True  # honours top_k, ignores function_to_apply
    client = RemoteClassifier(hf.url, HF_TOKEN, class_names, 4, 30.0)
    with pytest.raises(ConfigError, match=f"asking for sigmoid scores with {len(LABELS)} scores that sum to "
                                          "1.0000, like softmax: it ignores function_to_apply"):
        client.preflight()


def test_sigmoid_scores_of_silence_pass_the_preflight(hf):
    client = classifier(hf)
    client.preflight()  # Silence 0.95 and 14 classes at 0.02: they sum to 1.23, far from a softmax 1
    assert hf.state.requests[0]["params"]["function_to_apply"] == "sigmoid"


def test_answer_missing_classes_mid_run_fails_the_window_naming_the_count(hf):
    hf.state.partial_after = 1  # the test request is answered in full, later ones with 5 classes
    client = classifier(hf, concurrency=1)
    client.preflight()
    with pytest.raises(InferenceError, match=f"answered 5 of {len(LABELS)} classes") as caught:
        client.classify([tone(MUSIC_HZ, 1, 16000)])
    assert caught.value.failed == (0,)  # a missing class is not scored 0


def test_answers_missing_classes_mid_run_label_no_sample_other(project, hf, run_block):
    hf.state.partial_after = 1
    result = run_block("--disable-other")
    assert result.code == 1
    assert f"answered 5 of {len(LABELS)} classes" in result.out + result.err
    assert all(project.state.labels_of(sid) is None for sid in project.state.samples)
    assert not any(sample.is_disabled for sample in project.state.samples.values())


def test_classes_the_model_does_not_have_are_ignored(hf):
    hf.state.extra_labels = ["Cat", "Speech synthesizer"]
    client = classifier(hf)
    client.preflight()
    scores = client.classify([tone(MUSIC_HZ, 1, 16000)])
    assert scores.shape == (1, len(LABELS)) and scores[0, LABELS.index("Music")] == pytest.approx(0.9)


def test_a_sample_whose_windows_fail_is_named_with_its_window_count_once(project, hf, run_block):
    hf.state.fail_label = "Dog"  # 102's two 1 s dog windows answer 500 on every attempt
    result = run_block("--win-size-ms", "1000")
    assert result.code == 1, result.out + result.err
    line = next(x for x in result.out.splitlines() if "not labeled: sample 102" in x)
    assert line.endswith("(2 of 4 windows)") and line.count("windows)") == 1, line

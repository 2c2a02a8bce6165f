"""What a model is, read from its own files: how much a window of it hears, how its scores are read,
and which models the block refuses."""

import numpy as np
import pytest

from labeler.core import ConfigError, LabelSpec, Settings
from labeler.models import (AST_INPUT, UNLIMITED_MODEL_CAP_SAMPLES, ModelInput, apply_score_function, model_input,
                            score_function)

AST = ["ASTForAudioClassification"]
WAV2VEC2 = ["Wav2Vec2ForSequenceClassification"]


@pytest.mark.parametrize("config, expected", [
    ({"architectures": AST}, "sigmoid"),  # AST trains with a sigmoid loss on every dataset
    ({"architectures": AST, "problem_type": "single_label_classification"}, "softmax"),  # the config decides
    ({"architectures": WAV2VEC2}, "softmax"),  # cross-entropy heads
    ({"architectures": WAV2VEC2, "problem_type": "multi_label_classification"}, "sigmoid"),
    ({"architectures": ["HubertForSequenceClassification"], "problem_type": None}, "softmax"),
    ({}, "softmax"),  # no architecture named: not AST
])
def test_auto_scores_as_the_model_was_trained(config, expected):
    assert score_function("auto", config, "m") == expected


def test_an_explicit_score_function_is_never_overridden():
    assert score_function("softmax", {"architectures": AST}, "m") == "softmax"
    assert score_function("sigmoid", {"architectures": WAV2VEC2}, "m") == "sigmoid"


def test_auto_without_a_config_is_sigmoid():
    assert score_function("auto", None, "m") == "sigmoid"


def test_a_regression_head_is_refused():
    with pytest.raises(ConfigError, match="--model m: its config says problem_type 'regression'"):
        score_function("auto", {"architectures": WAV2VEC2, "problem_type": "regression"}, "m")


@pytest.mark.parametrize("extractor, expected", [
    ({"feature_extractor_type": "ASTFeatureExtractor", "max_length": 1024, "sampling_rate": 16000}, AST_INPUT),
    ({"feature_extractor_type": "ASTFeatureExtractor", "max_length": 128, "sampling_rate": 16000},
     ModelInput(400 + 127 * 160, capped=False)),  # 1.2854 s: the speech-commands AST
    ({"feature_extractor_type": "Wav2Vec2FeatureExtractor", "sampling_rate": 16000},
     ModelInput(UNLIMITED_MODEL_CAP_SAMPLES, capped=True)),
    ({"feature_extractor_type": "WhisperFeatureExtractor", "n_samples": 480000, "sampling_rate": 16000},
     ModelInput(480000, capped=False)),
])
def test_what_a_window_of_the_model_hears(extractor, expected):
    assert model_input(extractor, "m") == expected


def test_the_ast_default_hears_10_255_s():
    assert AST_INPUT.heard_samples == 164_080 and AST_INPUT.heard_ms == 10_255


def test_a_model_expecting_another_rate_is_refused():
    with pytest.raises(ConfigError, match="--model m: its feature extractor expects 8000 Hz audio"):
        model_input({"feature_extractor_type": "Wav2Vec2FeatureExtractor", "sampling_rate": 8000}, "m")


# --- the settings fingerprint: unchanged for what 1.0.0 ran, so nothing finished is relabeled ---------------

SPECS = (LabelSpec("Speech", "Speech"), LabelSpec("Dog", "dog", 0.3))
FINGERPRINT_1_0_0 = ('{"block":"1.0.0","model":"MIT/ast-finetuned-audioset-10-10-0.4593","labels":[["Speech",'
                     '"Speech",0.2],["Dog","dog",0.3]],"other":"other","win_ms":2000,"stride_ms":2000}')


def test_the_fingerprint_of_the_default_model_and_options_is_byte_identical_to_1_0_0():
    settings = Settings(SPECS, "other", 2000, 2000, 0.2, "MIT/ast-finetuned-audioset-10-10-0.4593",
                        score_function=score_function("auto", {"architectures": AST}, "m"))
    assert settings.fingerprint() == FINGERPRINT_1_0_0


def test_softmax_scores_are_part_of_the_fingerprint():
    settings = Settings(SPECS, "other", 2000, 2000, 0.2, "MIT/ast-finetuned-audioset-10-10-0.4593",
                        score_function="softmax")
    assert settings.fingerprint() == FINGERPRINT_1_0_0[:-1] + ',"score":"softmax"}'


# --- scores from logits (both backends and the server) ------------------------------------------

def test_sigmoid_of_large_logits_neither_overflows_nor_leaves_zero_to_one():
    scores = apply_score_function(np.array([[-1000.0, -20.0, 0.0, 20.0, 1000.0]]), "sigmoid")[0]
    assert scores[2] == 0.5 and scores[0] == 0.0 and scores[-1] == 1.0
    assert scores[1] == pytest.approx(2.0611537e-09, rel=1e-6)  # not rounded to 0 on the way


def test_softmax_sums_to_one_per_row_and_keeps_rows_apart():
    logits = np.array([[1.0, 2.0, 3.0], [800.0, 800.0, 0.0]])  # a row that would overflow exp() unshifted
    scores = apply_score_function(logits, "softmax")
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(scores[1], [0.5, 0.5, 0.0], atol=1e-7)
    assert scores[0].argmax() == 2


def test_none_returns_the_logits_and_an_unknown_function_is_refused():
    logits = np.array([[1.5, -2.0]], np.float32)
    np.testing.assert_array_equal(apply_score_function(logits, "none"), logits)
    with pytest.raises(ValueError, match="unknown score function 'relu'"):
        apply_score_function(logits, "relu")

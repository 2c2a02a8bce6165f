"""What a model is, read from its own files: how much audio one window of it hears, which score
function its head was trained with, and whether the block can run it at all. Both backends use
these rules (local from the loaded config and extractor, remote from the hub's ``config.json`` and
``preprocessor_config.json``), so a model scores the same wherever it runs.

May import: ``core`` and ``audio`` (and numpy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .audio import MODEL_RATE_HZ, fbank_heard_samples
from .core import ConfigError

SCORE_FUNCTIONS = ("auto", "sigmoid", "softmax")
# What a Hugging Face-protocol request may ask for (its function_to_apply): "none" answers the logits.
REQUEST_SCORE_FUNCTIONS = ("sigmoid", "softmax", "none")
DEFAULT_SCORE_FUNCTION = "auto"
# A model whose extractor sets no length (wav2vec2, HuBERT, WavLM) hears at most this much of a
# window: attention cost grows with the square of the length, and one window of a one-hour sample
# must not take the machine's memory. 30 s is also what Whisper's encoder hears.
UNLIMITED_MODEL_CAP_S = 30.0
UNLIMITED_MODEL_CAP_SAMPLES = round(UNLIMITED_MODEL_CAP_S * MODEL_RATE_HZ)
# Architectures trained with a sigmoid loss whatever the dataset (AST's own recipe uses BCE on
# AudioSet and on Speech Commands alike); every other transformers head trains with cross-entropy.
SIGMOID_ARCHITECTURES = ("ASTForAudioClassification",)
PROBLEM_TYPE_SCORES = {"multi_label_classification": "sigmoid", "single_label_classification": "softmax"}


@dataclass(frozen=True)
class ModelInput:
    """How much of a window the model hears, in 16 kHz samples, and whether the model or the block's cap says so."""

    heard_samples: int
    capped: bool  # True: the model has no length limit and the block cuts at UNLIMITED_MODEL_CAP_S

    @property
    def heard_ms(self) -> float:
        return self.heard_samples * 1000 / MODEL_RATE_HZ

    def who_cuts(self) -> str:
        """How a warning says who cuts a longer window short: the block's cap, or the model itself."""
        return "the block sends the model" if self.capped else "the model only hears"


AST_INPUT = ModelInput(fbank_heard_samples(1024), capped=False)  # the AudioSet AST
UNKNOWN_INPUT = ModelInput(UNLIMITED_MODEL_CAP_SAMPLES, capped=True)  # nothing could be read


def model_input(extractor: Mapping, model: str) -> ModelInput:
    """What one window of the model hears, from its feature extractor's settings (preprocessor_config.json).

    AST pads or cuts its fbank to ``max_length`` frames of 10 ms (25 ms long); Whisper hears
    ``n_samples``; a waveform model without a limit hears up to the block's cap. A model whose
    extractor expects another rate than 16 kHz is refused: the block decodes, stores and sends 16 kHz.
    """
    rate_hz = extractor.get("sampling_rate", MODEL_RATE_HZ)
    if rate_hz != MODEL_RATE_HZ:
        raise ConfigError(f"--model {model}: its feature extractor expects {rate_hz} Hz audio; the block feeds "
                          f"models {MODEL_RATE_HZ} Hz mono audio only, so choose a {MODEL_RATE_HZ // 1000} kHz model")
    kind = str(extractor.get("feature_extractor_type", ""))
    if kind == "ASTFeatureExtractor":
        frames = int(extractor.get("max_length", 1024))
        return ModelInput(fbank_heard_samples(frames), capped=False)
    if kind == "WhisperFeatureExtractor" and extractor.get("n_samples"):
        return ModelInput(min(int(extractor["n_samples"]), UNLIMITED_MODEL_CAP_SAMPLES), capped=False)
    return UNKNOWN_INPUT


def check_classifier(config: Mapping, model: str) -> None:
    """Refuse what is not a classifier: a regression head has no classes to label with."""
    if config.get("problem_type") == "regression":
        raise ConfigError(f"--model {model}: its config says problem_type 'regression', so it predicts numbers, "
                          "not classes; choose an audio classification model")


def score_function(requested: str, config: Mapping | None, model: str) -> str:
    """``sigmoid`` or ``softmax``: as asked, or (``auto``) as the model was trained.

    ``auto`` follows ``config.problem_type`` when it is set; when it is not, AST is sigmoid and
    every other architecture softmax. This departs on purpose from transformers' pipeline, which
    takes softmax whenever problem_type is unset: AST's training uses a sigmoid loss everywhere.
    ``config`` None (unreadable) means sigmoid, as the block always did.
    """
    if requested != "auto":
        return requested
    if config is None:
        return "sigmoid"
    check_classifier(config, model)
    problem = config.get("problem_type")
    if problem in PROBLEM_TYPE_SCORES:
        return PROBLEM_TYPE_SCORES[problem]
    if problem:
        raise ConfigError(f"--model {model}: unknown problem_type {problem!r} in its config; "
                          "set --score-function sigmoid or softmax")
    architectures: Sequence[str] = config.get("architectures") or ()
    return "sigmoid" if any(a in SIGMOID_ARCHITECTURES for a in architectures) else "softmax"


def apply_score_function(logits: np.ndarray, function: str) -> np.ndarray:
    """Scores from logits (windows, classes) as float32: ``sigmoid``, ``softmax`` over each row, or ``none``."""
    logits = np.asarray(logits, dtype=np.float32)
    if function == "sigmoid":
        return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)  # no overflow for large |logits|
    if function == "softmax":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)
    if function == "none":
        return logits.copy()
    raise ValueError(f"unknown score function {function!r}")

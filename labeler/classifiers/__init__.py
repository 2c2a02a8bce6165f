"""Classifiers: one small interface, two backends, and how a run builds one.

A classifier scores 16 kHz mono windows over the model's classes. ``local`` runs any transformers
audio classifier in this process; ``remote`` posts windows to a Hugging Face-protocol endpoint.
What a model hears and how its scores are read come from ``models``, for both.

May import: ``core``, ``labels``, ``audio``, ``timeline``, ``models``. Backends are imported on demand, so the
remote path never imports torch or transformers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..core import ConfigError, LabelSpec, log
from ..labels import parse_label_specs
from ..models import DEFAULT_SCORE_FUNCTION, UNKNOWN_INPUT, ModelInput, model_input, score_function

if TYPE_CHECKING:
    from .remote import ModelFiles, Tokens


class Classifier(Protocol):
    """Scores 16 kHz mono windows over ``class_names`` with ``score_function`` (sigmoid or softmax)."""

    name: str  # where inference runs, for messages: "the inference endpoint <url>", "the local model <m> on cpu"
    class_names: Sequence[str]
    score_function: str  # resolved: "sigmoid" or "softmax"
    model_input: ModelInput  # how much of each window the model hears
    preferred_batch: int  # windows per classify() call that keep the backend busy
    parallel_groups: int  # classify() calls that may run at once

    def classify(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Return float32 scores of shape (len(windows), len(class_names)).

        When some windows fail, raise InferenceError with ``failed`` (their indices) and the
        rows of the others; a backend that cannot go on raises FatalInferenceError or ConfigError.
        """
        ...

    def cancel(self) -> None:
        """The run is stopping: give up work in flight soon (classify may then raise FatalInferenceError)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendOptions:
    """The command line's backend choices (validated there)."""

    backend: str  # "local" or "remote"
    model: str
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 0
    threads: int = 0
    inference_url: str = ""
    concurrency: int = 16
    max_wait_s: float = 300.0
    score_function: str = DEFAULT_SCORE_FUNCTION  # auto, sigmoid or softmax


def build_classifier(options: BackendOptions, labels_text: str,
                     environ: Mapping[str, str]) -> tuple[Classifier, tuple[LabelSpec, ...]]:
    """Load or connect the backend and validate the labels against the model's own label list."""
    if options.backend == "local":
        return _build_local(options, labels_text)
    return _build_remote(options, labels_text, environ)


def _build_local(options: BackendOptions, labels_text: str) -> tuple[Classifier, tuple[LabelSpec, ...]]:
    from .local import LocalClassifier

    classifier = LocalClassifier(options.model, options.device, options.dtype, options.batch_size, options.threads,
                                 options.score_function)
    precision = f"{classifier.precision_note}: {classifier.dtype_name}" if classifier.precision_note \
        else classifier.dtype_name  # --dtype auto on a CPU says what it measured
    log(f"Loaded {options.model} on {classifier.device} ({precision}, batch "
        f"{classifier.batch_size}, {classifier.score_function} scores) in {classifier.load_s:.1f} s")
    return classifier, parse_label_specs(labels_text, classifier.class_names)


def _build_remote(options: BackendOptions, labels_text: str,
                  environ: Mapping[str, str]) -> tuple[Classifier, tuple[LabelSpec, ...]]:
    """The model's config and extractor are read from the hub (or its folder) before any request:
    they decide the score function, how much of a window is uploaded, and the labels' check.
    Without a label list, labels are checked against the classes the endpoint's test answer lists
    (so a label ranked low still gets its real score)."""
    from .remote import LabelListUnavailable, RemoteClassifier, model_labels

    if options.dtype == "int8":  # Studio may pass a value stored before the user switched backend
        log("WARNING: --dtype int8 applies to --backend local only; the endpoint runs its own precision")
    tokens, files = _tokens_and_model_files(options, environ)
    hint = tokens.hub_hint(files.config_problem)  # why a private model's config is unreadable, said once
    scores = _remote_score_function(options, files.config, files.config_problem + hint)
    if options.score_function == "auto":
        hint = ""  # a hint means an unreadable config: the score function's warning above gave it
    heard = _remote_model_input(options.model, files.extractor, files.extractor_problem)
    labels: list[str] | None = None
    try:
        labels = model_labels(files)
        specs = parse_label_specs(labels_text, labels)
    except LabelListUnavailable as exc:
        unreadable = str(exc)
    classifier = RemoteClassifier(options.inference_url, tokens.endpoint, labels, options.concurrency,
                                  options.max_wait_s, scores, heard, tokens.hugging_face)
    try:
        classifier.preflight()  # before any sample is read: a run that cannot work stops here
        if labels is None:
            log(f"WARNING: could not read the label list of {options.model} ({unreadable}{hint}); labels are checked "
                f"against the {len(classifier.class_names)} classes {classifier.name} answered a test request "
                f"with, not against the model's own list")
            specs = _parse_against_learned(labels_text, classifier, unreadable)
    except BaseException:
        classifier.close()
        raise
    log(f"Using {options.model} at {classifier.name} ({len(classifier.class_names)} classes, {scores} scores, "
        f"up to {heard.heard_ms / 1000:g} s of each window uploaded)")
    return classifier, specs


def _tokens_and_model_files(options: BackendOptions, environ: Mapping[str, str]) -> tuple[Tokens, ModelFiles]:
    """Who gets which token (``remote.choose_tokens``), and the model's files read with the hub's."""
    from .remote import DEFAULT_HF_ENDPOINT, choose_tokens, fetch_model_files

    hub_endpoint = environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT
    tokens = choose_tokens(options.inference_url, hub_endpoint, environ)
    if not tokens.endpoint:
        log("WARNING: neither HF_TOKEN nor HF_API_KEY is set; inference requests carry no Authorization header "
            "(a test request checks that the endpoint accepts that)")
    return tokens, fetch_model_files(options.model, hub_endpoint, tokens.hub)


def _remote_score_function(options: BackendOptions, config: dict | None, problem: str) -> str:
    """The rule of ``models.score_function`` on the hub's config; unreadable, ``auto`` is sigmoid, said once."""
    if config is None and options.score_function == "auto":
        log(f"WARNING: could not read the config of {options.model} ({problem}), so --score-function auto cannot "
            "tell how its head was trained and asks for sigmoid scores; set --score-function softmax for a "
            "single-label model")
    return score_function(options.score_function, config, options.model)


def _remote_model_input(model: str, extractor: dict | None, problem: str) -> ModelInput:
    """What a window of the model hears, from the hub's preprocessor_config.json; unreadable, the cap, said once."""
    if extractor is not None:
        try:
            return model_input(extractor, model)
        except (TypeError, ValueError) as exc:  # a length that is not a number: as good as no file
            problem = f"{type(exc).__name__} in its values"
    log(f"WARNING: could not read the feature extractor settings of {model} (preprocessor_config.json: {problem}); "
        f"windows are uploaded whole up to the block's {UNKNOWN_INPUT.heard_ms / 1000:g} s cap, however much of "
        "them the model hears")
    return UNKNOWN_INPUT


def _parse_against_learned(labels_text: str, classifier: Classifier, unreadable: str) -> tuple[LabelSpec, ...]:
    """Labels checked against classes learned from the endpoint: an unknown one says where the list came from."""
    parse_label_specs(labels_text, None)  # a mistake in the text itself is reported as it is
    try:
        return parse_label_specs(labels_text, classifier.class_names)
    except ConfigError as exc:  # the text parsed above, so this is an unknown label
        raise ConfigError(f"{exc} (the list of classes came from {classifier.name}, {len(classifier.class_names)} "
                          f"classes, as the model's own list was unreadable: {unreadable})") from None


def warn_if_windows_are_longer_than_heard(win_size_ms: int, classifier: Classifier) -> None:
    """The model hears only the start of a longer window: the model's own length, or the block's cap."""
    heard = classifier.model_input
    if win_size_ms > heard.heard_ms:
        why = "the block's cap for models with no known length limit" if heard.capped else "the model's input"
        log(f"WARNING: --win-size-ms {win_size_ms} is longer than {heard.heard_ms:g} ms, {why}; "
            f"{heard.who_cuts()} the first {heard.heard_ms / 1000:g} s of each window")

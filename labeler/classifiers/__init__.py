"""Classifiers: one small interface, two backends, and how a run builds one.

A classifier scores 16 kHz mono windows over the model's classes. ``local`` runs AST in this
process; ``remote`` posts windows to a Hugging Face-protocol endpoint. To swap the model for
another audio classifier, this package is the one room to change.

May import: ``core``, ``labels``, ``audio``, ``timeline``. Backends are imported on demand, so the
remote path never imports torch or transformers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..core import LabelSpec, log
from ..labels import parse_label_specs


class Classifier(Protocol):
    """Scores 16 kHz mono windows over ``class_names`` (sigmoid, multi-label)."""

    class_names: Sequence[str]
    preferred_batch: int  # windows per classify() call that keep the backend busy
    parallel_groups: int  # classify() calls that may run at once

    def classify(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Return float32 scores of shape (len(windows), len(class_names))."""
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


def build_classifier(options: BackendOptions, labels_text: str,
                     environ: Mapping[str, str]) -> tuple[Classifier, tuple[LabelSpec, ...]]:
    """Load or connect the backend and validate the labels against the model's own label list."""
    if options.backend == "local":
        from .local import LocalClassifier

        classifier = LocalClassifier(options.model, options.device, options.dtype, options.batch_size,
                                     options.threads)
        log(f"Loaded {options.model} on {classifier.device} ({classifier.dtype_name}, batch "
            f"{classifier.batch_size}) in {classifier.load_s:.1f} s")
        return classifier, parse_label_specs(labels_text, classifier.class_names)
    from .remote import DEFAULT_HF_ENDPOINT, RemoteClassifier, fetch_model_labels

    token = environ.get("HF_TOKEN") or environ.get("HF_API_KEY")
    if not token:
        log("WARNING: neither HF_TOKEN nor HF_API_KEY is set; inference requests carry no Authorization header "
            "(a test request checks that the endpoint accepts that)")
    labels = fetch_model_labels(options.model, environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT, token)
    specs = parse_label_specs(labels_text, labels)
    class_names = list(labels) if labels is not None else [s.model_label for s in specs]
    classifier = RemoteClassifier(options.inference_url, token, class_names, options.concurrency, options.max_wait_s)
    try:
        classifier.preflight()  # before any sample is read: a run that cannot work stops here
    except BaseException:
        classifier.close()
        raise
    return classifier, specs

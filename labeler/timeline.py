"""Time in a sample's own index space: which windows to score, how window scores become one
score per stride step, which label wins each step, and the gap-free segments (inclusive ends)
that Studio stores. Pure numpy: no I/O.

May import: ``core``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .core import LabelSpec, Settings


@dataclass(frozen=True)
class Window:
    """A window of sample indices, half-open: [start_ix, stop_ix)."""

    start_ix: int
    stop_ix: int


@dataclass(frozen=True)
class Segment:
    """A structured label as Studio stores it: inclusive end_ix."""

    start_ix: int
    end_ix: int
    label: str


def ms_to_ix(ms: float, frequency_hz: float) -> int:
    """Milliseconds to a whole number of samples (at least 1)."""
    return max(1, round(ms * frequency_hz / 1000.0))


def plan_windows(values_count: int, frequency_hz: float, win_size_ms: int, win_stride_ms: int) -> list[Window]:
    """Windows that cover every index; a last window is aligned to the end to cover the tail.

    Every window but the tail one starts on a multiple of the stride. A sample shorter than one
    window (or ``win_size_ms == 0``) is one window.
    """
    if values_count <= 0:
        return []
    win_ix = values_count if win_size_ms == 0 else ms_to_ix(win_size_ms, frequency_hz)
    if win_ix >= values_count:
        return [Window(0, values_count)]
    stride_ix = ms_to_ix(win_stride_ms, frequency_hz)
    windows = [Window(s, s + win_ix) for s in range(0, values_count - win_ix + 1, stride_ix)]
    if windows[-1].stop_ix < values_count:
        windows.append(Window(values_count - win_ix, values_count))
    return windows


def step_ix(values_count: int, frequency_hz: float, settings: Settings) -> int:
    """The resolution of the labels: one stride, or the whole sample for whole-sample windows."""
    if settings.win_size_ms == 0:
        return values_count
    return min(values_count, ms_to_ix(settings.win_stride_ms, frequency_hz))


def aggregate_steps(windows: Sequence[Window], scores: np.ndarray, values_count: int, step: int,
                    combine: str = "mean") -> np.ndarray:
    """Score each stride step from the windows covering it: ``mean`` (weighted by overlap) or ``min``.

    ``scores`` is (windows, classes); the result is (steps, classes) with
    ``steps = ceil(values_count / step)``. Every step is covered by at least one window.
    """
    if combine == "min":
        return _min_steps(windows, scores, values_count, step)
    n_steps = math.ceil(values_count / step)
    sums = np.zeros((n_steps, scores.shape[1]), dtype=np.float64)
    weights = np.zeros(n_steps, dtype=np.float64)
    for window, row in zip(windows, scores):
        for k in range(window.start_ix // step, math.ceil(window.stop_ix / step)):
            overlap = min(window.stop_ix, (k + 1) * step, values_count) - max(window.start_ix, k * step)
            if overlap > 0:
                sums[k] += overlap * row
                weights[k] += overlap
    return sums / weights[:, None]


def _min_steps(windows: Sequence[Window], scores: np.ndarray, values_count: int, step: int) -> np.ndarray:
    """Each step keeps, per class, the lowest score of any window that overlaps it.

    AST answers "is this sound anywhere in the window?", so a window that only touches an event
    scores almost as high as one full of it; the lowest covering window is the one that best
    says whether the step itself holds the sound.
    """
    lowest = np.full((math.ceil(values_count / step), scores.shape[1]), np.inf)
    for window, row in zip(windows, scores):
        # Steps first_k .. last_k - 1 all overlap [start_ix, stop_ix) by at least one index.
        first_k, last_k = window.start_ix // step, math.ceil(window.stop_ix / step)
        np.minimum(lowest[first_k:last_k], row, out=lowest[first_k:last_k])
    return lowest


def winning_specs(step_scores: np.ndarray, specs: Sequence[LabelSpec], settings: Settings) -> np.ndarray:
    """Per step, the index of the best-scoring spec at or above its threshold, or -1 (other)."""
    thresholds = np.array([settings.threshold(s) for s in specs])
    passing = np.where(step_scores >= thresholds, step_scores, -np.inf)
    best = passing.argmax(axis=1)
    return np.where(np.isfinite(passing[np.arange(len(best)), best]), best, -1)


def choose_labels(step_scores: np.ndarray, specs: Sequence[LabelSpec], settings: Settings) -> list[str]:
    """Per step: the best-scoring label of interest at or above its threshold, else other."""
    return [specs[w].output_label if w >= 0 else settings.other_label
            for w in winning_specs(step_scores, specs, settings)]


def steps_to_segments(labels: Sequence[str], step: int, values_count: int) -> list[Segment]:
    """Merge equal neighbouring steps into segments with inclusive ends covering 0..N-1."""
    segments: list[Segment] = []
    for k, label in enumerate(labels):
        start, end = k * step, min((k + 1) * step, values_count) - 1
        if segments and segments[-1].label == label:
            segments[-1] = Segment(segments[-1].start_ix, end, label)
        else:
            segments.append(Segment(start, end, label))
    return segments


def sample_label(step_scores: np.ndarray, winners: np.ndarray, lengths: np.ndarray,
                 specs: Sequence[LabelSpec], other_label: str) -> str:
    """One label for a whole sample: a label of interest found anywhere beats other; among them,
    the one holding the most time wins, ties going to the higher mean score over that time."""
    best: tuple[float, float, int] | None = None
    for k in range(len(specs)):
        held = winners == k
        if not held.any():
            continue
        time_ix = float(lengths[held].sum())
        mean_score = float(np.average(step_scores[held, k], weights=lengths[held]))
        if best is None or (time_ix, mean_score) > best[:2]:
            best = (time_ix, mean_score, k)
    return other_label if best is None else specs[best[2]].output_label


def step_lengths(step: int, n_steps: int, values_count: int) -> np.ndarray:
    """Indices in each step: all ``step`` but the last, which may be short."""
    return np.minimum(step, values_count - step * np.arange(n_steps))


@dataclass(frozen=True)
class Labeling:
    """What a sample's window scores became: segments, and the per-step evidence behind them."""

    segments: list[Segment]
    step: int  # stride step in sample indices
    step_scores: np.ndarray  # (steps, specs): combined score of each label of interest
    winners: np.ndarray  # (steps,): index of the winning spec, -1 for other
    # Written to Studio, info.labels and the report alike: computed once, in label_sample.
    confidence: dict[str, str] = field(default_factory=dict)
    single_label: str | None = None  # the sample's one label in single-label mode

    @property
    def found_interest(self) -> bool:
        """True when some step got a label of interest (False: the whole sample is other)."""
        return bool((self.winners >= 0).any())


def class_index(names: Sequence[str]) -> dict[str, int]:
    """Column of each class by lowercased name (label matching is case-insensitive everywhere)."""
    return {name.lower(): i for i, name in enumerate(names)}


def label_sample(windows: Sequence[Window], class_scores: np.ndarray, values_count: int, step: int,
                 settings: Settings, index: dict[str, int]) -> Labeling:
    """From window scores over all classes (columns named by ``index``) to segments covering the sample.

    In single-label mode the segments are one segment covering the sample with its one label.
    """
    columns = [index[s.model_label.lower()] for s in settings.specs]
    step_scores = aggregate_steps(windows, class_scores[:, columns], values_count, step, settings.combine)
    winners = winning_specs(step_scores, settings.specs, settings)
    confidence = confidence_metadata(step, step_scores, winners, values_count)
    if settings.label_mode == "single":
        lengths = step_lengths(step, len(winners), values_count)
        label = sample_label(step_scores, winners, lengths, settings.specs, settings.other_label)
        return Labeling([Segment(0, values_count - 1, label)], step, step_scores, winners, confidence, label)
    labels = [settings.specs[w].output_label if w >= 0 else settings.other_label for w in winners]
    return Labeling(steps_to_segments(labels, step, values_count), step, step_scores, winners, confidence)


def confidence_metadata(step: int, step_scores: np.ndarray, winners: np.ndarray, values_count: int) -> dict[str, str]:
    """Metadata to filter doubtful samples by: the winning scores weighted by step length (the tail
    step may be short), and the share of time labeled other."""
    lengths = step_lengths(step, len(winners), values_count)
    won = winners >= 0
    scores = step_scores[np.arange(len(won)), winners][won]
    other_share = float(lengths[~won].sum() / lengths.sum())
    return {
        "ast_confidence_mean": f"{float(np.average(scores, weights=lengths[won])):.3f}" if won.any() else "none",
        "ast_confidence_min": f"{float(scores.min()):.3f}" if won.any() else "none",
        "ast_other_share": f"{other_share:.3f}",
    }

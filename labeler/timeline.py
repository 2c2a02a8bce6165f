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
    ``steps = ceil(values_count / step)``. Every step is covered by at least one window. Neither
    rule loops over the steps a window covers: a 1 ms stride under 1 s windows costs about as much
    as the windows and steps themselves (``min`` adds a factor log2 of a window's length in steps).
    """
    starts = np.array([w.start_ix for w in windows], dtype=np.int64)  # an empty list would be float
    stops = np.array([w.stop_ix for w in windows], dtype=np.int64)
    rows = np.asarray(scores)
    if combine == "min":
        return _min_steps(starts, stops, rows, values_count, step)
    return _mean_steps(starts, stops, rows, values_count, step)


def _mean_steps(starts: np.ndarray, stops: np.ndarray, rows: np.ndarray, values_count: int,
                step: int) -> np.ndarray:
    """Overlap-weighted mean. A window adds its run of whole steps through a difference array
    (each weighted by the step's length); only its first and last step can be covered in part
    (the short last step of a sample counts as partly covered: its overlap is its length)."""
    n_steps = math.ceil(values_count / step)
    first_full, end_full = -(-starts // step), stops // step
    run = first_full < end_full
    delta = np.zeros((n_steps + 1, rows.shape[1]))
    count_delta = np.zeros(n_steps + 1)
    np.add.at(delta, first_full[run], rows[run])
    np.add.at(delta, end_full[run], -rows[run])
    np.add.at(count_delta, first_full[run], 1.0)
    np.add.at(count_delta, end_full[run], -1.0)
    lengths = step_lengths(step, n_steps, values_count)
    sums = np.cumsum(delta[:n_steps], axis=0) * lengths[:, None]
    weights = np.cumsum(count_delta[:n_steps]) * lengths
    head, tail = starts // step, -(-stops // step) - 1
    head_partial = (head < first_full) | (head >= end_full)
    tail_partial = (tail != head) & (tail >= end_full)
    for k, partial in ((head, head_partial), (tail, tail_partial)):
        overlap = np.minimum(stops, np.minimum((k + 1) * step, values_count)) - np.maximum(starts, k * step)
        np.add.at(sums, k[partial], overlap[partial, None] * rows[partial])
        np.add.at(weights, k[partial], overlap[partial])
    return sums / weights[:, None]


def _min_steps(starts: np.ndarray, stops: np.ndarray, rows: np.ndarray, values_count: int,
               step: int) -> np.ndarray:
    """Each step keeps, per class, the lowest score of any window that overlaps it.

    AST answers "is this sound anywhere in the window?", so a window that only touches an event
    scores almost as high as one full of it; the lowest covering window is the one that best
    says whether the step itself holds the sound.

    A window's run of steps is the union of two runs of 2**level steps (level = floor(log2 of
    its length)), one from each end; the minima per level are then halved down to single steps.
    """
    n_steps = math.ceil(values_count / step)
    first_k, last_k = starts // step, -(-stops // step)  # steps first_k .. last_k - 1 overlap it
    level = np.frexp(last_k - first_k)[1] - 1  # exact floor(log2) for ints
    lowest = np.full((n_steps, rows.shape[1]), np.inf)
    for lv in range(int(level.max(initial=0)), -1, -1):
        # From runs of 2**(lv + 1) steps (all inf at the top) to runs of 2**lv: the run from k
        # is the runs of 2**lv from k and from k + 2**lv.
        np.minimum(lowest[2**lv:], lowest[:-2**lv].copy(), out=lowest[2**lv:])
        at = level == lv
        np.minimum.at(lowest, first_k[at], rows[at])
        np.minimum.at(lowest, last_k[at] - 2**lv, rows[at])
    return lowest


def winning_specs(step_scores: np.ndarray, specs: Sequence[LabelSpec], settings: Settings) -> np.ndarray:
    """Per step, the index of the best-scoring spec at or above its threshold, or -1 (other).

    The model's scores are float32: 0.7 scored is 0.699999988 as a float64, below a threshold
    typed as 0.7. Score and threshold are compared at float32 precision, so a score equal to its
    threshold as the user wrote it passes.
    """
    thresholds = np.array([settings.threshold(s) for s in specs], dtype=np.float32)
    passing = np.where(step_scores.astype(np.float32) >= thresholds, step_scores, -np.inf)
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
    the one holding the most time wins, ties going to the higher mean score over that time.

    Time is pooled by output label: classes renamed to one label ("Dog (pet)", "Cat (pet)") hold
    their time together."""
    candidates = []
    for order, label in enumerate(dict.fromkeys(s.output_label for s in specs)):
        held = label_held(winners, specs, label)
        if held.any():
            mean_score = np.average(step_scores[held, winners[held]], weights=lengths[held])
            # A tie in time and score goes to the label listed first.
            candidates.append((int(lengths[held].sum()), float(mean_score), -order, label))
    return max(candidates)[-1] if candidates else other_label


def label_held(winners: np.ndarray, specs: Sequence[LabelSpec], label: str) -> np.ndarray:
    """Per step, whether ``label`` won it (through any spec written as that label)."""
    ixs = [k for k, s in enumerate(specs) if s.output_label == label]
    return np.isin(winners, ixs)


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

    In single-label mode the segments are one segment covering the sample with its one label, and
    the confidence keys describe that label: its scores over the time it holds, and the share of
    time it does not hold as the other share.
    """
    columns = [index[s.model_label.lower()] for s in settings.specs]
    step_scores = aggregate_steps(windows, class_scores[:, columns], values_count, step, settings.combine)
    winners = winning_specs(step_scores, settings.specs, settings)
    if settings.label_mode == "single":
        lengths = step_lengths(step, len(winners), values_count)
        label = sample_label(step_scores, winners, lengths, settings.specs, settings.other_label)
        written = np.where(label_held(winners, settings.specs, label), winners, -1)
        confidence = confidence_metadata(step, step_scores, written, values_count)
        return Labeling([Segment(0, values_count - 1, label)], step, step_scores, winners, confidence, label)
    labels = [settings.specs[w].output_label if w >= 0 else settings.other_label for w in winners]
    confidence = confidence_metadata(step, step_scores, winners, values_count)
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

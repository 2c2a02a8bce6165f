"""Window planning, score aggregation and segments: examples plus invariants over many shapes."""

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labeler.core import LabelSpec, Settings
from labeler.labels import parse_label_specs
from labeler.timeline import (Segment, Window, aggregate_steps, choose_labels, class_index, confidence_metadata,
                              label_sample, ms_to_ix, plan_windows, sample_label, step_ix, step_lengths,
                              steps_to_segments, winning_specs)

RATES = [8000, 11025, 16000, 22050, 44100, 48000]


def make_settings(win_ms=1000, stride_ms=1000, specs=(LabelSpec("A", "a"), LabelSpec("B", "b")), min_conf=0.5,
                  combine="min", label_mode="multi"):
    return Settings(tuple(specs), "other", win_ms, stride_ms, min_conf, "m", label_mode, combine)


def test_exact_multiple_has_no_duplicate_tail_window():
    assert plan_windows(32000, 16000, 1000, 1000) == [Window(0, 16000), Window(16000, 32000)]


def test_tail_is_covered_by_an_end_aligned_window():
    assert plan_windows(40000, 16000, 2000, 2000) == [Window(0, 32000), Window(8000, 40000)]


def test_sample_shorter_than_a_window_is_one_window():
    assert plan_windows(8000, 16000, 2000, 2000) == [Window(0, 8000)]


def test_window_size_zero_is_the_whole_sample():
    assert plan_windows(500_000, 16000, 0, 1000) == [Window(0, 500_000)]


def test_windows_at_44k1_are_planned_in_the_samples_own_index_space():
    windows = plan_windows(44100 * 3, 44100, 1000, 500)
    assert windows[:3] == [Window(0, 44100), Window(22050, 66150), Window(44100, 88200)]
    assert windows[-1].stop_ix == 44100 * 3


def test_an_empty_sample_has_no_windows():
    assert plan_windows(0, 16000, 1000, 1000) == []


@pytest.mark.parametrize("ms, rate, expected", [(1, 1000, 1), (0.01, 16000, 1), (2, 1000, 2), (1, 44100, 44)])
def test_ms_to_ix_rounds_to_at_least_one_index(ms, rate, expected):
    assert ms_to_ix(ms, rate) == expected


def test_step_is_the_stride_or_the_whole_sample_for_whole_sample_windows():
    assert step_ix(500_000, 16000, make_settings(win_ms=0, stride_ms=1000)) == 500_000
    assert step_ix(500_000, 16000, make_settings(win_ms=2000, stride_ms=1000)) == 16000
    assert step_ix(8000, 16000, make_settings(win_ms=2000, stride_ms=1000)) == 8000


def test_class_columns_are_found_by_lowercased_name():
    assert class_index(["Speech", "Dog"]) == {"speech": 0, "dog": 1}


def test_label_sample_picks_each_labels_column_by_name_and_keeps_the_evidence():
    # Scores for three classes; the labels of interest are the third and the first, matched case-insensitively.
    specs = (LabelSpec("Dog", "dog"), LabelSpec("Speech", "speech"))
    s = make_settings(1000, 1000, specs=specs, combine="mean")
    windows = plan_windows(2500, 1000, 1000, 1000)
    scores = np.array([[0.1, 0.0, 0.9], [0.8, 0.3, 0.0], [0.7, 0.9, 0.2]])
    labeling = label_sample(windows, scores, 2500, 1000, s, class_index(["Speech", "Music", "DOG"]))
    assert labeling.segments == [Segment(0, 999, "dog"), Segment(1000, 2499, "speech")]
    assert labeling.step == 1000 and labeling.winners.tolist() == [0, 1, 1]
    # step [1000, 2000): all of the second window, half of the end-aligned third [1500, 2500)
    np.testing.assert_allclose(labeling.step_scores, [[0.9, 0.1], [0.1 / 1.5, 1.15 / 1.5], [0.2, 0.7]])
    single_mode = label_sample(windows, scores, 2500, 1000, make_settings(1000, 1000, specs=specs, combine="mean",
                                                                          label_mode="single"),
                               class_index(["Speech", "Music", "DOG"]))
    assert single_mode.single_label == "speech" and single_mode.step == 1000
    assert single_mode.step_scores.tolist() == labeling.step_scores.tolist()
    assert single_mode.winners.tolist() == [0, 1, 1]


def test_single_window_sample_gets_one_segment():
    s = make_settings()
    scores = np.array([[0.9, 0.1]])
    segments = label_sample([Window(0, 100)], scores, 100, 100, s, {"a": 0, "b": 1}).segments
    assert segments == [Segment(0, 99, "a")]


def test_below_threshold_is_other_and_per_label_threshold_wins():
    specs = (LabelSpec("A", "a", 0.95), LabelSpec("B", "b", 0.1))
    s = make_settings(specs=specs)
    assert choose_labels(np.array([[0.9, 0.05], [0.9, 0.2], [0.96, 0.2]]), specs, s) == ["other", "b", "a"]


def test_a_float32_score_exactly_at_its_threshold_passes():
    # The model scores in float32: 0.7 arrives as 0.699999988, below the float64 threshold 0.7.
    specs = parse_label_specs("Dog (dog, 0.7)\\nCat (cat, 0.35)", None)
    at = np.array([[0.7, 0.0], [0.0, 0.35]], dtype=np.float32)
    assert choose_labels(at, specs, make_settings(specs=specs)) == ["dog", "cat"]
    below = np.nextafter(at, np.float32(0))
    assert choose_labels(below, specs, make_settings(specs=specs)) == ["other", "other"]


def test_a_float32_score_at_min_confidence_passes_after_aggregation():
    # Two overlapping windows of the same float32 score: the mean (computed in float64) is still it.
    windows = [Window(0, 1500), Window(500, 2000)]
    scores = np.array([[0.7, 0.1], [0.7, 0.1]], dtype=np.float32)
    for combine in ("mean", "min"):
        s = make_settings(1000, 500, min_conf=0.7, combine=combine)
        assert label_sample(windows, scores, 2000, 500, s, {"a": 0, "b": 1}).segments == [Segment(0, 1999, "a")]


def test_an_aggregated_score_that_is_the_threshold_in_float32_passes():
    # A mean of float32 scores computed in float64 can land a rounding step below the float32 value.
    specs = (LabelSpec("A", "a", 0.7),)
    just_below = np.nextafter(np.float64(np.float32(0.7)), 0)
    assert choose_labels(np.array([[just_below]]), specs, make_settings(specs=specs)) == ["a"]


def test_highest_passing_score_wins():
    specs = (LabelSpec("A", "a"), LabelSpec("B", "b"))
    assert choose_labels(np.array([[0.6, 0.7]]), specs, make_settings(specs=specs)) == ["b"]


def test_adjacent_equal_labels_are_merged():
    assert steps_to_segments(["a", "a", "b", "b", "a"], 10, 45) == [
        Segment(0, 19, "a"), Segment(20, 39, "b"), Segment(40, 44, "a")]


def test_overlapping_windows_are_averaged_per_stride_step_weighted_by_overlap():
    # Windows off the step grid: step 2 [20, 30) holds 10 indices of the first window and 8 of the
    # second, step 3 [30, 40) 5 and 10. An unweighted mean would give 0.5 to both.
    windows = [Window(0, 35), Window(22, 60)]
    scores = np.array([[1.0], [0.0]])
    assert aggregate_steps(windows, scores, 60, 10)[:, 0].tolist() == pytest.approx([1, 1, 10 / 18, 5 / 15, 0, 0])


def test_overlap_weighting_of_the_end_aligned_tail_window():
    # 4.5 s at 1 kHz, 2 s windows every 2 s, 1 s steps: the tail window [2500, 4500) is off the step
    # grid and holds only half of step 2 [2000, 3000); the last step [4000, 4500) is short.
    windows = plan_windows(4500, 1000, 2000, 2000)
    assert windows == [Window(0, 2000), Window(2000, 4000), Window(2500, 4500)]
    combined = aggregate_steps(windows, np.array([[0.0], [0.3], [0.9]]), 4500, 1000)[:, 0]
    assert combined.tolist() == pytest.approx([0, 0, (1000 * 0.3 + 500 * 0.9) / 1500, 0.6, 0.9])


def test_boundary_lands_within_one_stride_of_the_change():
    # A 10 s sample: label A for the first 6.3 s, then B. 2 s windows, 250 ms stride, 1 kHz index rate.
    # Scores grow with how much of the window each sound fills: the mean rule places the boundary.
    rate, n, change = 1000, 10_000, 6300
    s = make_settings(2000, 250, combine="mean")
    windows = plan_windows(n, rate, 2000, 250)
    share_a = np.array([max(0, min(w.stop_ix, change) - w.start_ix) / (w.stop_ix - w.start_ix) for w in windows])
    scores = np.stack([share_a, 1 - share_a], axis=1)
    segments = label_sample(windows, scores, n, step_ix(n, rate, s), s, {"a": 0, "b": 1}).segments
    assert [seg.label for seg in segments] == ["a", "b"]
    assert abs(segments[1].start_ix - change) <= 250


@settings(max_examples=300, deadline=None)
@given(values_count=st.integers(1, 400_000), rate=st.sampled_from(RATES),
       win_ms=st.integers(0, 12_000), stride_frac=st.floats(0.05, 1.0), seed=st.integers(0, 2**32 - 1),
       combine=st.sampled_from(["mean", "min"]))
def test_segments_always_cover_the_sample_exactly(values_count, rate, win_ms, stride_frac, seed, combine):
    stride_ms = max(1, int(max(win_ms, 1) * stride_frac))
    s = make_settings(win_ms, stride_ms, min_conf=0.4, combine=combine)
    windows = plan_windows(values_count, rate, win_ms, stride_ms)
    # every window is inside the sample and the windows cover every index
    assert windows[0].start_ix == 0 and windows[-1].stop_ix == values_count
    assert all(0 <= w.start_ix < w.stop_ix <= values_count for w in windows)
    assert len(set(windows)) == len(windows)
    scores = np.random.default_rng(seed).random((len(windows), 2))
    segments = label_sample(windows, scores, values_count, step_ix(values_count, rate, s), s, {"a": 0, "b": 1}).segments
    assert segments[0].start_ix == 0 and segments[-1].end_ix == values_count - 1
    for before, after in zip(segments, segments[1:]):
        assert after.start_ix == before.end_ix + 1  # no gap, no overlap
        assert after.label != before.label  # merged
    assert all(seg.start_ix <= seg.end_ix for seg in segments)


@settings(max_examples=200, deadline=None)
@given(values_count=st.integers(1, 200_000), rate=st.sampled_from(RATES), win_ms=st.integers(1, 5000),
       stride_frac=st.floats(0.05, 1.0))
def test_windows_cover_every_step_and_start_on_stride(values_count, rate, win_ms, stride_frac):
    stride_ms = max(1, int(win_ms * stride_frac))
    windows = plan_windows(values_count, rate, win_ms, stride_ms)
    covered = np.zeros(values_count, bool)
    for w in windows:
        covered[w.start_ix:w.stop_ix] = True
    assert covered.all()
    stride = round(stride_ms * rate / 1000)
    assert all(w.start_ix % stride == 0 for w in windows[:-1])


@pytest.mark.parametrize("rate", RATES)
def test_constant_scores_give_one_segment(rate):
    s = make_settings(2000, 500)
    windows = plan_windows(rate * 7 + 13, rate, 2000, 500)
    scores = np.tile([0.8, 0.1], (len(windows), 1))
    segments = label_sample(windows, scores, rate * 7 + 13, step_ix(rate * 7 + 13, rate, s), s, {"a": 0, "b": 1}).segments
    assert segments == [Segment(0, rate * 7 + 12, "a")]


# --- aggregation against the straightforward definitions -------------------------------------------------


def reference_steps(windows, scores, values_count, step, combine):
    """The definitions, step by step: every window overlapping a step, by how many indices."""
    result = []
    for k in range(-(-values_count // step)):
        lo, hi = k * step, min((k + 1) * step, values_count)
        covering = [(min(w.stop_ix, hi) - max(w.start_ix, lo), row) for w, row in zip(windows, scores)
                    if min(w.stop_ix, hi) > max(w.start_ix, lo)]
        if combine == "min":
            result.append(np.min([row for _, row in covering], axis=0))
        else:
            result.append(sum(n * row for n, row in covering) / sum(n for n, _ in covering))
    return np.array(result)


@st.composite
def windowed_samples(draw):
    """Planned windows (the tail one aligned to the end, off the stride grid), steps that need not
    divide the stride, and extra windows of any length anywhere, in any order."""
    values_count = draw(st.integers(1, 3000))
    win_ix = draw(st.integers(1, 1200))
    windows = plan_windows(values_count, 1000, win_ix, draw(st.integers(1, win_ix)))
    extra = draw(st.lists(st.tuples(st.integers(0, values_count - 1), st.integers(1, values_count)), max_size=6))
    windows += [Window(start, min(values_count, start + length)) for start, length in extra]
    windows = draw(st.permutations(windows))
    step = draw(st.integers(1, values_count))
    scores = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).random((len(windows), 3)).astype(np.float32)
    return windows, scores, values_count, step


@settings(max_examples=400, deadline=None)
@given(sample=windowed_samples(), combine=st.sampled_from(["mean", "min"]))
def test_aggregation_matches_the_definition(sample, combine):
    windows, scores, values_count, step = sample
    fast = aggregate_steps(windows, scores, values_count, step, combine)
    expected = reference_steps(windows, scores.astype(np.float64), values_count, step, combine)
    assert fast.shape == expected.shape
    if combine == "min":
        assert np.array_equal(fast, expected)
    else:
        np.testing.assert_allclose(fast, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("combine", ["mean", "min"])
def test_no_windows_give_no_steps(combine):
    assert aggregate_steps([], np.zeros((0, 2), np.float32), 0, 1, combine).shape == (0, 2)


def test_a_fine_stride_over_a_long_sample_is_aggregated_quickly():
    # 10 s at 16 kHz, 1 s windows every 1 ms: 9001 windows of 1000 steps each. A loop over the
    # steps of each window took about a minute; both rules take well under a second here.
    windows = plan_windows(160_000, 16000, 1000, 1)
    scores = np.random.default_rng(0).random((len(windows), 3)).astype(np.float32)
    for combine in ("mean", "min"):
        started = time.perf_counter()
        assert aggregate_steps(windows, scores, 160_000, 16, combine).shape == (10_000, 3)
        assert time.perf_counter() - started < 5.0


# --- combining overlapping windows: min ---------------------------------------------------------------


def test_min_keeps_the_lowest_window_overlapping_each_step():
    # Windows off the step grid: step 3 [30, 40) overlaps both windows, step 2 only the first.
    windows = [Window(0, 35), Window(22, 60)]
    scores = np.array([[0.9, 0.1], [0.4, 0.7]])
    combined = aggregate_steps(windows, scores, 60, 10, "min")
    assert combined.tolist() == [[0.9, 0.1], [0.9, 0.1], [0.4, 0.1], [0.4, 0.1], [0.4, 0.7], [0.4, 0.7]]


def presence_scores(windows, event_start, event_stop):
    """A weakly trained model: a window scores 0.9 for the event if it overlaps it at all."""
    return np.array([[0.9 if w.start_ix < event_stop and w.stop_ix > event_start else 0.05] for w in windows])


def test_min_recovers_event_boundaries_at_stride_resolution_where_mean_drags_them_out():
    # A 20 s sample at 1 kHz with one event from 6.3 s to 12.3 s; 2 s windows every 500 ms.
    n, start, stop = 20_000, 6300, 12_300
    windows = plan_windows(n, 1000, 2000, 500)
    scores = presence_scores(windows, start, stop)
    index, specs = {"a": 0}, (LabelSpec("A", "a"),)

    def event(combine):
        s = make_settings(2000, 500, specs=specs, min_conf=0.5, combine=combine)
        segs = label_sample(windows, scores, n, step_ix(n, 1000, s), s, index).segments
        return next((seg.start_ix, seg.end_ix + 1) for seg in segs if seg.label == "a")

    min_start, min_stop = event("min")
    mean_start, mean_stop = event("mean")
    assert abs(min_start - start) <= 500 and abs(min_stop - stop) <= 500
    assert start - mean_start > 500 and mean_stop - stop > 500  # mean extends the event by more than a stride


def test_with_window_equal_to_stride_min_changes_only_the_step_the_tail_window_shares():
    # 5 s at 1 kHz, 2 s windows and stride: [0, 2000), [2000, 4000) and the end-aligned tail [3000, 5000).
    # The sound is in the last second only, so the tail window hears it and the middle window does not.
    n = 5000
    windows = plan_windows(n, 1000, 2000, 2000)
    assert windows[-1] == Window(3000, 5000)
    scores = presence_scores(windows, 4000, 5000)
    specs = (LabelSpec("A", "a"),)

    def labels(combine):
        s = make_settings(2000, 2000, specs=specs, min_conf=0.3, combine=combine)
        return [seg.label for seg in label_sample(windows, scores, n, 2000, s, {"a": 0}).segments], s

    (with_min, _), (with_mean, _) = labels("min"), labels("mean")
    # mean: step [2000, 4000) gets (2000 x 0.05 + 1000 x 0.9) / 3000 = 0.33 and is labeled a too
    assert with_mean == ["other", "a"]
    segs_min = label_sample(windows, scores, n, 2000, make_settings(2000, 2000, specs=specs, min_conf=0.3), {"a": 0})
    assert with_min == ["other", "a"] and segs_min.segments[-1].start_ix == 4000
    segs_mean = label_sample(windows, scores, n, 2000,
                             make_settings(2000, 2000, specs=specs, min_conf=0.3, combine="mean"), {"a": 0})
    assert segs_mean.segments[-1].start_ix == 2000


# --- single-label mode -------------------------------------------------------------------------------------


def single(step_scores, n=None, step=10, specs=(LabelSpec("A", "a"), LabelSpec("B", "b")), min_conf=0.5):
    step_scores = np.asarray(step_scores, dtype=getattr(step_scores, "dtype", float))
    n = n or step * len(step_scores)
    s = make_settings(specs=specs, min_conf=min_conf, label_mode="single")
    winners = winning_specs(step_scores, specs, s)
    return sample_label(step_scores, winners, step_lengths(step, len(winners), n), specs, "other")


def test_single_label_is_the_label_holding_the_most_time():
    assert single([[0.9, 0.0], [0.0, 0.6], [0.0, 0.6]]) == "b"


def test_single_label_counts_indices_not_steps():
    # One step each, but b's is the 1-index tail: a holds more time despite b's higher score.
    assert single([[0.6, 0.0], [0.0, 0.9]], n=11) == "a"


def test_single_label_tie_goes_to_the_higher_mean_score():
    assert single([[0.7, 0.0], [0.0, 0.8]]) == "b"
    assert single([[0.9, 0.0], [0.0, 0.8]]) == "a"


def test_single_label_of_a_later_listed_label_when_the_first_holds_nothing():
    assert single([[0.0, 0.9], [0.0, 0.6]]) == "b"


def test_single_label_tie_in_time_and_score_goes_to_the_label_listed_first():
    assert single([[0.8, 0.0], [0.0, 0.8]]) == "a"
    assert single([[0.8, 0.0], [0.0, 0.8]], specs=(LabelSpec("B", "b"), LabelSpec("A", "a"))) == "b"


def test_a_short_label_of_interest_beats_other():
    # Exactly at its threshold (a float32 score, as the model gives), in one step of ten.
    assert single(np.array([[0.1, 0.1]] * 9 + [[0.7, 0.0]], dtype=np.float32), min_conf=0.7) == "a"


def test_single_label_pools_the_time_of_classes_renamed_to_one_label():
    # Dog and Cat both write "pet": 2 + 2 steps beat Bird's 3, though Bird holds more than either class.
    specs = parse_label_specs("Dog (pet)\\nCat (pet)\\nBird", None)
    steps = [[0.9, 0, 0]] * 2 + [[0, 0.9, 0]] * 2 + [[0, 0, 0.9]] * 3
    assert single(steps, specs=specs) == "pet"
    assert single(steps[2:], specs=specs) == "Bird"  # without the pooled time, Bird wins


def test_pooled_classes_tie_on_their_joint_mean_score():
    specs = parse_label_specs("Dog (pet)\\nCat (pet)\\nBird", None)
    # pet: 0.9 and 0.5 over two steps (mean 0.7) against Bird's 0.8 over two steps.
    assert single([[0.9, 0, 0], [0, 0.5, 0], [0, 0, 0.8], [0, 0, 0.8]], specs=specs) == "Bird"
    assert single([[0.9, 0, 0], [0, 0.8, 0], [0, 0, 0.8], [0, 0, 0.8]], specs=specs) == "pet"


def test_nothing_of_interest_is_other():
    assert single([[0.49, 0.2], [0.1, 0.3]]) == "other"


def test_single_mode_labels_the_whole_sample_with_one_segment():
    s = make_settings(1000, 1000, label_mode="single")
    windows = plan_windows(2500, 1000, 1000, 1000)
    labeling = label_sample(windows, np.array([[0.9, 0.0], [0.0, 0.6], [0.0, 0.7]]), 2500, 1000, s,
                            {"a": 0, "b": 1})
    assert labeling.single_label == "b" and labeling.segments == [Segment(0, 2499, "b")]
    assert labeling.found_interest


def test_single_mode_confidence_describes_the_written_label():
    # a holds three steps at 0.9, b one at 0.6: the sample is written a, so b's step counts as not a.
    s = make_settings(1000, 1000, min_conf=0.5, combine="mean", label_mode="single")
    windows = plan_windows(4000, 1000, 1000, 1000)
    scores = np.array([[0.9, 0.0], [0.9, 0.0], [0.0, 0.6], [0.9, 0.0]])
    labeling = label_sample(windows, scores, 4000, 1000, s, {"a": 0, "b": 1})
    assert labeling.single_label == "a"
    assert labeling.confidence == {"ast_confidence_mean": "0.900", "ast_confidence_min": "0.900",
                                   "ast_other_share": "0.250"}
    multi = label_sample(windows, scores, 4000, 1000, make_settings(1000, 1000, combine="mean"), {"a": 0, "b": 1})
    assert multi.confidence == {"ast_confidence_mean": "0.825", "ast_confidence_min": "0.600",
                                "ast_other_share": "0.000"}


def test_single_mode_confidence_pools_classes_renamed_to_the_written_label():
    specs = parse_label_specs("A (pet)\\nB (pet)", None)
    s = make_settings(1000, 1000, specs=specs, combine="mean", label_mode="single")
    windows = plan_windows(3000, 1000, 1000, 1000)
    labeling = label_sample(windows, np.array([[0.9, 0.0], [0.0, 0.6], [0.1, 0.1]]), 3000, 1000, s, {"a": 0, "b": 1})
    assert labeling.single_label == "pet"
    assert labeling.confidence == {"ast_confidence_mean": "0.750", "ast_confidence_min": "0.600",
                                   "ast_other_share": "0.333"}


def test_single_mode_confidence_of_other_is_none_and_all_time_other():
    s = make_settings(1000, 1000, label_mode="single")
    labeling = label_sample([Window(0, 1000)], np.array([[0.1, 0.2]]), 1000, 1000, s, {"a": 0, "b": 1})
    assert labeling.single_label == "other"
    assert labeling.confidence == {"ast_confidence_mean": "none", "ast_confidence_min": "none",
                                   "ast_other_share": "1.000"}


def test_confidence_is_weighted_by_step_length():
    # Steps of 10, 10 and 1 index: the short tail step scores low and weighs 1/21, not 1/3.
    winners = np.array([0, 0, 1])
    step_scores = np.array([[0.9, 0.0], [0.9, 0.0], [0.0, 0.3]])
    assert confidence_metadata(10, step_scores, winners, 21) == {
        "ast_confidence_mean": "0.871", "ast_confidence_min": "0.300", "ast_other_share": "0.000"}
    # other in the first and the 1-index last step: 11 of 21 indices, not 2 of 3 steps
    assert confidence_metadata(10, step_scores, np.array([-1, 0, -1]), 21)["ast_other_share"] == "0.524"


# --- settings fingerprint ----------------------------------------------------------------------------------

# What block 1.0.0 stored for these settings before label modes existed.
FINGERPRINT_1_0_0 = ('{"block":"1.0.0","model":"m","labels":[["A","a",0.5],["B","b",0.5]],"other":"other",'
                     '"win_ms":1000,"stride_ms":1000}')


def test_default_options_keep_the_fingerprint_of_earlier_runs():
    assert make_settings().fingerprint() == FINGERPRINT_1_0_0


@pytest.mark.parametrize("change", [{"label_mode": "single"}, {"combine": "mean"}])
def test_other_options_change_the_fingerprint(change):
    assert make_settings(**change).fingerprint() != FINGERPRINT_1_0_0


def test_disable_other_changes_the_fingerprint():
    s = make_settings()
    assert Settings(s.specs, "other", 1000, 1000, 0.5, "m", disable_other=True).fingerprint() != FINGERPRINT_1_0_0

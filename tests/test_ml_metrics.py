"""Validation metrics: hand-computed values, ties, the 0/0 conventions, and properties over random rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from commine.ml.metrics import (
    average_precision,
    mean_average_precision,
    precision_recall_at,
    precision_recall_curve,
    threshold_for_precision,
    threshold_for_recall,
)

# Ranked: 0.9 pos (P 1, R 1/2), 0.8 neg (P 1/2, R 1/2), 0.7 pos (P 2/3, R 1), 0.6 neg (P 1/2, R 1).
SCORES = np.array([0.9, 0.8, 0.7, 0.6])
TRUTH = np.array([True, False, True, False])

# Three messages tied at 0.8 (two positives, one negative) enter together: P 2/3 at R 1.
TIED_SCORES = np.array([0.8, 0.8, 0.8, 0.2])
TIED_TRUTH = np.array([True, False, True, False])


# Scores on a coarse grid so that ties are common, plus arbitrary floats.
score = st.one_of(st.sampled_from([i / 10 for i in range(11)]), st.floats(0.0, 1.0))


@st.composite
def labelled(draw: st.DrawFn, min_positives: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One label: scores and truth for 1 to 40 messages, with at least min_positives positives."""
    n = draw(st.integers(max(1, min_positives), 40))
    scores = np.array(draw(st.lists(score, min_size=n, max_size=n)))
    truth = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    if truth.sum() < min_positives:
        truth[:min_positives] = True
    return scores, truth


@st.composite
def matrices(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """A messages x labels score matrix and truth matrix, scores on a grid so ties are common."""
    n_messages = draw(st.integers(1, 25))
    n_labels = draw(st.integers(1, 6))
    cells = n_messages * n_labels
    scores = np.array(draw(st.lists(score, min_size=cells, max_size=cells))).reshape(n_messages, n_labels)
    truth = np.array(draw(st.lists(st.booleans(), min_size=cells, max_size=cells))).reshape(n_messages, n_labels)
    return scores, truth


# --- hand-computed values -------------------------------------------------------------------------------------


def test_average_precision_of_a_small_ranking_matches_the_hand_value() -> None:
    # Recall steps happen at 0.9 (0 -> 1/2, P 1) and 0.7 (1/2 -> 1, P 2/3): AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    assert average_precision(SCORES, TRUTH) == pytest.approx(5 / 6)


def test_tied_scores_enter_together_in_one_step() -> None:
    # One step at 0.8: recall 0 -> 1 at precision 2/3, so AP = 2/3. Taking the tie in any item order would
    # give 1 (pos, pos, neg), 5/6 (pos, neg, pos) or 7/12 (neg, pos, pos) instead.
    assert average_precision(TIED_SCORES, TIED_TRUTH) == pytest.approx(2 / 3)
    assert average_precision(TIED_SCORES[[1, 0, 2, 3]], TIED_TRUTH[[1, 0, 2, 3]]) == pytest.approx(2 / 3)


def test_a_two_way_tie_of_one_positive_and_one_negative_counts_half_precision() -> None:
    # 0.5 tie: one step to recall 1 at precision 1/2; the 0.1 negative comes after. AP = 1/2.
    assert average_precision(np.array([0.1, 0.5, 0.5]), np.array([False, True, False])) == pytest.approx(0.5)


def test_precision_and_recall_at_thresholds_match_the_hand_values() -> None:
    assert precision_recall_at(SCORES, TRUTH, 0.8) == pytest.approx((1 / 2, 1 / 2))
    assert precision_recall_at(SCORES, TRUTH, 0.75) == pytest.approx((1 / 2, 1 / 2))
    assert precision_recall_at(SCORES, TRUTH, 0.0) == pytest.approx((1 / 2, 1.0))


def test_a_score_equal_to_the_threshold_is_predicted_positive() -> None:
    # At 0.7 the 0.7 positive is in: TP 2, FP 1, FN 0.
    assert precision_recall_at(SCORES, TRUTH, 0.7) == pytest.approx((2 / 3, 1.0))


def test_no_predicted_positives_gives_precision_one_and_recall_zero() -> None:
    assert precision_recall_at(SCORES, TRUTH, 0.95) == (1.0, 0.0)


def test_a_label_without_positives_has_recall_one() -> None:
    truth = np.zeros(4, dtype=bool)
    assert precision_recall_at(SCORES, truth, 0.75) == (0.0, 1.0)
    assert precision_recall_at(SCORES, truth, 0.95) == (1.0, 1.0)


def test_precision_recall_curve_points_match_the_hand_values() -> None:
    precisions, recalls, thresholds = precision_recall_curve(SCORES, TRUTH)
    np.testing.assert_allclose(thresholds, [0.6, 0.7, 0.8, 0.9])
    np.testing.assert_allclose(precisions, [1 / 2, 2 / 3, 1 / 2, 1.0, 1.0])
    np.testing.assert_allclose(recalls, [1.0, 1.0, 1 / 2, 1 / 2, 0.0])


def test_precision_recall_curve_has_one_point_per_distinct_score() -> None:
    precisions, recalls, thresholds = precision_recall_curve(TIED_SCORES, TIED_TRUTH)
    np.testing.assert_allclose(thresholds, [0.2, 0.8])
    np.testing.assert_allclose(precisions, [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(recalls, [1.0, 1.0, 0.0])


def test_mean_average_precision_over_three_labels_matches_the_hand_value() -> None:
    scores = np.column_stack([SCORES, [0.1, 0.2, 0.3, 0.4], [0.9, 0.1, 0.5, 0.3]])
    truth = np.column_stack([TRUTH, [False, False, False, True], [False, True, False, False]])
    # Label A: 5/6 (above). Label B: its only positive ranks first, AP 1.
    # Label C: its only positive ranks last, found at precision 1/4, AP 1/4. MAP = (5/6 + 1 + 1/4) / 3 = 25/36.
    assert mean_average_precision(scores, truth) == pytest.approx(25 / 36)


def test_mean_average_precision_skips_labels_without_positives() -> None:
    scores = np.column_stack([SCORES, [0.1, 0.2, 0.3, 0.4], [0.9, 0.1, 0.5, 0.3], [0.5, 0.6, 0.7, 0.8]])
    truth = np.column_stack([TRUTH, [False, False, False, True], [False, True, False, False], np.zeros(4, bool)])
    assert mean_average_precision(scores, truth) == pytest.approx(25 / 36)


def test_average_precision_of_a_label_without_positives_is_nan() -> None:
    assert math.isnan(average_precision(SCORES, np.zeros(4, dtype=bool)))
    assert math.isnan(mean_average_precision(SCORES[:, None], np.zeros((4, 1), dtype=bool)))


def test_threshold_for_precision_is_the_lowest_score_reaching_the_target() -> None:
    # Precision at 0.9, 0.8, 0.7, 0.6: 1, 1/2, 2/3, 1/2.
    assert threshold_for_precision(SCORES, TRUTH, 0.5) == 0.6
    assert threshold_for_precision(SCORES, TRUTH, 0.6) == 0.7
    assert threshold_for_precision(SCORES, TRUTH, 2 / 3) == 0.7
    assert threshold_for_precision(SCORES, TRUTH, 0.7) == 0.9
    assert threshold_for_precision(SCORES, TRUTH, 1.0) == 0.9


def test_threshold_for_precision_is_none_when_no_score_reaches_the_target() -> None:
    # Precision at 0.9 is 0 and at 0.1 is 1/2.
    assert threshold_for_precision(np.array([0.9, 0.1]), np.array([False, True]), 0.6) is None


def test_threshold_for_recall_is_the_highest_score_reaching_the_target() -> None:
    # Recall at 0.9, 0.8, 0.7, 0.6: 1/2, 1/2, 1, 1.
    assert threshold_for_recall(SCORES, TRUTH, 0.0) == 0.9
    assert threshold_for_recall(SCORES, TRUTH, 0.5) == 0.9
    assert threshold_for_recall(SCORES, TRUTH, 0.6) == 0.7
    assert threshold_for_recall(SCORES, TRUTH, 1.0) == 0.7


def test_threshold_for_recall_is_none_for_a_label_without_positives() -> None:
    assert threshold_for_recall(SCORES, np.zeros(4, dtype=bool), 0.5) is None


@pytest.mark.parametrize("target", [-0.1, 1.1, float("nan")])
def test_threshold_targets_outside_zero_to_one_are_rejected(target: float) -> None:
    with pytest.raises(ValueError, match="target"):
        threshold_for_precision(SCORES, TRUTH, target)
    with pytest.raises(ValueError, match="target"):
        threshold_for_recall(SCORES, TRUTH, target)


def test_mismatched_or_nan_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        average_precision(SCORES, TRUTH[:3])
    with pytest.raises(ValueError, match="NaN"):
        precision_recall_curve(np.array([0.5, float("nan")]), np.array([True, False]))
    with pytest.raises(ValueError, match="2-D"):
        mean_average_precision(SCORES, TRUTH)


# --- properties -----------------------------------------------------------------------------------------------


@given(labelled(), st.floats(-0.5, 1.5))
def test_every_metric_lies_between_zero_and_one(data: tuple[np.ndarray, np.ndarray], threshold: float) -> None:
    scores, truth = data
    precision, recall = precision_recall_at(scores, truth, threshold)
    precisions, recalls, _ = precision_recall_curve(scores, truth)
    assert 0.0 <= precision <= 1.0
    assert 0.0 <= recall <= 1.0
    assert np.all((precisions >= 0.0) & (precisions <= 1.0))
    assert np.all((recalls >= 0.0) & (recalls <= 1.0))
    if truth.any():
        assert 0.0 <= average_precision(scores, truth) <= 1.0


@given(matrices())
def test_mean_average_precision_lies_between_zero_and_one(data: tuple[np.ndarray, np.ndarray]) -> None:
    scores, truth = data
    value = mean_average_precision(scores, truth)
    assert math.isnan(value) if not truth.any() else 0.0 <= value <= 1.0


@given(
    st.lists(st.floats(0.6, 1.0), min_size=1, max_size=20),
    st.lists(st.floats(0.0, 0.5), max_size=20),
)
def test_average_precision_of_a_perfect_ranking_is_one(positives: list[float], negatives: list[float]) -> None:
    scores = np.array(negatives + positives)
    truth = np.array([False] * len(negatives) + [True] * len(positives))
    assert average_precision(scores, truth) == pytest.approx(1.0)


@given(labelled(min_positives=1), st.randoms(use_true_random=False))
def test_permuting_messages_changes_nothing(data: tuple[np.ndarray, np.ndarray], rng) -> None:
    scores, truth = data
    order = np.array(rng.sample(range(scores.size), scores.size))
    assert average_precision(scores[order], truth[order]) == average_precision(scores, truth)
    for permuted, original in zip(
        precision_recall_curve(scores[order], truth[order]), precision_recall_curve(scores, truth), strict=True
    ):
        np.testing.assert_array_equal(permuted, original)


@given(matrices(), st.randoms(use_true_random=False))
def test_permuting_rows_leaves_mean_average_precision_unchanged(data: tuple[np.ndarray, np.ndarray], rng) -> None:
    scores, truth = data
    order = np.array(rng.sample(range(scores.shape[0]), scores.shape[0]))
    assert mean_average_precision(scores[order], truth[order]) == pytest.approx(
        mean_average_precision(scores, truth), nan_ok=True
    )


@given(
    st.lists(st.integers(0, 20), min_size=1, max_size=40).map(lambda xs: np.array(xs) / 20),
    st.data(),
)
def test_average_precision_is_invariant_to_a_strictly_increasing_transform(scores: np.ndarray, data) -> None:
    truth = np.array(data.draw(st.lists(st.booleans(), min_size=scores.size, max_size=scores.size)))
    truth[0] = True
    transformed = np.exp(4.0 * scores) - 3.0  # strictly increasing, keeps the grid's values distinct
    assert average_precision(transformed, truth) == average_precision(scores, truth)


@given(matrices())
def test_mean_average_precision_is_the_mean_of_per_label_average_precision(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    scores, truth = data
    per_label = [average_precision(scores[:, j], truth[:, j]) for j in range(scores.shape[1]) if truth[:, j].any()]
    expected = float(np.mean(per_label)) if per_label else float("nan")
    assert mean_average_precision(scores, truth) == pytest.approx(expected, nan_ok=True)


@given(labelled(min_positives=1))
def test_the_curve_agrees_with_precision_recall_at_each_threshold(data: tuple[np.ndarray, np.ndarray]) -> None:
    scores, truth = data
    precisions, recalls, thresholds = precision_recall_curve(scores, truth)
    for precision, recall, threshold in zip(precisions[:-1], recalls[:-1], thresholds, strict=True):
        assert precision_recall_at(scores, truth, threshold) == pytest.approx((precision, recall))


@given(labelled(min_positives=1), st.floats(0.0, 1.0))
def test_chosen_thresholds_reach_their_target_and_no_better_one_exists(
    data: tuple[np.ndarray, np.ndarray], target: float
) -> None:
    scores, truth = data
    distinct = np.unique(scores)
    for_recall = threshold_for_recall(scores, truth, target)
    assert for_recall is not None
    assert precision_recall_at(scores, truth, for_recall)[1] >= target
    assert all(precision_recall_at(scores, truth, t)[1] < target for t in distinct[distinct > for_recall])
    for_precision = threshold_for_precision(scores, truth, target)
    lower = distinct if for_precision is None else distinct[distinct < for_precision]
    assert all(precision_recall_at(scores, truth, t)[0] < target for t in lower)
    if for_precision is not None:
        assert precision_recall_at(scores, truth, for_precision)[0] >= target


def test_average_precision_and_curve_match_sklearn_on_random_data() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(20240601)
    for _ in range(50):
        n = int(rng.integers(2, 60))
        scores = np.round(rng.random(n), 1)  # rounding makes ties common
        truth = rng.random(n) < 0.4
        truth[0], truth[1] = True, False
        expected = sklearn_metrics.average_precision_score(truth, scores)
        assert average_precision(scores, truth) == pytest.approx(expected)
        for ours, theirs in zip(
            precision_recall_curve(scores, truth), sklearn_metrics.precision_recall_curve(truth, scores), strict=True
        ):
            np.testing.assert_allclose(ours, theirs)

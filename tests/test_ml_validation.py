"""Validation: the hashed test split, label reports and presets, coverage, balance and the model rating.

Hand-computed cases pin the numbers (and the worked example of docs/model-rating.md); properties check the
promises: a stable split, scores within their bounds, and a rating that never falls when an input improves.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commine.ml.metrics import average_precision, precision_recall_at, precision_recall_curve
from commine.ml.validation import (
    FACTORS,
    BalanceReport,
    Curve,
    LabelReport,
    ValidationReport,
    balance,
    balance_score,
    band,
    combine,
    coverage,
    informative_labels,
    label_report,
    preset_thresholds,
    presets,
    rating,
    similarity,
    test_mask,
    validate,
)

# Ranked: 0.9 pos (P 1, R 1/2), 0.8 neg (P 1/2, R 1/2), 0.7 pos (P 2/3, R 1), 0.6 neg (P 1/2, R 1).
SCORES = np.array([0.9, 0.8, 0.7, 0.6])
TRUTH = np.array([True, False, True, False])

# 20,000 fixed uids: the hashes are fixed, so the share test below is deterministic, not a lucky draw.
MANY_UIDS = [f"0123456789abcdef.message-{i}" for i in range(20_000)]

score = st.one_of(st.sampled_from([i / 10 for i in range(11)]), st.floats(0.0, 1.0))
uid = st.text(min_size=1, max_size=30)


@st.composite
def labelled(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """One label with at least one positive: scores (on a grid, so ties are common) and truth for 1-40 messages."""
    n = draw(st.integers(1, 40))
    scores = np.array(draw(st.lists(score, min_size=n, max_size=n)))
    truth = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    truth[0] = True
    return scores, truth


def made_report(aps: list[float]) -> ValidationReport:
    """A validation report holding only what the rating reads: names, supports and average precisions."""
    curve = Curve((1.0,), (0.0,), ())
    labels = tuple(
        LabelReport(f"L{i}", 0 if math.isnan(ap) else 5, 0.5, 1.0, 1.0, ap, curve, dict.fromkeys(("balanced",)))
        for i, ap in enumerate(aps)
    )
    judged = [ap for ap in aps if not math.isnan(ap)]
    mean = float(np.mean(judged)) if judged else float("nan")
    return ValidationReport(labels, 100, mean, mean, mean)


def made_balance(score: float, random_share: float = 0.2) -> BalanceReport:
    """A balance report with the given score (only the score and the action reach the rating)."""
    return BalanceReport(score, score, random_share, 100, 1000, ("reason",), "Label more messages from Shuffle")


# The worked example of docs/model-rating.md: ten labels, Billing > Refund the weakest.
EXAMPLE_LABELS = [
    "Billing > Refund",
    "Billing > Invoice",
    "Card > Lost",
    "Card > Declined",
    "Account > Close",
    "Account > Open",
    "Transfer > Failed",
    "Transfer > Pending",
    "Complaint",
    "General Enquiry",
]
EXAMPLE_APS = [0.62, 0.95, 0.93, 0.91, 0.90, 0.88, 0.86, 0.84, 0.80, 0.81]
EXAMPLE_EXAMPLES = [19, 140, 120, 95, 80, 64, 60, 41, 33, 52]


def example_report(aps: list[float]) -> ValidationReport:
    """The worked example's validation report, with the given average precisions."""
    report = made_report(aps)
    labels = tuple(
        LabelReport(name, 5, 0.5, 1.0, 1.0, label.average_precision, label.curve, label.presets)
        for name, label in zip(EXAMPLE_LABELS, report.labels, strict=True)
    )
    return ValidationReport(labels, 100, report.mean_average_precision, 1.0, 1.0)


# --- the test split -------------------------------------------------------------------------------------------


def test_the_split_of_eight_uids_follows_their_hashes() -> None:
    # sha256 prefixes as fractions: m1 .789, m2 .163, m3 .083, m4 .139, m5 .711, m6 .888, m7 .006, m8 .349.
    uids = [f"m{i}" for i in range(1, 9)]
    assert test_mask(uids).tolist() == [False, True, True, True, False, False, True, False]
    assert test_mask(uids, share=0.1).tolist() == [False, False, True, False, False, False, True, False]


def test_a_salt_draws_another_split() -> None:
    # sha256("src.a") starts 9ef4b4e8 (.621), sha256("v2:src.a") starts 32b474f5 (.198).
    assert test_mask(["src.a"]).tolist() == [False]
    assert test_mask(["src.a"], salt="v2:").tolist() == [True]
    assert not np.array_equal(test_mask(MANY_UIDS[:1000]), test_mask(MANY_UIDS[:1000], salt="v2:"))


def test_share_zero_and_one_take_none_and_all() -> None:
    assert not test_mask(MANY_UIDS[:500], share=0.0).any()
    assert test_mask(MANY_UIDS[:500], share=1.0).all()
    assert test_mask([]).shape == (0,)


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
def test_a_share_outside_zero_to_one_is_rejected(share: float) -> None:
    with pytest.raises(ValueError, match="share"):
        test_mask(["a"], share=share)


@given(st.lists(uid, max_size=30), st.lists(uid, max_size=30), st.floats(0.0, 1.0), st.randoms(use_true_random=False))
def test_a_message_keeps_its_side_as_the_dataset_grows_and_reorders(
    uids: list[str], more: list[str], share: float, rng
) -> None:
    mask = test_mask(uids, share)
    np.testing.assert_array_equal(test_mask(uids + more, share)[: len(uids)], mask)
    order = rng.sample(range(len(uids)), len(uids))
    np.testing.assert_array_equal(test_mask([uids[i] for i in order], share), mask[order])
    np.testing.assert_array_equal(test_mask(list(uids), share), mask)


@settings(max_examples=30)
@given(st.floats(0.0, 1.0))
def test_the_test_share_converges_to_the_asked_share(share: float) -> None:
    # 20,000 uniform positions: the sampling error is at most 0.0035, so 0.015 leaves room without being vacuous.
    assert test_mask(MANY_UIDS, share).mean() == pytest.approx(share, abs=0.015)


@given(st.lists(uid, max_size=30), st.floats(0.0, 0.5), st.floats(0.0, 0.5))
def test_a_larger_share_only_adds_messages_to_the_test_split(uids: list[str], low: float, extra: float) -> None:
    assert not (test_mask(uids, low) & ~test_mask(uids, low + extra)).any()


# --- one label ------------------------------------------------------------------------------------------------


def test_a_label_report_matches_the_hand_values() -> None:
    report = label_report("Billing", SCORES, TRUTH, threshold=0.75)
    assert (report.name, report.support, report.threshold) == ("Billing", 2, 0.75)
    assert (report.precision, report.recall) == pytest.approx((1 / 2, 1 / 2))
    assert report.average_precision == pytest.approx(5 / 6)
    assert report.curve.thresholds == pytest.approx((0.6, 0.7, 0.8, 0.9))
    assert report.curve.precision == pytest.approx((1 / 2, 2 / 3, 1 / 2, 1.0, 1.0))
    assert report.curve.recall == pytest.approx((1.0, 1.0, 1 / 2, 1 / 2, 0.0))


def test_presets_of_a_small_ranking_match_the_hand_values() -> None:
    # Precision 1, 1/2, 2/3, 1/2 and recall 1/2, 1/2, 1, 1 at 0.9, 0.8, 0.7, 0.6; F1 2/3, 1/2, 4/5, 2/3.
    assert presets(SCORES, TRUTH) == {"high_precision": 0.9, "balanced": 0.7, "high_recall": 0.7}


def test_high_precision_falls_back_to_the_most_precise_threshold() -> None:
    # Precision 0 at 0.9, 1/2 at 0.8, 2/3 at 0.1: 0.95 is out of reach, 2/3 is the best there is.
    assert presets(np.array([0.9, 0.8, 0.1]), np.array([False, True, True]))["high_precision"] == 0.1


def test_balanced_takes_the_highest_of_thresholds_tied_on_f1() -> None:
    # F1 at 0.9, 0.8, 0.7, 0.6: 2/3, 1/2, 2/5, 2/3; 0.9 and 0.6 tie, 0.9 predicts fewer messages.
    assert presets(SCORES, np.array([True, False, False, True]))["balanced"] == 0.9


def test_a_label_without_positives_has_no_presets_and_a_null_average_precision() -> None:
    report = label_report("Spam", SCORES, np.zeros(4, dtype=bool))
    assert report.presets == {"high_precision": None, "balanced": None, "high_recall": None}
    as_dict = report.to_dict()
    assert as_dict["average_precision"] is None
    json.dumps(as_dict, allow_nan=False)


def test_a_long_curve_is_thinned_to_points_of_the_full_curve_spread_over_recall() -> None:
    rng = np.random.default_rng(7)
    truth = rng.random(5000) < 0.3
    scores = np.clip(0.3 * truth + rng.random(5000), 0.0, 1.0)
    report = label_report("Card", scores, truth)
    full = precision_recall_curve(scores, truth)
    full_points = set(zip(full[0][:-1].tolist(), full[1][:-1].tolist(), full[2].tolist(), strict=True))
    curve = report.curve
    assert len(curve.precision) <= 101
    assert len(curve.precision) == len(curve.recall) == len(curve.thresholds) + 1
    assert (curve.precision[-1], curve.recall[-1]) == (1.0, 0.0)
    assert list(curve.thresholds) == sorted(curve.thresholds)
    assert set(zip(curve.precision[:-1], curve.recall[:-1], curve.thresholds, strict=True)) <= full_points
    # For every recall percent the kept points reach it as closely as the full curve does (a third of the
    # positives tie at the clipped score 1.0, so the curve's first point already has recall 0.3).
    kept, every = np.array(curve.recall), full[1]
    for level in np.arange(1, 101) / 100:
        assert kept[kept >= level - 1e-12].min() == every[every >= level - 1e-12].min()
    assert report.presets == presets(scores, truth)
    assert report.average_precision == average_precision(scores, truth)


@given(labelled())
def test_the_presets_reach_their_targets_and_none_better_exists(data: tuple[np.ndarray, np.ndarray]) -> None:
    scores, truth = data
    chosen = presets(scores, truth)
    distinct = np.unique(scores)
    at = {t: precision_recall_at(scores, truth, t) for t in distinct}
    high_recall, high_precision, balanced = chosen["high_recall"], chosen["high_precision"], chosen["balanced"]
    assert at[high_recall][1] >= 0.95
    assert all(at[t][1] < 0.95 for t in distinct[distinct > high_recall])
    best_precision = max(p for p, _ in at.values())
    assert at[high_precision][0] >= 0.95 or at[high_precision][0] == best_precision
    assert all(at[t][0] < min(0.95, best_precision) for t in distinct[distinct < high_precision])

    def f1(t: float) -> float:
        precision, recall = at[t]
        return 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    assert all(f1(balanced) >= f1(t) - 1e-12 for t in distinct)


# --- the whole model ------------------------------------------------------------------------------------------


def test_validate_summarises_the_labels_with_test_examples() -> None:
    scores = np.column_stack([SCORES, [0.1, 0.2, 0.3, 0.4], [0.9, 0.1, 0.5, 0.3]])
    truth = np.column_stack([TRUTH, [False, False, False, True], np.zeros(4, bool)])
    report = validate(["A", "B", "C"], scores, truth, threshold=[0.75, 0.35, 0.5])
    # A: P 1/2, R 1/2 at 0.75, AP 5/6. B: only 0.4 predicted, a positive: P 1, R 1, AP 1. C: no positive.
    assert [label.name for label in report.labels] == ["A", "B", "C"]
    assert report.mean_average_precision == pytest.approx((5 / 6 + 1) / 2)
    assert report.macro_precision == pytest.approx((1 / 2 + 1) / 2)
    assert report.macro_recall == pytest.approx((1 / 2 + 1) / 2)
    assert report.label("C").precision == 0.0  # 0.9 and 0.5 predicted, both false hits
    assert report.n_messages == 4
    json.dumps(report.to_dict(), allow_nan=False)


def test_validate_without_any_positive_reports_nan_summaries_as_null() -> None:
    report = validate(["A"], SCORES[:, None], np.zeros((4, 1), bool))
    assert math.isnan(report.mean_average_precision) and math.isnan(report.macro_recall)
    assert report.to_dict()["mean_average_precision"] is None


def test_validate_rejects_mismatched_names_and_thresholds() -> None:
    with pytest.raises(ValueError, match="label names"):
        validate(["A", "B"], SCORES[:, None], TRUTH[:, None])
    with pytest.raises(ValueError, match="unique"):
        validate(["A", "A"], np.column_stack([SCORES, SCORES]), np.column_stack([TRUTH, TRUTH]))
    with pytest.raises(ValueError, match="one per label"):
        validate(["A"], SCORES[:, None], TRUTH[:, None], threshold=[0.5, 0.5])
    with pytest.raises(KeyError):
        validate(["A"], SCORES[:, None], TRUTH[:, None]).label("B")


def test_preset_thresholds_fall_back_where_a_label_has_none() -> None:
    report = validate(["A", "B"], np.column_stack([SCORES, SCORES]), np.column_stack([TRUTH, np.zeros(4, bool)]))
    np.testing.assert_allclose(preset_thresholds(report, "high_precision", fallback=0.8), [0.9, 0.8])
    with pytest.raises(ValueError, match="preset"):
        preset_thresholds(report, "greedy")


# --- coverage -------------------------------------------------------------------------------------------------

COVERAGE_SCORES = np.array([[0.9, 0.1], [0.2, 0.6], [0.4, 0.4], [0.5, 0.7]])


def test_coverage_of_a_four_by_two_matrix_matches_the_hand_value() -> None:
    # Thresholds 0.5 and 0.7: row 1 by its first label, row 4 by either (a score equal to the threshold counts).
    assert coverage(COVERAGE_SCORES, np.array([0.5, 0.7])) == 0.5
    # Only the second label informative: row 4 alone.
    assert coverage(COVERAGE_SCORES, np.array([0.5, 0.7]), np.array([False, True])) == 0.25


def test_coverage_is_zero_without_messages_or_informative_labels_and_nan_thresholds_are_never_reached() -> None:
    assert coverage(np.zeros((0, 2)), np.array([0.5, 0.5])) == 0.0
    assert coverage(COVERAGE_SCORES, np.array([0.5, 0.7]), np.array([False, False])) == 0.0
    assert coverage(COVERAGE_SCORES, np.array([np.nan, 0.7])) == 0.25
    with pytest.raises(ValueError, match="threshold"):
        coverage(COVERAGE_SCORES, np.array([0.5]))


@given(
    st.integers(0, 20).flatmap(lambda n: st.lists(st.lists(score, min_size=3, max_size=3), min_size=n, max_size=n)),
    st.lists(score, min_size=3, max_size=3),
    st.lists(st.floats(0.0, 0.5), min_size=3, max_size=3),
)
def test_coverage_lies_in_zero_to_one_and_lower_thresholds_never_lower_it(
    rows: list[list[float]], thresholds: list[float], lowered_by: list[float]
) -> None:
    scores = np.array(rows).reshape(len(rows), 3)
    value = coverage(scores, np.array(thresholds))
    assert 0.0 <= value <= 1.0
    assert coverage(scores, np.array(thresholds) - np.array(lowered_by)) >= value


def test_informative_labels_ignore_labels_that_only_come_with_another() -> None:
    labels = ["Billing", "Billing > Refund", "Urgent", "Other", "Unused"]
    truth = np.array(
        [
            [True, True, False, False, False],  # a child with its parent: the child says it alone
            [True, True, True, False, False],
            [False, False, True, True, False],
            [False, False, False, True, False],
            [False, False, False, False, False],
        ]
    )
    # Billing is never without its child, Urgent never alone; Unused has no example yet.
    assert informative_labels(labels, truth).tolist() == [False, True, False, True, True]


# --- balance --------------------------------------------------------------------------------------------------


def clusters(rng: np.random.Generator, centre: int, n: int, d: int = 16) -> np.ndarray:
    """n embeddings scattered tightly around the unit vector of axis centre."""
    points = rng.normal(scale=0.05, size=(n, d))
    points[:, centre] += 1.0
    return points


def test_identical_sets_are_fully_similar() -> None:
    # Each message's nearest neighbour is its twin on the other side, and the rest come in pairs, one per side:
    # the cross-side share is about 1/2 (only a split pair's tie-break decides), its value by chance.
    points = np.random.default_rng(1).normal(size=(300, 16))
    assert similarity(points, points) == pytest.approx(1.0, abs=0.01)
    assert balance(points, points, 0.1).score == pytest.approx(0.8 + 0.2 * 0.5)


def test_disjoint_sets_have_no_similarity() -> None:
    rng = np.random.default_rng(2)
    report = balance(clusters(rng, 0, 200), clusters(rng, 1, 2000), 0.0)
    assert report.similarity == 0.0
    assert report.score == 0.0
    assert "unlike" in report.reasons[0]


def test_a_reviewed_set_covering_half_the_topics_is_partly_similar() -> None:
    # Reviewed all from topic 0, unreviewed half topic 0 and half topic 1. In the pooled draw the cross-side share
    # is 1/3 for reviewed points, 2/3 for unreviewed ones in topic 0, 0 in topic 1: 1/3 overall, similarity ~2/3.
    rng = np.random.default_rng(3)
    unreviewed = np.vstack([clusters(rng, 0, 500), clusters(rng, 1, 500)])
    assert 0.55 < similarity(clusters(rng, 0, 1000), unreviewed) < 0.8


def test_a_random_sample_is_similar_and_a_biased_one_is_not() -> None:
    rng = np.random.default_rng(4)
    dataset = np.vstack([clusters(rng, topic, 400) for topic in range(5)])
    rng.shuffle(dataset)
    assert similarity(dataset[:300], dataset[300:]) > 0.9
    biased = dataset[:, 0] > 0.5  # everything from topic 0
    assert similarity(dataset[biased][:300], dataset[~biased]) < 0.2


def test_balance_without_reviewed_or_unreviewed_messages() -> None:
    points = np.ones((5, 4))
    assert similarity(np.zeros((0, 4)), points) == 0.0
    assert similarity(points, np.zeros((0, 4))) == 1.0
    assert balance(np.zeros((0, 4)), points, 0.0).reasons[0] == "No message is reviewed yet"


def test_balance_is_deterministic_on_a_large_dataset() -> None:
    rng = np.random.default_rng(5)
    reviewed = rng.random((10_000, 256), dtype=np.float32) - 0.5
    unreviewed = rng.random((100_000, 256), dtype=np.float32) - 0.5
    first = balance(reviewed, unreviewed, 0.3)
    assert balance(reviewed, unreviewed, 0.3) == first


def test_the_balance_action_names_what_holds_balance_back() -> None:
    points = np.random.default_rng(6).normal(size=(100, 8))
    assert "Shuffle" in balance(points, points, 0.05).action
    rng = np.random.default_rng(7)
    assert "Rebalance" in balance(clusters(rng, 0, 100), clusters(rng, 1, 100), 0.5).action


def test_balance_rejects_bad_inputs() -> None:
    points = np.ones((5, 4))
    with pytest.raises(ValueError, match="random_share"):
        balance(points, points, 1.5)
    with pytest.raises(ValueError, match="width"):
        balance(points, np.ones((5, 3)), 0.2)
    with pytest.raises(ValueError, match="NaN"):
        balance(np.full((5, 4), np.nan), points, 0.2)


@settings(max_examples=40)
@given(st.integers(0, 30), st.integers(0, 30), st.floats(0.0, 1.0), st.integers(0, 1000))
def test_balance_scores_lie_in_zero_to_one(n_reviewed: int, n_unreviewed: int, share: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    report = balance(rng.normal(size=(n_reviewed, 4)), rng.normal(size=(n_unreviewed, 4)), share)
    assert 0.0 <= report.similarity <= 1.0
    assert 0.0 <= report.score <= 1.0


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_the_balance_score_never_falls_as_similarity_or_the_random_share_rises(
    value: float, share: float, more_value: float, more_share: float
) -> None:
    higher_value, higher_share = max(value, more_value), max(share, more_share)
    assert balance_score(higher_value, share) >= balance_score(value, share)
    assert balance_score(value, higher_share) >= balance_score(value, share)


# --- the model rating -----------------------------------------------------------------------------------------


# Each band's lowest and highest score.
BAND_EDGES = {0: "Poor", 49: "Poor", 50: "Average", 69: "Average", 70: "Good", 89: "Good", 90: "Excellent"}


@pytest.mark.parametrize(("score", "expected"), [*BAND_EDGES.items(), (100, "Excellent")])
def test_bands_change_at_fifty_seventy_and_ninety(score: int, expected: str) -> None:
    assert band(score) == expected


@pytest.mark.parametrize("score", [-1, 101])
def test_a_score_outside_the_scale_has_no_band(score: int) -> None:
    with pytest.raises(ValueError, match="rating"):
        band(score)


def test_combine_weighs_the_factors_and_caps_at_fifty_above_the_weakest() -> None:
    assert combine(dict.fromkeys(FACTORS, 100)) == 100
    assert combine(dict.fromkeys(FACTORS, 0)) == 0
    # 0.2 x 80 + 0.2 x 60 + 0.4 x 90 + 0.2 x 70 = 78, the weakest (60) + 50 = 110 does not bind.
    assert combine({"balance": 80, "coverage": 60, "all_labels": 90, "underperforming_labels": 70}) == 78
    # Weighted 82, but the weakest factor is 10: capped at 60.
    assert combine({"balance": 10, "coverage": 100, "all_labels": 100, "underperforming_labels": 100}) == 60
    with pytest.raises(ValueError, match="need a score"):
        combine({"balance": 100})


def test_the_worked_example_of_the_docs() -> None:
    examples = dict(zip(EXAMPLE_LABELS, EXAMPLE_EXAMPLES, strict=True))
    result = rating(example_report(EXAMPLE_APS), 0.78, made_balance(0.808, 0.12), examples)
    assert [factor.score for factor in result.factors] == [81, 80, 82, 40]
    assert (result.score, result.band) == (73, "Good")
    assert result.next_action == "Teach label 'Billing > Refund': average precision 0.62 on 19 examples"


def test_the_worked_example_with_one_failing_label_is_capped() -> None:
    examples = dict(zip(EXAMPLE_LABELS, [7, *EXAMPLE_EXAMPLES[1:]], strict=True))
    result = rating(example_report([0.41, *EXAMPLE_APS[1:]]), 0.78, made_balance(0.808, 0.12), examples)
    # MAP 0.829 scores 78; Billing > Refund's health min(0.02, 7/25) scores 2; weighted 63.8, capped at 52.
    assert [factor.score for factor in result.factors] == [81, 80, 78, 2]
    assert (result.score, result.band) == (52, "Average")
    assert result.next_action == "Teach label 'Billing > Refund': average precision 0.41 on 7 examples"
    underperforming = result.factor("underperforming_labels")
    assert underperforming.reasons[0].startswith("1 of 10 labels underperform")


def test_the_next_action_follows_the_weakest_factor() -> None:
    report = made_report([0.95] * 10)
    examples = {f"L{i}": 100 for i in range(10)}
    assert "Shuffle" in rating(report, 0.95, made_balance(0.2, 0.0), examples).next_action
    assert "Low confidence" in rating(report, 0.4, made_balance(1.0), examples).next_action
    assert rating(report, 0.95, made_balance(1.0), examples).next_action.startswith("Nothing to fix")


def test_without_example_counts_the_test_support_stands_in() -> None:
    # made_report gives every judged label a support of 5: a fifth of the examples needed.
    result = rating(made_report([0.95] * 3), 0.95, made_balance(1.0))
    assert result.factor("underperforming_labels").score == 20
    with pytest.raises(ValueError, match="lacks"):
        rating(made_report([0.95] * 3), 0.95, made_balance(1.0), {"L0": 30})


def test_a_model_with_nothing_to_judge_rates_poor() -> None:
    result = rating(made_report([]), 0.0, made_balance(0.0))
    assert (result.score, result.band) == (0, "Poor")
    json.dumps(result.to_dict(), allow_nan=False)


factor_score = st.integers(0, 100)
factor_scores = st.fixed_dictionaries(dict.fromkeys(FACTORS, factor_score))


@given(factor_scores, st.sampled_from(FACTORS), factor_score)
def test_combine_never_falls_when_a_factor_rises_and_stays_on_the_scale(
    scores: dict[str, int], name: str, other: int
) -> None:
    value = combine(scores)
    assert 0 <= value <= 100
    assert min(scores.values()) <= value <= max(scores.values())
    assert combine({**scores, name: max(other, scores[name])}) >= value


ap = st.one_of(st.floats(0.0, 1.0), st.just(float("nan")))


@st.composite
def rating_inputs(draw: st.DrawFn) -> tuple[list[float], list[int], float, float, float]:
    """Average precisions, example counts, coverage, balance score and random share for up to 12 labels."""
    n = draw(st.integers(1, 12))
    aps = draw(st.lists(ap, min_size=n, max_size=n))
    examples = draw(st.lists(st.integers(0, 60), min_size=n, max_size=n))
    return aps, examples, draw(st.floats(0.0, 1.0)), draw(st.floats(0.0, 1.0)), draw(st.floats(0.0, 1.0))


def rate(aps: list[float], examples: list[int], cover: float, balanced: float, share: float) -> int:
    """The rating of a made-up model."""
    counts = {f"L{i}": count for i, count in enumerate(examples)}
    return rating(made_report(aps), cover, made_balance(balanced, share), counts).score


@given(rating_inputs(), st.floats(0.0, 1.0), st.data())
def test_the_rating_never_falls_when_an_input_improves(inputs, better: float, data) -> None:
    aps, examples, cover, balanced, share = inputs
    before = rate(aps, examples, cover, balanced, share)
    assert rate(aps, examples, max(cover, better), balanced, share) >= before
    assert rate(aps, examples, cover, max(balanced, better), share) >= before
    i = data.draw(st.integers(0, len(aps) - 1))
    if not math.isnan(aps[i]):
        assert rate([*aps[:i], max(aps[i], better), *aps[i + 1 :]], examples, cover, balanced, share) >= before
    more = [*examples[:i], examples[i] + data.draw(st.integers(0, 30)), *examples[i + 1 :]]
    assert rate(aps, more, cover, balanced, share) >= before


@given(rating_inputs())
def test_every_rating_score_is_on_the_scale_and_in_its_band(inputs) -> None:
    aps, examples, cover, balanced, share = inputs
    counts = {f"L{i}": count for i, count in enumerate(examples)}
    result = rating(made_report(aps), cover, made_balance(balanced, share), counts)
    assert 0 <= result.score <= 100
    assert all(0 <= factor.score <= 100 for factor in result.factors)
    assert [factor.name for factor in result.factors] == list(FACTORS)
    assert result.band == band(result.score)
    assert result.score == combine({factor.name: factor.score for factor in result.factors})
    json.dumps(result.to_dict(), allow_nan=False)

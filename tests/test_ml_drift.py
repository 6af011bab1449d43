"""Drift: PSI and KS on hand-made distributions, the uncovered share, the flags, and the JSON form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from commine.ml.drift import EPSILON, drift, ks_statistic, population_stability_index, uncovered_share

LABELS = ["Billing", "Billing > Refund"]
THRESHOLDS = np.array([0.5, 0.5])


def beta_scores(a: float, b: float, n: int, seed: int) -> np.ndarray:
    """n scores per label drawn from Beta(a, b), two labels."""
    return np.random.default_rng(seed).beta(a, b, size=(n, 2))


def test_identical_distributions_are_not_shifted() -> None:
    scores = beta_scores(2, 5, 500, seed=0)
    report = drift(scores, scores.copy(), LABELS, THRESHOLDS)
    assert not report.shifted
    for entry in report.labels:
        assert entry.psi == 0.0
        assert entry.ks == 0.0
        assert not entry.shifted
    assert report.uncovered_before == report.uncovered_after


def test_two_samples_of_one_distribution_are_not_shifted() -> None:
    report = drift(beta_scores(2, 5, 5_000, seed=1), beta_scores(2, 5, 5_000, seed=2), LABELS, THRESHOLDS)
    assert not report.shifted
    assert all(entry.psi < 0.05 and entry.ks < 0.05 for entry in report.labels)


def test_a_moved_distribution_is_shifted() -> None:
    before = beta_scores(2, 5, 2_000, seed=3)
    after = before.copy()
    after[:, 1] = np.random.default_rng(4).beta(5, 2, size=2_000)  # label 1 now mostly high
    report = drift(before, after, LABELS, THRESHOLDS)
    assert report.shifted
    steady, moved = report.labels
    assert not steady.shifted and steady.psi == 0.0
    assert moved.shifted and moved.psi > 1.0 and moved.ks > 0.5
    assert moved.label == "Billing > Refund"
    assert moved.mean_before == pytest.approx(2 / 7, abs=0.02)
    assert moved.mean_after == pytest.approx(5 / 7, abs=0.02)


def test_psi_matches_the_hand_value() -> None:
    # Reference: half in bin 0, half in bin 9. Recent: a quarter in bin 0, three quarters in bin 9.
    # PSI = (1/4 - 1/2) ln(1/2) + (3/4 - 1/2) ln(3/2) = 1/4 ln 3.
    reference = np.array([0.05, 0.05, 0.95, 0.95])
    recent = np.array([0.05, 0.95, 0.95, 0.95])
    assert population_stability_index(reference, recent) == pytest.approx(0.25 * math.log(3))


def test_an_empty_bin_counts_as_epsilon_so_psi_stays_finite() -> None:
    # All of the reference in bin 0, all of the recent in bin 9: two terms of (1 - eps) ln(1 / eps).
    value = population_stability_index(np.array([0.0]), np.array([1.0]))
    assert value == pytest.approx(2 * (1 - EPSILON) * math.log(1 / EPSILON))


def test_ks_statistic_matches_the_hand_value() -> None:
    # The CDFs differ by 1/3 at 0.1, 0.2 and 0.4 and agree at 0.3 and from 0.5 on.
    assert ks_statistic(np.array([0.1, 0.2, 0.5]), np.array([0.3, 0.4, 0.2])) == pytest.approx(1 / 3)
    assert ks_statistic(np.array([0.1, 0.2]), np.array([0.8, 0.9])) == 1.0


def test_uncovered_share_counts_messages_with_no_label_at_its_threshold() -> None:
    scores = np.array([[0.9, 0.1], [0.2, 0.6], [0.4, 0.4], [0.5, 0.0]])
    assert uncovered_share(scores, np.array([0.5, 0.5])) == 0.25
    assert uncovered_share(scores, np.array([0.5, np.nan])) == 0.5  # label 1 has no threshold yet
    assert uncovered_share(scores, np.array([np.nan, np.nan])) == 1.0


def test_a_rise_in_uncovered_messages_alone_flags_the_report() -> None:
    before = np.array([[0.9, 0.1]] * 80 + [[0.1, 0.1]] * 20)
    after = np.array([[0.9, 0.1]] * 60 + [[0.45, 0.1]] * 40)
    report = drift(before, after, LABELS, THRESHOLDS, psi_alert=10.0)
    assert not any(entry.shifted for entry in report.labels)
    assert report.uncovered_before == pytest.approx(0.2)
    assert report.uncovered_after == pytest.approx(0.4)
    assert report.shifted
    assert not drift(before, after, LABELS, THRESHOLDS, psi_alert=10.0, uncovered_alert=0.5).shifted


def test_the_report_serialises_to_json_with_plain_types() -> None:
    report = drift(beta_scores(2, 5, 100, seed=5), beta_scores(5, 2, 50, seed=6), LABELS, THRESHOLDS)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["n_reference"] == 100 and data["n_recent"] == 50
    assert [entry["label"] for entry in data["labels"]] == LABELS
    assert data["shifted"] is True and data["labels"][0]["shifted"] is True


def test_bad_inputs_are_rejected() -> None:
    scores = beta_scores(2, 5, 10, seed=7)
    with pytest.raises(ValueError, match="one column per label"):
        drift(scores, scores[:, :1], LABELS, THRESHOLDS)
    with pytest.raises(ValueError, match="no messages"):
        drift(scores, scores[:0], LABELS, THRESHOLDS)
    with pytest.raises(ValueError, match="thresholds"):
        drift(scores, scores, LABELS, THRESHOLDS[:1])
    with pytest.raises(ValueError, match="NaN"):
        drift(scores, np.full_like(scores, np.nan), LABELS, THRESHOLDS)


samples = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=50).map(np.array)


@given(samples, samples)
def test_psi_is_never_negative_and_ks_lies_between_zero_and_one(reference: np.ndarray, recent: np.ndarray) -> None:
    assert population_stability_index(reference, recent) >= 0.0
    assert 0.0 <= ks_statistic(reference, recent) <= 1.0
    assert population_stability_index(reference, reference) == 0.0

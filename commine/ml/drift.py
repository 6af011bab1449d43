"""Drift: has the traffic moved away from what the model was trained on?

A model validated last month can quietly degrade when the messages change: a new product, a new kind of
complaint, a template change upstream. Without fresh reviews the first sign is in the model's own output.
For each label this module compares the distribution of its scores on recent messages with the one at
training time, and for the dataset the share of messages that no label covers (no score at or above its
threshold): a rising uncovered share means topics the taxonomy does not know.

Per label:

* population stability index, PSI = sum over bins of (a - e) * ln(a / e), with e and a the shares of the
  reference and recent scores in 10 fixed equal-width bins on [0, 1]. Empty bins get a share of `EPSILON`
  so that the log stays finite. The usual reading: below 0.1 stable, 0.1 to 0.2 a moderate shift, above 0.2
  a significant one, hence the default alert at 0.2.
* Kolmogorov-Smirnov statistic, the largest gap between the two empirical CDFs (0 to 1). Reported for
  reading, not used for the flag: at the sample sizes of a live dataset every tiny gap is "significant".
* mean score before and after.

Fixed bins (rather than reference quantiles) keep PSI comparable between labels and between reports. PSI
on fewer than about 100 scores on either side is noisy; the report carries both counts so callers can
judge. Pure numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

# Ten equal-width bins on [0, 1]: fine enough to see a distribution move, coarse enough to fill.
BINS = 10

# The share given to an empty bin, so that ln(a / e) stays finite; small enough not to dominate the PSI.
EPSILON = 1e-4


@dataclass(frozen=True)
class LabelDrift:
    """How one label's score distribution moved between training time and now."""

    label: str
    psi: float
    ks: float
    mean_before: float
    mean_after: float
    shifted: bool


@dataclass(frozen=True)
class DriftReport:
    """Per-label drift plus the dataset's uncovered share before and after; shifted if anything moved."""

    labels: list[LabelDrift]
    uncovered_before: float
    uncovered_after: float
    shifted: bool
    n_reference: int
    n_recent: int
    psi_alert: float
    uncovered_alert: float

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable copy: plain floats, ints, bools, strings and lists."""
        return asdict(self)


def population_stability_index(reference: FloatArray, recent: FloatArray, *, bins: int = BINS) -> float:
    """PSI of two samples of scores in [0, 1] over `bins` equal-width bins; 0 when the histograms agree.

    Each term (a - e) * ln(a / e) is at least 0 (both factors share a sign), so PSI is never negative.
    Scores outside [0, 1] are clipped into the end bins.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    expected = _shares(np.clip(reference, 0.0, 1.0), edges)
    actual = _shares(np.clip(recent, 0.0, 1.0), edges)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _shares(scores: FloatArray, edges: FloatArray) -> FloatArray:
    """Share of scores in each bin (the last bin closed at 1.0), empty bins raised to EPSILON."""
    counts, _ = np.histogram(scores, bins=edges)
    return np.maximum(counts / scores.size, EPSILON)


def ks_statistic(reference: FloatArray, recent: FloatArray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    reference, recent = np.sort(reference), np.sort(recent)
    # Both CDFs only change at observed values, so comparing them there finds the supremum.
    points = np.concatenate([reference, recent])
    below_reference = np.searchsorted(reference, points, side="right") / reference.size
    below_recent = np.searchsorted(recent, points, side="right") / recent.size
    return float(np.max(np.abs(below_reference - below_recent)))


def uncovered_share(scores: FloatArray, thresholds: FloatArray) -> float:
    """Share of messages with no label at or above its threshold; labels with a non-finite threshold are ignored.

    1.0 when no label has a finite threshold: nothing can cover a message then.
    """
    informative = np.isfinite(thresholds)
    covered = (scores[:, informative] >= thresholds[informative]).any(axis=1)
    return float(1.0 - covered.mean())


def drift(
    reference: FloatArray,
    recent: FloatArray,
    labels: Sequence[str],
    thresholds: FloatArray,
    *,
    psi_alert: float = 0.2,
    uncovered_alert: float = 0.1,
) -> DriftReport:
    """Compare recent scores with those at training time, per label and for coverage.

    reference is (n, L), recent is (m, L), both calibrated probabilities for the same L labels, named by
    labels and cut by thresholds (L,). A label is shifted when its PSI is at least psi_alert; the report is
    shifted when any label is, or when the uncovered share moved by at least uncovered_alert (absolute).
    """
    reference, recent, thresholds = _inputs(reference, recent, labels, thresholds)
    per_label = [_label_drift(name, reference[:, i], recent[:, i], psi_alert) for i, name in enumerate(labels)]
    before = uncovered_share(reference, thresholds)
    after = uncovered_share(recent, thresholds)
    coverage_moved = abs(after - before) >= uncovered_alert
    return DriftReport(
        labels=per_label,
        uncovered_before=before,
        uncovered_after=after,
        shifted=coverage_moved or any(entry.shifted for entry in per_label),
        n_reference=int(reference.shape[0]),
        n_recent=int(recent.shape[0]),
        psi_alert=float(psi_alert),
        uncovered_alert=float(uncovered_alert),
    )


def _label_drift(name: str, before: FloatArray, after: FloatArray, psi_alert: float) -> LabelDrift:
    """One label's PSI, KS statistic and means, flagged when PSI reaches psi_alert."""
    psi = population_stability_index(before, after)
    return LabelDrift(
        label=str(name),
        psi=psi,
        ks=ks_statistic(before, after),
        mean_before=float(before.mean()),
        mean_after=float(after.mean()),
        shifted=bool(psi >= psi_alert),
    )


def _inputs(
    reference: FloatArray, recent: FloatArray, labels: Sequence[str], thresholds: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The inputs as float64 arrays, rejecting empty samples, NaN scores and shapes that disagree about L."""
    reference = np.asarray(reference, dtype=np.float64)
    recent = np.asarray(recent, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    n_labels = len(labels)
    for name, scores in (("reference", reference), ("recent", recent)):
        if scores.ndim != 2 or scores.shape[1] != n_labels:
            raise ValueError(f"{name} must have shape (rows, {n_labels}), one column per label, got {scores.shape}")
        if scores.shape[0] == 0:
            raise ValueError(f"{name} has no messages; drift needs scores on both sides")
        if np.isnan(scores).any():
            raise ValueError(f"{name} scores contain NaN")
    if thresholds.shape != (n_labels,):
        raise ValueError(f"thresholds must have shape ({n_labels},), got {thresholds.shape}")
    return reference, recent, thresholds

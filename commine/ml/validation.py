"""Validation of a multi-label model: the test split, label reports, thresholds, coverage, balance and the rating.

The Validation page answers "can this model be trusted, and what should the trainer do next?". It holds back a
deterministic share of the reviewed messages as a test split, judges every label on it (precision and recall at a
threshold, average precision, the precision-recall curve and three named thresholds), then rolls the label
results, the dataset's coverage and the balance of the reviewed set into a model rating from 0 to 100 with the
reasons and one next best action.

The reference product keeps its rating formula secret; this one is published in docs/model-rating.md, and every
constant it uses is a module constant below. The rating is monotone (better inputs never lower it), bounded and
explainable: each of its four factors carries its own score, reasons and action.

Everything is pure numpy: no I/O, and the same inputs give the same outputs on every machine and run. The metrics
themselves (curves, AP, MAP, target thresholds) come from `commine.ml.metrics` and follow its 0/0 conventions.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from commine.ml.metrics import (
    average_precision,
    mean_average_precision,
    precision_recall_at,
    precision_recall_curve,
    threshold_for_precision,
    threshold_for_recall,
)

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: Default share of reviewed messages held back for testing.
TEST_SHARE = 0.2
#: Precision the `high_precision` preset aims for, and recall the `high_recall` preset aims for.
HIGH_PRECISION_TARGET = 0.95
HIGH_RECALL_TARGET = 0.95
#: Most points a stored precision-recall curve keeps (one per recall percent, plus the final (1, 0) point).
CURVE_POINTS = 101

#: Balance: messages drawn from each side, and neighbours per message, for the nearest-neighbour statistic.
BALANCE_SAMPLE = 1000
BALANCE_NEIGHBOURS = 10
#: Balance: the share of reviewed messages labelled from Shuffle that earns full marks, and the similarity's weight.
RANDOM_SHARE_TARGET = 0.2
SIMILARITY_WEIGHT = 0.8
#: Below this many reviewed messages the similarity is flagged as a rough estimate.
BALANCE_FEW_REVIEWED = 50

#: Coverage scores 0 at or below the floor and 100 at or above the target, linearly between.
COVERAGE_FLOOR = 0.3
COVERAGE_TARGET = 0.9
#: Average precision (per label, and the mean) scores 0 at or below the floor and 100 at or above the target.
AP_FLOOR = 0.4
AP_TARGET = 0.95
#: A label underperforms with fewer reviewed examples than this, or an average precision below UNDERPERFORMING_AP.
MIN_EXAMPLES = 25
UNDERPERFORMING_AP = 0.7
#: The underperforming-labels factor looks at this share of the labels, the worst ones (at least one label).
WORST_SHARE = 0.1

#: The four factors, in the order they are reported, and their weights in the rating.
FACTORS = ("balance", "coverage", "all_labels", "underperforming_labels")
WEIGHTS = {"balance": 0.2, "coverage": 0.2, "all_labels": 0.4, "underperforming_labels": 0.2}
#: The rating is never more than this many points above its weakest factor.
WEAKEST_MARGIN = 50
#: Lowest score of each band, best band first.
BANDS = (("Excellent", 90), ("Good", 70), ("Average", 50), ("Poor", 0))

PRESETS = ("high_precision", "balanced", "high_recall")


# --- the test split -------------------------------------------------------------------------------------------


def test_mask(uids: Sequence[str], share: float = TEST_SHARE, salt: str = "") -> BoolArray:
    """True for each message in the test split: the first 8 bytes of sha256(salt + uid), read as a fraction, < share.

    Each message's side depends on its uid alone, so it never changes as the dataset grows or shrinks, whatever the
    order, machine or run; a model is therefore never tested on a message an earlier version trained on. A
    different salt draws an independent split.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be within [0, 1], got {share}")
    if share == 1.0:
        return np.ones(len(uids), dtype=np.bool_)
    digests = b"".join(hashlib.sha256((salt + uid).encode("utf-8")).digest()[:8] for uid in uids)
    positions = np.frombuffer(digests, dtype=">u8")
    # Compare integers: a 64-bit position converted to float can round up to 1.0 and break `< share`.
    return positions < np.uint64(int(share * 2.0**64))


# The name starts with "test_", so a test module importing it would have pytest collect it as a test.
test_mask.__test__ = False  # type: ignore[attr-defined]


# --- one label ------------------------------------------------------------------------------------------------


def _json_float(value: float) -> float | None:
    """A float for JSON: NaN, which JSON cannot hold, becomes None."""
    return None if math.isnan(value) else float(value)


@dataclass(frozen=True)
class Curve:
    """A precision-recall curve as `precision_recall_curve` draws it, possibly thinned for storage.

    precision[i] and recall[i] hold at thresholds[i] (ascending); the one extra last point (precision 1,
    recall 0) stands for a threshold above every score.
    """

    precision: tuple[float, ...]
    recall: tuple[float, ...]
    thresholds: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float]]:
        """The curve as three JSON lists."""
        return {"precision": list(self.precision), "recall": list(self.recall), "thresholds": list(self.thresholds)}


def thin_curve(
    precisions: FloatArray, recalls: FloatArray, thresholds: FloatArray, max_points: int = CURVE_POINTS
) -> Curve:
    """Keep at most max_points of a curve: for each recall level k/(max_points - 1), the highest threshold reaching it.

    Those points are the ones a threshold is chosen from (a lower threshold with the same recall only adds false
    positives), and they are evenly spread along the recall axis the curve is drawn on. A curve already short
    enough is kept whole.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    if precisions.size <= max_points:
        return Curve(tuple(precisions.tolist()), tuple(recalls.tolist()), tuple(thresholds.tolist()))
    levels = np.arange(1, max_points) / (max_points - 1)
    ascending = recalls[:-1][::-1]  # recall falls as the threshold rises, so reversed it is sorted
    # The tolerance keeps a recall of 7/100 computed as a ratio from missing the level 0.07.
    reaching = ascending.size - np.searchsorted(ascending, levels - 1e-12, side="left")
    kept = np.unique(reaching[reaching > 0] - 1)
    return Curve(
        tuple(np.append(precisions[kept], precisions[-1]).tolist()),
        tuple(np.append(recalls[kept], recalls[-1]).tolist()),
        tuple(thresholds[kept].tolist()),
    )


def _balanced_threshold(precisions: FloatArray, recalls: FloatArray, thresholds: FloatArray) -> float:
    """The threshold with the best F1 on the curve; on a tie the highest, which predicts fewer messages."""
    precisions, recalls = precisions[:-1], recalls[:-1]
    sums = precisions + recalls
    f1 = np.divide(2 * precisions * recalls, sums, out=np.zeros_like(sums), where=sums > 0)
    return float(thresholds[f1.size - 1 - int(np.argmax(f1[::-1]))])


def _high_precision_threshold(
    scores: FloatArray, truth: BoolArray, precisions: FloatArray, thresholds: FloatArray
) -> float:
    """The lowest threshold with precision >= HIGH_PRECISION_TARGET, else the lowest one with the best precision."""
    reached = threshold_for_precision(scores, truth, HIGH_PRECISION_TARGET)
    return reached if reached is not None else float(thresholds[int(np.argmax(precisions[:-1]))])


def presets(scores: ArrayLike, truth: ArrayLike) -> dict[str, float | None]:
    """The named thresholds of one label, read from its validation curve; all None for a label without positives.

    * high_precision: the lowest threshold whose precision is at least HIGH_PRECISION_TARGET (0.95), keeping the
      most recall at that precision; when no threshold gets there, the lowest threshold with the best precision.
    * balanced: the threshold with the best F1 (harmonic mean of precision and recall); ties go to the highest.
    * high_recall: the highest threshold whose recall is at least HIGH_RECALL_TARGET (0.95), keeping the most
      precision at that recall; always reachable, since the lowest score has recall 1.

    Each is one of the label's scores, so "score >= threshold" picks exactly the messages the curve counted.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.bool_)
    precisions, recalls, thresholds = precision_recall_curve(scores, truth)
    if not truth.any():
        return dict.fromkeys(PRESETS)
    return {
        "high_precision": _high_precision_threshold(scores, truth, precisions, thresholds),
        "balanced": _balanced_threshold(precisions, recalls, thresholds),
        "high_recall": threshold_for_recall(scores, truth, HIGH_RECALL_TARGET),
    }


@dataclass(frozen=True)
class LabelReport:
    """How one label did on the test split.

    support is the number of test messages carrying the label; precision and recall hold at `threshold`;
    average_precision is NaN when support is 0; presets maps each name of PRESETS to a threshold or None.
    """

    name: str
    support: int
    threshold: float
    precision: float
    recall: float
    average_precision: float
    curve: Curve
    presets: Mapping[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; a NaN average precision becomes None."""
        return {
            "name": self.name,
            "support": self.support,
            "threshold": self.threshold,
            "precision": self.precision,
            "recall": self.recall,
            "average_precision": _json_float(self.average_precision),
            "curve": self.curve.to_dict(),
            "presets": dict(self.presets),
        }


def label_report(
    name: str, scores: ArrayLike, truth: ArrayLike, threshold: float = 0.5, max_points: int = CURVE_POINTS
) -> LabelReport:
    """Judge one label on the test split from its full probability vector (never from top-k output).

    scores are the model's probabilities for the label on every test message, truth whether each carries it.
    The presets are read from the full curve; only the stored curve is thinned to max_points.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.bool_)
    precision, recall = precision_recall_at(scores, truth, threshold)
    precisions, recalls, thresholds = precision_recall_curve(scores, truth)
    return LabelReport(
        name=name,
        support=int(np.count_nonzero(truth)),
        threshold=float(threshold),
        precision=precision,
        recall=recall,
        average_precision=average_precision(scores, truth),
        curve=thin_curve(precisions, recalls, thresholds, max_points),
        presets=presets(scores, truth),
    )


# --- the whole model ------------------------------------------------------------------------------------------


def _nan_mean(values: Sequence[float]) -> float:
    """Mean of values, NaN when there are none (rather than numpy's warning)."""
    return float(np.mean(values)) if values else float("nan")


@dataclass(frozen=True)
class ValidationReport:
    """Every label's report, plus the model-level summary over the labels that have test examples.

    mean_average_precision, macro_precision and macro_recall skip labels with no positive test message (their
    AP is undefined and their recall is 1 by convention) and are NaN when no label has one.
    """

    labels: tuple[LabelReport, ...]
    n_messages: int
    mean_average_precision: float
    macro_precision: float
    macro_recall: float

    def label(self, name: str) -> LabelReport:
        """The report of the label called name."""
        for report in self.labels:
            if report.name == name:
                return report
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; NaN becomes None."""
        return {
            "n_messages": self.n_messages,
            "mean_average_precision": _json_float(self.mean_average_precision),
            "macro_precision": _json_float(self.macro_precision),
            "macro_recall": _json_float(self.macro_recall),
            "labels": [report.to_dict() for report in self.labels],
        }


def _matrix_inputs(scores: ArrayLike, truth: ArrayLike, n_labels: int) -> tuple[FloatArray, BoolArray]:
    """Scores and truth as messages x labels arrays, with one column per label name."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.bool_)
    if scores.ndim != 2 or scores.shape != truth.shape:
        raise ValueError(f"scores and truth must be 2-D of the same shape, got {scores.shape} and {truth.shape}")
    if scores.shape[1] != n_labels:
        raise ValueError(f"{n_labels} label names for {scores.shape[1]} columns")
    return scores, truth


def validate(
    labels: Sequence[str], scores: ArrayLike, truth: ArrayLike, threshold: float | ArrayLike = 0.5
) -> ValidationReport:
    """Judge every label on the test split: scores and truth are test messages x labels, in the order of labels.

    threshold is one value for all labels or one per label; it sets the reported precision and recall only.
    """
    if len(set(labels)) != len(labels):
        raise ValueError("label names must be unique")
    scores, truth = _matrix_inputs(scores, truth, len(labels))
    thresholds = np.asarray(threshold, dtype=np.float64)
    if thresholds.ndim not in (0, 1) or (thresholds.ndim == 1 and thresholds.shape != (len(labels),)):
        raise ValueError(f"threshold must be a number or one per label, got shape {thresholds.shape}")
    thresholds = np.broadcast_to(thresholds, (len(labels),))
    reports = tuple(
        label_report(name, scores[:, j], truth[:, j], float(thresholds[j])) for j, name in enumerate(labels)
    )
    judged = [report for report in reports if report.support]
    return ValidationReport(
        labels=reports,
        n_messages=int(scores.shape[0]),
        mean_average_precision=mean_average_precision(scores, truth) if labels else float("nan"),
        macro_precision=_nan_mean([report.precision for report in judged]),
        macro_recall=_nan_mean([report.recall for report in judged]),
    )


def preset_thresholds(report: ValidationReport, preset: str = "balanced", fallback: float = 0.5) -> FloatArray:
    """One threshold per label of report, from the named preset; fallback where the preset is None."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    chosen = [label.presets[preset] for label in report.labels]
    return np.array([fallback if value is None else value for value in chosen], dtype=np.float64)


# --- coverage -------------------------------------------------------------------------------------------------


def _ancestors(labels: Sequence[str]) -> BoolArray:
    """ancestors[i, j] is True when label i is a proper ancestor of label j ("A" and "A > B" of "A > B > C")."""
    index = {name: i for i, name in enumerate(labels)}
    ancestors = np.zeros((len(labels), len(labels)), dtype=np.bool_)
    for j, name in enumerate(labels):
        parts = [part.strip() for part in name.split(">")]
        for depth in range(1, len(parts)):
            parent = index.get(" > ".join(parts[:depth]))
            if parent is not None:
                ancestors[parent, j] = True
    return ancestors


def informative_labels(labels: Sequence[str], truth: ArrayLike) -> BoolArray:
    """Which labels count for coverage: those that say something on their own in the reviewed messages.

    A label is informative when at least one reviewed message carries it with no other label except its own
    ancestors (which it implies). A label that only ever comes along with another one, such as a parent always
    assigned with a child, or a tag like "Urgent", does not by itself mean a message is understood. A label with
    no reviewed message yet counts as informative: nothing says otherwise.
    """
    truth = np.asarray(truth, dtype=np.bool_)
    if truth.ndim != 2 or truth.shape[1] != len(labels):
        raise ValueError(f"truth must be messages x {len(labels)} labels, got {truth.shape}")
    on_message = truth.sum(axis=1, dtype=np.int64)
    ancestors_on_message = truth.astype(np.float64) @ _ancestors(labels).astype(np.float64)
    alone = truth & (on_message[:, None] - 1 - np.rint(ancestors_on_message).astype(np.int64) == 0)
    return alone.any(axis=0) | ~truth.any(axis=0)


def coverage(scores: ArrayLike, thresholds: ArrayLike, informative: ArrayLike | None = None) -> float:
    """Share of messages with at least one informative label scoring at or above its threshold; 0.0 when empty.

    scores are the predictions for all of the dataset's messages, reviewed or not (messages x labels), so
    coverage tells how much of the traffic the taxonomy understands. A NaN threshold is never reached.
    """
    scores = np.asarray(scores, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if scores.ndim != 2 or thresholds.shape != (scores.shape[1],):
        raise ValueError(f"scores must be messages x labels with one threshold per label, got {scores.shape}")
    chosen = np.ones(scores.shape[1], np.bool_) if informative is None else np.asarray(informative, np.bool_)
    if chosen.shape != thresholds.shape:
        raise ValueError(f"informative must have one flag per label, got shape {chosen.shape}")
    if scores.shape[0] == 0 or not chosen.any():
        return 0.0
    confident = scores[:, chosen] >= thresholds[chosen]
    return float(np.count_nonzero(confident.any(axis=1)) / scores.shape[0])


# --- balance --------------------------------------------------------------------------------------------------


def _subsample(rows: FloatArray, size: int) -> FloatArray:
    """size rows drawn without replacement by a fixed seed, in their original order, so reruns agree."""
    if rows.shape[0] == size:
        return rows
    return rows[np.sort(np.random.default_rng(0).choice(rows.shape[0], size, replace=False))]


def _normalised(rows: FloatArray) -> FloatArray:
    """Rows scaled to unit length, so a dot product is a cosine; an all-zero row stays zero."""
    rows = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(rows).all():
        raise ValueError("embeddings contain NaN or infinity")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def similarity(
    reviewed: ArrayLike, unreviewed: ArrayLike, sample: int = BALANCE_SAMPLE, neighbours: int = BALANCE_NEIGHBOURS
) -> float:
    """How alike the reviewed and the unreviewed messages are, in [0, 1]: a nearest-neighbour two-sample statistic.

    Draw m = min(r, u, sample) messages from each side, L2-normalise the embeddings, and find each drawn message's
    `neighbours` nearest others by cosine in the pooled 2m. If both sides come from one distribution, a
    neighbour is from the other side with probability m / (2m - 1) (about 1/2); if they occupy different regions
    it never is. The similarity is the observed cross-side share divided by that chance value, capped at 1: 1
    means a reviewed message is as likely to sit among unreviewed ones as among its own kind, 0 means the
    reviewed set covers none of the unreviewed messages' regions. The fixed-size draw keeps it at a few tenths of
    a second for any dataset. No reviewed message gives 0, no unreviewed message 1 (the reviewed set is the dataset).
    """
    if sample < 1 or neighbours < 1:
        raise ValueError(f"sample and neighbours must be positive, got {sample} and {neighbours}")
    reviewed = np.asarray(reviewed)
    unreviewed = np.asarray(unreviewed)
    if reviewed.ndim != 2 or unreviewed.ndim != 2 or reviewed.shape[1] != unreviewed.shape[1]:
        raise ValueError(f"embeddings must be 2-D of one width, got {reviewed.shape} and {unreviewed.shape}")
    if reviewed.shape[0] == 0:
        return 0.0
    if unreviewed.shape[0] == 0:
        return 1.0
    m = min(reviewed.shape[0], unreviewed.shape[0], sample)
    pooled = np.vstack([_normalised(_subsample(reviewed, m)), _normalised(_subsample(unreviewed, m))])
    k = min(neighbours, 2 * m - 1)
    cosines = pooled @ pooled.T
    np.fill_diagonal(cosines, -np.inf)  # a message is not its own neighbour
    nearest = np.argpartition(cosines, -k, axis=1)[:, -k:]
    is_reviewed = np.arange(2 * m) < m
    cross_share = float(np.mean((nearest < m) != is_reviewed[:, None]))
    return min(1.0, cross_share / (m / (2 * m - 1)))


@dataclass(frozen=True)
class BalanceReport:
    """How representative the reviewed messages are: score in [0, 1], its two inputs, the reasons and the action."""

    score: float
    similarity: float
    random_share: float
    n_reviewed: int
    n_unreviewed: int
    reasons: tuple[str, ...]
    action: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {
            "score": self.score,
            "similarity": self.similarity,
            "random_share": self.random_share,
            "n_reviewed": self.n_reviewed,
            "n_unreviewed": self.n_unreviewed,
            "reasons": list(self.reasons),
            "action": self.action,
        }


def balance_score(similarity: float, random_share: float) -> float:
    """SIMILARITY_WEIGHT x similarity + the rest x min(1, random_share / RANDOM_SHARE_TARGET), in [0, 1]."""
    shuffle_credit = min(1.0, random_share / RANDOM_SHARE_TARGET)
    return SIMILARITY_WEIGHT * similarity + (1.0 - SIMILARITY_WEIGHT) * shuffle_credit


def _balance_reasons(value: float, random_share: float, n_reviewed: int, n_unreviewed: int) -> tuple[str, ...]:
    """Plain-language reasons for a balance score."""
    if n_reviewed == 0:
        found = "No message is reviewed yet"
    elif n_unreviewed == 0:
        found = "Every message is reviewed"
    elif value >= 0.9:
        found = f"Reviewed messages are representative of the unreviewed ones (similarity {value:.2f})"
    elif value >= 0.7:
        found = f"Reviewed messages are somewhat unlike the unreviewed ones (similarity {value:.2f})"
    else:
        found = f"Reviewed messages are unlike the unreviewed ones (similarity {value:.2f}): some kinds are missing"
    reasons = [found, f"{random_share:.0%} of reviewed messages were labelled from Shuffle (aim for 20% or more)"]
    if 0 < n_reviewed < BALANCE_FEW_REVIEWED:
        reasons.append(f"Only {n_reviewed} reviewed messages: the similarity is a rough estimate")
    return tuple(reasons)


def balance(reviewed: ArrayLike, unreviewed: ArrayLike, random_share: float) -> BalanceReport:
    """Balance of the reviewed set: its `similarity` to the unreviewed messages and the share reviewed at random.

    reviewed and unreviewed are message embeddings (rows); random_share is the share of reviewed messages that
    were labelled from Shuffle (random order), which keeps the reviewed set unbiased by construction.
    """
    if not 0.0 <= random_share <= 1.0:
        raise ValueError(f"random_share must be within [0, 1], got {random_share}")
    reviewed = np.asarray(reviewed)
    unreviewed = np.asarray(unreviewed)
    value = similarity(reviewed, unreviewed)
    similarity_loss = SIMILARITY_WEIGHT * (1.0 - value)
    shuffle_loss = balance_score(1.0, 1.0) - balance_score(1.0, random_share)
    if shuffle_loss >= similarity_loss and shuffle_loss > 0:
        action = "Label more messages from Shuffle to improve balance"
    else:
        action = "Label messages from Rebalance to improve balance: they show what the reviewed set lacks"
    return BalanceReport(
        score=balance_score(value, random_share),
        similarity=value,
        random_share=float(random_share),
        n_reviewed=int(reviewed.shape[0]),
        n_unreviewed=int(unreviewed.shape[0]),
        reasons=_balance_reasons(value, random_share, int(reviewed.shape[0]), int(unreviewed.shape[0])),
        action=action,
    )


# --- the model rating -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Factor:
    """One of the four factors of the rating: its score 0-100, why, and the action that would raise it most."""

    name: str
    score: int
    reasons: tuple[str, ...]
    action: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {"name": self.name, "score": self.score, "reasons": list(self.reasons), "action": self.action}


@dataclass(frozen=True)
class Rating:
    """The model rating: score 0-100, its band, the four factors, and the one next best action."""

    score: int
    band: str
    factors: tuple[Factor, ...]
    next_action: str

    def factor(self, name: str) -> Factor:
        """The factor called name."""
        for factor in self.factors:
            if factor.name == name:
                return factor
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {
            "score": self.score,
            "band": self.band,
            "factors": [factor.to_dict() for factor in self.factors],
            "next_action": self.next_action,
        }


def band(score: float) -> str:
    """The band of a rating: Poor 0-49, Average 50-69, Good 70-89, Excellent 90-100."""
    if not 0 <= score <= 100:
        raise ValueError(f"a rating lies within [0, 100], got {score}")
    return next(name for name, lowest in BANDS if score >= lowest)


def _points(fraction: float) -> int:
    """A fraction in [0, 1] as whole points out of 100, rounding halves up."""
    return math.floor(100.0 * min(1.0, max(0.0, fraction)) + 0.5)


def _ramp(value: float, floor: float, target: float) -> float:
    """0 at or below floor, 1 at or above target, linear between; 0 for NaN (nothing measured earns nothing)."""
    if math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, (value - floor) / (target - floor)))


def combine(scores: Mapping[str, int]) -> int:
    """The rating from the four factor scores: the weighted mean, capped at WEAKEST_MARGIN above the weakest factor.

    The cap keeps one bad factor from hiding behind good ones: a factor below 40 keeps the rating out of Excellent,
    and a factor at 0 holds it at 50.
    Both parts only grow with each factor, so the rating is monotone; it lies in [0, 100].
    """
    if set(scores) != set(FACTORS):
        raise ValueError(f"need a score for each of {FACTORS}, got {sorted(scores)}")
    weighted = sum(WEIGHTS[name] * scores[name] for name in FACTORS)
    capped = min(weighted, min(scores.values()) + WEAKEST_MARGIN)
    return int(min(100, max(0, math.floor(capped + 0.5))))


def label_health(average_precision: float, examples: int) -> float:
    """One label's health in [0, 1]: the lesser of its AP on the AP ramp and its examples / MIN_EXAMPLES."""
    return min(_ramp(average_precision, AP_FLOOR, AP_TARGET), min(1.0, examples / MIN_EXAMPLES))


def underperforms(average_precision: float, examples: int) -> bool:
    """A label underperforms with fewer than MIN_EXAMPLES examples, or an AP below UNDERPERFORMING_AP or unknown."""
    return examples < MIN_EXAMPLES or math.isnan(average_precision) or average_precision < UNDERPERFORMING_AP


def worst_mean(healths: Sequence[float]) -> float:
    """Mean of the worst WORST_SHARE of healths (at least one); 0 when there are none."""
    if not healths:
        return 0.0
    count = max(1, math.ceil(WORST_SHARE * len(healths)))
    return float(np.mean(sorted(healths)[:count]))


def _describe(report: LabelReport, examples: int) -> str:
    """A label's AP and example count, as the reasons and actions quote them."""
    if math.isnan(report.average_precision):
        return f"no test example yet, {examples} examples"
    return f"average precision {report.average_precision:.2f} on {examples} examples"


def _balance_factor(report: BalanceReport) -> Factor:
    """The balance factor: the balance score in points."""
    return Factor("balance", _points(report.score), report.reasons, report.action)


def _coverage_factor(value: float) -> Factor:
    """The coverage factor: coverage on its ramp from COVERAGE_FLOOR to COVERAGE_TARGET."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"coverage must be within [0, 1], got {value}")
    reasons = (
        f"{value:.0%} of messages have at least one confident informative label",
        f"Coverage earns full marks at {COVERAGE_TARGET:.0%} and none at {COVERAGE_FLOOR:.0%} or below",
    )
    action = (
        f"Label messages from Low confidence to improve coverage: {1.0 - value:.0%} of messages "
        "have no confident informative label"
    )
    return Factor("coverage", _points(_ramp(value, COVERAGE_FLOOR, COVERAGE_TARGET)), reasons, action)


def _all_labels_factor(report: ValidationReport, examples: Mapping[str, int]) -> Factor:
    """The all-labels factor: the mean average precision on the AP ramp."""
    judged = [label for label in report.labels if label.support]
    if not judged:
        reasons: tuple[str, ...] = ("No label has a test example yet",)
        return Factor("all_labels", 0, reasons, "Label messages from Shuffle so that every label has examples")
    reasons = (
        f"Mean average precision {report.mean_average_precision:.2f} over {len(judged)} labels with test examples",
        f"Macro precision {report.macro_precision:.2f} and recall {report.macro_recall:.2f} at the threshold",
    )
    if len(judged) < len(report.labels):
        reasons += (f"{len(report.labels) - len(judged)} labels have no test example and are not judged",)
    weakest = min(judged, key=lambda label: (label.average_precision, label.name))
    action = (
        f"Correct label '{weakest.name}' with Check label and Missed label: "
        f"{_describe(weakest, examples[weakest.name])}"
    )
    return Factor("all_labels", _points(_ramp(report.mean_average_precision, AP_FLOOR, AP_TARGET)), reasons, action)


def _underperforming_factor(report: ValidationReport, examples: Mapping[str, int]) -> Factor:
    """The underperforming-labels factor: the mean health of the worst WORST_SHARE of labels."""
    if not report.labels:
        return Factor("underperforming_labels", 0, ("The taxonomy has no label",), "Define labels and teach them")
    health = {label.name: label_health(label.average_precision, examples[label.name]) for label in report.labels}
    ranked = sorted(report.labels, key=lambda label: (health[label.name], examples[label.name], label.name))
    weak = [label for label in ranked if underperforms(label.average_precision, examples[label.name])]
    count = max(1, math.ceil(WORST_SHARE * len(ranked)))
    reasons = (
        f"{len(weak)} of {len(ranked)} labels underperform (average precision below {UNDERPERFORMING_AP:.2f}, "
        f"or fewer than {MIN_EXAMPLES} examples)",
        f"The worst {count} of {len(ranked)} labels ({WORST_SHARE:.0%}) have a mean health of "
        f"{worst_mean(list(health.values())):.2f} out of 1",
        *(f"'{label.name}': {_describe(label, examples[label.name])}" for label in weak[:5]),
    )
    action = f"Teach label '{ranked[0].name}': {_describe(ranked[0], examples[ranked[0].name])}"
    return Factor("underperforming_labels", _points(worst_mean(list(health.values()))), reasons, action)


def _example_counts(report: ValidationReport, examples: Mapping[str, int] | None) -> Mapping[str, int]:
    """Reviewed examples per label: as given, or the test support when not given."""
    if examples is None:
        return {label.name: label.support for label in report.labels}
    missing = [label.name for label in report.labels if label.name not in examples]
    if missing:
        raise ValueError(f"examples lacks the labels {missing}")
    return examples


def next_factor(scores: Mapping[str, int]) -> str | None:
    """The factor whose perfection would raise the rating most (ties: the first in FACTORS); None at 100 already."""
    current = combine(scores)
    gains = {name: combine({**scores, name: 100}) - current for name in FACTORS}
    best = max(FACTORS, key=lambda name: (gains[name], -FACTORS.index(name)))
    return best if gains[best] > 0 else None


def rating(
    report: ValidationReport,
    coverage: float,
    balance: BalanceReport,
    examples: Mapping[str, int] | None = None,
) -> Rating:
    """Rate a model 0-100 from its validation report, the dataset's coverage and the balance of the reviewed set.

    examples counts every reviewed message per label name (train and test); without it the test support stands
    in, which undercounts and so rates the example counts harshly. The formula is in docs/model-rating.md.
    """
    counts = _example_counts(report, examples)
    factors = (
        _balance_factor(balance),
        _coverage_factor(coverage),
        _all_labels_factor(report, counts),
        _underperforming_factor(report, counts),
    )
    scores = {factor.name: factor.score for factor in factors}
    score = combine(scores)
    chosen = next_factor(scores)
    next_action = (
        "Nothing to fix: keep reviewing some new messages from Shuffle so the rating follows new traffic"
        if chosen is None
        else next(factor.action for factor in factors if factor.name == chosen)
    )
    return Rating(score=score, band=band(score), factors=factors, next_action=next_action)

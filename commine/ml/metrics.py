"""Validation metrics for a multi-label classifier: precision/recall, PR curves, AP and MAP.

The Validation page judges each label on its own (a binary problem: does this message carry the label?)
from the model's full probability vectors, then summarises the model by the mean of the per-label average
precisions. Every function here takes the scores of one label for all validation messages (1-D), except
`mean_average_precision`, which takes the whole messages x labels matrix.

The numbers match scikit-learn's `precision_recall_curve` and `average_precision_score`, including ties:
all messages sharing a score enter the prediction set together, in one step, because no threshold can
separate them. Everything is vectorised: one stable descending sort, then cumulative sums read at the last
index of each run of tied scores, O(n log n).

Conventions where a ratio is 0/0 (the same as sklearn's ``zero_division=1.0``):

* precision with no predicted positives is 1.0: nothing was claimed, so nothing claimed was wrong. This is
  also the final (precision 1, recall 0) point of the PR curve.
* recall for a label with no positives in the truth is 1.0: there was nothing to find, so nothing was missed.
* average precision of a label with no positives is NaN (sklearn returns 0 with a warning): the ranking cannot
  be judged, and a 0 would drag the mean down for a label the validation set simply does not exercise.
  `mean_average_precision` skips such labels, and is NaN when no label has a positive.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


def _binary_inputs(scores: FloatArray, truth: BoolArray) -> tuple[FloatArray, BoolArray]:
    """Return one label's scores and truth as 1-D float64 / bool arrays, rejecting mismatches and NaN scores."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.bool_)
    if scores.ndim != 1 or scores.shape != truth.shape:
        raise ValueError(f"scores and truth must be 1-D of the same length, got {scores.shape} and {truth.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores, truth


def _check_target(target: float) -> None:
    """Reject a precision or recall target outside [0, 1], which no threshold could mean."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be within [0, 1], got {target}")


def _ranked_counts(scores: FloatArray, truth: BoolArray) -> tuple[IntArray, IntArray, FloatArray]:
    """Cumulative true and false positives at each distinct score, from the highest score down.

    Element i answers "predict positive every message scoring at least thresholds[i]": tied messages are
    counted together because the counts are read only at the last index of each run of equal scores.
    """
    order = np.argsort(-scores, kind="mergesort")
    ranked_scores = scores[order]
    run_ends = np.flatnonzero(ranked_scores[1:] != ranked_scores[:-1])
    run_ends = np.append(run_ends, ranked_scores.size - 1) if ranked_scores.size else run_ends
    true_positives = np.cumsum(truth[order], dtype=np.int64)[run_ends]
    false_positives = run_ends + 1 - true_positives
    return true_positives, false_positives, ranked_scores[run_ends]


def _recalls(true_positives: IntArray, n_positives: int) -> FloatArray:
    """Recall at each ranked threshold; 1.0 everywhere for a label without positives (nothing to miss)."""
    if n_positives == 0:
        return np.ones(true_positives.shape, dtype=np.float64)
    return true_positives / n_positives


def precision_recall_at(scores: FloatArray, truth: BoolArray, threshold: float) -> tuple[float, float]:
    """Precision and recall of one label when every message scoring >= threshold is predicted positive.

    Precision = TP / (TP + FP) is 1.0 when nothing is predicted; recall = TP / (TP + FN) is 1.0 when the
    truth has no positives (sklearn's ``zero_division=1.0``; see the module docstring).
    """
    scores, truth = _binary_inputs(scores, truth)
    predicted = scores >= threshold
    true_positives = int(np.count_nonzero(predicted & truth))
    n_predicted = int(np.count_nonzero(predicted))
    n_positives = int(np.count_nonzero(truth))
    precision = true_positives / n_predicted if n_predicted else 1.0
    recall = true_positives / n_positives if n_positives else 1.0
    return precision, recall


def precision_recall_curve(scores: FloatArray, truth: BoolArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Precision and recall at every distinct score of one label, as sklearn's `precision_recall_curve`.

    Returns (precisions, recalls, thresholds) with thresholds ascending (the distinct scores); precisions[i]
    and recalls[i] hold at thresholds[i], and one last point (precision 1, recall 0) stands for a threshold
    above every score, so the curve spans the whole recall axis when drawn.
    """
    scores, truth = _binary_inputs(scores, truth)
    true_positives, false_positives, thresholds = _ranked_counts(scores, truth)
    precisions = true_positives / (true_positives + false_positives)
    recalls = _recalls(true_positives, int(np.count_nonzero(truth)))
    return (
        np.append(precisions[::-1], 1.0),
        np.append(recalls[::-1], 0.0),
        thresholds[::-1].copy(),
    )


def average_precision(scores: FloatArray, truth: BoolArray) -> float:
    """Non-interpolated average precision of one label: sum over thresholds of (R_n - R_{n-1}) * P_n.

    The area under the stepwise PR curve, equal to sklearn's `average_precision_score`; tied scores make one
    step. NaN when the label has no positives, since there is no ranking of positives to judge.
    """
    scores, truth = _binary_inputs(scores, truth)
    n_positives = int(np.count_nonzero(truth))
    if n_positives == 0:
        return float("nan")
    true_positives, false_positives, _ = _ranked_counts(scores, truth)
    precisions = true_positives / (true_positives + false_positives)
    recall_steps = np.diff(true_positives, prepend=0) / n_positives
    return float(np.sum(recall_steps * precisions))


def mean_average_precision(scores: FloatArray, truth: BoolArray) -> float:
    """Mean of the per-label average precisions over a messages x labels matrix.

    Labels without a positive message are skipped (their AP is undefined), so a label the validation set
    does not exercise neither helps nor hurts. NaN when no label has a positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.bool_)
    if scores.ndim != 2 or scores.shape != truth.shape:
        raise ValueError(f"scores and truth must be 2-D of the same shape, got {scores.shape} and {truth.shape}")
    judged = [label for label in range(scores.shape[1]) if truth[:, label].any()]
    if not judged:
        return float("nan")
    return float(np.mean([average_precision(scores[:, label], truth[:, label]) for label in judged]))


def threshold_for_precision(scores: FloatArray, truth: BoolArray, target: float) -> float | None:
    """The lowest threshold (a score of the label) whose precision is at least target, or None.

    The lowest such threshold keeps the most recall at the wanted precision. Precision is not monotone in
    the threshold, so every distinct score is checked. Only thresholds predicting at least one message count:
    the empty prediction's conventional precision of 1.0 would be a useless answer, so unreachable gives None.
    """
    _check_target(target)
    scores, truth = _binary_inputs(scores, truth)
    true_positives, false_positives, thresholds = _ranked_counts(scores, truth)
    reached = np.flatnonzero(true_positives / (true_positives + false_positives) >= target)
    return float(thresholds[reached[-1]]) if reached.size else None


def threshold_for_recall(scores: FloatArray, truth: BoolArray, target: float) -> float | None:
    """The highest threshold (a score of the label) whose recall is at least target, or None.

    The highest such threshold keeps the most precision at the wanted recall. Recall only grows as the
    threshold falls, so this is the first ranked score that reaches the target. None for a label without
    positives: its recall is 1.0 by convention at every threshold, which cannot guide the choice.
    """
    _check_target(target)
    scores, truth = _binary_inputs(scores, truth)
    n_positives = int(np.count_nonzero(truth))
    if n_positives == 0:
        return None
    true_positives, _, thresholds = _ranked_counts(scores, truth)
    reached = np.flatnonzero(_recalls(true_positives, n_positives) >= target)
    return float(thresholds[reached[0]])

"""Active learning: which messages a trainer should review next, for each kind of queue.

Reviewing the right messages teaches a model more than reviewing random ones (ml-notes.md, section 4:
87.2 % against 83.3 % accuracy at 2,885 labels on BANKING77), but a cold model's least confident messages
are outliers (random won the first round there), so the product offers several queues and the trainer picks:

* shuffle: unreviewed messages in a seeded random order, the unbiased first batch;
* teach: unreviewed messages whose probability for one label is closest to its threshold (or 0.5);
* low-confidence: unreviewed messages that no informative label covers, least covered first;
* uncertain: unreviewed messages whose most likely label the model is least sure of, lowest top probability
  first (classic uncertainty sampling; on BANKING77 it reaches 90 % accuracy with fewer labels than any
  other queue, see BENCHMARKS.md);
* check: reviewed messages carrying a label the model doubts (probability below its threshold);
* missed: reviewed messages lacking a label the model predicts (probability at or above its threshold);
* rebalance: unreviewed messages from regions of embedding space that the reviewed set under-represents;
* search: messages containing every word of a query, unreviewed first, most occurrences first.

Every queue then drops near-duplicates (`commine.ml.cluster.distinct`): no two messages of one batch share
a normalised text or an embedding cosine similarity of `NEAR_DUPLICATE` or more, since reviewing the same
message twice teaches nothing. Ties in a ranking are broken by a seeded random order, so that a cold model
whose scores are all equal does not always serve the oldest messages, yet one seed always gives one answer.

Thresholds: where a queue compares a probability with a label's threshold, thresholds default to 0.5. A
label whose threshold is not finite (NaN or inf) is not informative yet (too few examples to trust) and is
ignored by low-confidence, check and missed. Pure numpy, no I/O: the caller loads one dataset's arrays.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from commine.ml.cluster import NEAR_DUPLICATE, default_k, distinct, kmeans, normalise_rows, words

__all__ = ["MODES", "NEAR_DUPLICATE", "Pool", "rank", "select"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

MODES = ("shuffle", "teach", "low-confidence", "uncertain", "check", "missed", "rebalance", "search")

# The threshold assumed for every label when the caller passes none: a calibrated probability's even odds.
DEFAULT_THRESHOLD = 0.5

# Rebalance's regions are rough k-means clusters: fitted on a sample of this many rows, in at most this many
# Lloyd iterations. The regions only have to be coarse to show where reviews are scarce, and the queue must
# answer a trainer in well under a second on 100k messages.
REGION_ROWS = 10_000
REGION_ITERATIONS = 20


@dataclass(frozen=True, eq=False, kw_only=True)
class Pool:
    """One dataset's messages as the queues see them; row i of every array is the same message.

    scores: (N, L) calibrated probabilities per label, or None before any model exists (then only shuffle,
    search and rebalance work). reviewed: (N,) whether a trainer has reviewed the message. truth: (N, L)
    the labels assigned, meaningful on reviewed rows (None when the caller has none; check and missed need
    it). embeddings: (N, d), or None (then near-duplicates are caught by text alone, and rebalance cannot
    run). texts: subject and body of each message.

    Arrays are converted, not copied, where they already have the right dtype; equality is identity
    because comparing arrays element-wise has no single truth value.
    """

    texts: Sequence[str]
    reviewed: BoolArray
    scores: FloatArray | None = None
    truth: BoolArray | None = None
    embeddings: NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        """Coerce the arrays to their dtypes and reject shapes that disagree about N or L."""
        n = len(self.texts)
        reviewed = np.asarray(self.reviewed, dtype=np.bool_)
        if reviewed.shape != (n,):
            raise ValueError(f"reviewed must have shape ({n},) to match texts, got {reviewed.shape}")
        object.__setattr__(self, "reviewed", reviewed)
        if self.scores is not None:
            scores = np.asarray(self.scores, dtype=np.float64)
            if scores.ndim != 2 or scores.shape[0] != n:
                raise ValueError(f"scores must have shape ({n}, L), got {scores.shape}")
            if np.isnan(scores).any():
                raise ValueError("scores contain NaN")
            object.__setattr__(self, "scores", scores)
        if self.truth is not None:
            truth = np.asarray(self.truth, dtype=np.bool_)
            expected = self.scores.shape if self.scores is not None else (n, truth.shape[-1])
            if truth.ndim != 2 or truth.shape != expected:
                raise ValueError(f"truth must have shape {expected} like scores, got {truth.shape}")
            object.__setattr__(self, "truth", truth)
        if self.embeddings is not None:
            embeddings = np.asarray(self.embeddings, dtype=np.float32)
            if embeddings.ndim != 2 or embeddings.shape[0] != n:
                raise ValueError(f"embeddings must have shape ({n}, d), got {embeddings.shape}")
            object.__setattr__(self, "embeddings", embeddings)

    @property
    def size(self) -> int:
        """The number of messages N."""
        return len(self.texts)


def select(
    mode: str,
    pool: Pool,
    *,
    n: int,
    seed: int = 0,
    label: int | None = None,
    query: str | None = None,
    thresholds: FloatArray | None = None,
) -> list[int]:
    """Up to n row indices of pool for the queue `mode`, best first, without repeats or near-duplicates.

    label is required by teach (a column of scores), query by search. Raises ValueError for an unknown
    mode, a missing argument, or a queue that needs what the pool lacks (scores, truth, embeddings).
    """
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    ranked = rank(mode, pool, seed=seed, label=label, query=query, thresholds=thresholds)
    return distinct(ranked, n, texts=pool.texts, embeddings=pool.embeddings)


def rank(
    mode: str,
    pool: Pool,
    *,
    seed: int = 0,
    label: int | None = None,
    query: str | None = None,
    thresholds: FloatArray | None = None,
) -> IntArray:
    """Every row eligible for the queue `mode`, best first, before near-duplicates are dropped.

    Exposed for callers that page through a queue or need its full length; `select` is this plus `distinct`.
    """
    rng = np.random.default_rng(seed)
    tiebreak = rng.permutation(pool.size)
    match mode:
        case "shuffle":
            return rng.permutation(np.flatnonzero(~pool.reviewed))
        case "teach":
            return _teach(pool, _label(pool, label), _thresholds(pool, thresholds), tiebreak)
        case "low-confidence":
            return _low_confidence(pool, _thresholds(pool, thresholds), tiebreak)
        case "uncertain":
            return _uncertain(pool, tiebreak)
        case "check":
            return _check(pool, _thresholds(pool, thresholds), tiebreak)
        case "missed":
            return _missed(pool, _thresholds(pool, thresholds), tiebreak)
        case "rebalance":
            return _rebalance(pool, seed, rng, tiebreak)
        case "search":
            return _search(pool, query, tiebreak)
    raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")


def _ordered(rows: IntArray, keys: FloatArray, tiebreak: IntArray) -> IntArray:
    """rows sorted by keys ascending, equal keys in the seeded random order of tiebreak."""
    return rows[np.lexsort((tiebreak[rows], keys))]


def _scores(pool: Pool, mode: str) -> FloatArray:
    """The pool's scores, or a ValueError naming the queue that needs a model."""
    if pool.scores is None:
        raise ValueError(
            f"the {mode} queue needs model predictions; with no model yet use shuffle, rebalance or search"
        )
    if pool.scores.shape[1] == 0:
        raise ValueError(f"the {mode} queue needs at least one label")
    return pool.scores


def _truth(pool: Pool, mode: str) -> BoolArray:
    """The pool's assigned labels, or a ValueError naming the queue that compares them with the model."""
    if pool.truth is None:
        raise ValueError(f"the {mode} queue needs the assigned labels (truth) of the reviewed messages")
    return pool.truth


def _label(pool: Pool, label: int | None) -> int:
    """The teach queue's label column, checked against the number of labels."""
    scores = _scores(pool, "teach")
    if label is None:
        raise ValueError("the teach queue needs a label")
    if not 0 <= label < scores.shape[1]:
        raise ValueError(f"label {label} out of range for {scores.shape[1]} labels")
    return label


def _thresholds(pool: Pool, thresholds: FloatArray | None) -> FloatArray:
    """Per-label thresholds as float64 (L,), defaulting to 0.5; non-finite entries mark uninformative labels."""
    n_labels = pool.scores.shape[1] if pool.scores is not None else 0
    if thresholds is None:
        return np.full(n_labels, DEFAULT_THRESHOLD)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if pool.scores is not None and thresholds.shape != (n_labels,):
        raise ValueError(f"thresholds must have shape ({n_labels},), one per label, got {thresholds.shape}")
    return thresholds


def _informative(thresholds: FloatArray, mode: str) -> BoolArray:
    """Labels with a finite threshold; a ValueError when there are none, since the queue would be empty."""
    informative = np.isfinite(thresholds)
    if not informative.any():
        raise ValueError(f"the {mode} queue needs at least one label with a finite threshold")
    return informative


def _teach(pool: Pool, label: int, thresholds: FloatArray, tiebreak: IntArray) -> IntArray:
    """Unreviewed rows by distance of the label's probability from its decision point, nearest first.

    The decision point is the label's threshold, or 0.5 when that is not finite: a message there is the one
    the model is least sure which side of the line to put.
    """
    centre = thresholds[label] if np.isfinite(thresholds[label]) else DEFAULT_THRESHOLD
    rows = np.flatnonzero(~pool.reviewed)
    return _ordered(rows, np.abs(_scores(pool, "teach")[rows, label] - centre), tiebreak)


def _low_confidence(pool: Pool, thresholds: FloatArray, tiebreak: IntArray) -> IntArray:
    """Unreviewed rows that no informative label reaches, least covered first.

    A row's coverage is its best margin max_l (p_l - t_l); below 0 no label is confident. Margins rather than
    raw probabilities make labels with different thresholds comparable.
    """
    scores = _scores(pool, "low-confidence")
    informative = _informative(thresholds, "low-confidence")
    margin = (scores[:, informative] - thresholds[informative]).max(axis=1)
    rows = np.flatnonzero(~pool.reviewed & (margin < 0.0))
    return _ordered(rows, margin[rows], tiebreak)


def _uncertain(pool: Pool, tiebreak: IntArray) -> IntArray:
    """Every unreviewed row by its top probability, lowest first.

    Unlike low-confidence it does not stop at the rows no label covers: a message whose best label barely
    passes its threshold still teaches more than one the model is sure of, and a queue that runs dry after a
    few rounds hands the rest of the batch to chance. Thresholds play no part, so labels too new to have one
    still count.
    """
    scores = _scores(pool, "uncertain")
    rows = np.flatnonzero(~pool.reviewed)
    return _ordered(rows, scores[rows].max(axis=1), tiebreak)


def _check(pool: Pool, thresholds: FloatArray, tiebreak: IntArray) -> IntArray:
    """Reviewed rows with an assigned informative label scoring below its threshold, most doubted first.

    These are likely labelling mistakes (or the model's blind spots), and either way worth a second look.
    """
    scores, truth = _scores(pool, "check"), _truth(pool, "check")
    considered = truth & _informative(thresholds, "check")
    margin = np.where(considered, scores - thresholds, np.inf).min(axis=1)
    rows = np.flatnonzero(pool.reviewed & (margin < 0.0))
    return _ordered(rows, margin[rows], tiebreak)


def _missed(pool: Pool, thresholds: FloatArray, tiebreak: IntArray) -> IntArray:
    """Reviewed rows lacking an informative label that scores at or above its threshold, most confident first.

    These are likely labels the trainer forgot to apply, which otherwise teach the model a false negative.
    """
    scores, truth = _scores(pool, "missed"), _truth(pool, "missed")
    considered = ~truth & _informative(thresholds, "missed")
    margin = np.where(considered, scores - thresholds, -np.inf).max(axis=1)
    rows = np.flatnonzero(pool.reviewed & (margin >= 0.0))
    return _ordered(rows, -margin[rows], tiebreak)


def _rebalance(pool: Pool, seed: int, rng: np.random.Generator, tiebreak: IntArray) -> IntArray:
    """Unreviewed rows ordered so that reviewing them in turn evens out the reviewed share across regions.

    Regions are k-means clusters of all embeddings. The j-th unreviewed row taken from cluster c (j = 0, 1,
    ...) gets the key (reviewed_c + j + 1) / (size_c + 2): the cluster's smoothed reviewed share after that
    pick. Sorting by it is the greedy sequence "always take from the least-reviewed cluster", so a large
    unreviewed region gets many picks, a small one a few, and with nothing reviewed yet the queue is a
    proportional stratified sample. Within a cluster the order is seeded random, to sample the region
    rather than its centre.
    """
    if pool.embeddings is None:
        raise ValueError("the rebalance queue needs message embeddings")
    unreviewed = np.flatnonzero(~pool.reviewed)
    if unreviewed.size == 0:
        return unreviewed
    vectors = normalise_rows(pool.embeddings)
    _, assignment = kmeans(vectors, default_k(pool.size), seed=seed, max_iter=REGION_ITERATIONS, fit_rows=REGION_ROWS)
    k = int(assignment.max()) + 1
    sizes = np.bincount(assignment, minlength=k)
    reviewed = np.bincount(assignment[pool.reviewed], minlength=k)
    rows = rng.permutation(unreviewed)
    clusters = assignment[rows]
    grouped = np.argsort(clusters, kind="stable")
    # Position of each row within its cluster (in the random order): index in the grouped order minus the
    # index where its cluster's run starts.
    starts = np.searchsorted(clusters[grouped], clusters[grouped])
    within = np.empty(rows.size, dtype=np.int64)
    within[grouped] = np.arange(rows.size) - starts
    keys = (reviewed[clusters] + within + 1) / (sizes[clusters] + 2)
    return _ordered(rows, keys, tiebreak)


def _search(pool: Pool, query: str | None, tiebreak: IntArray) -> IntArray:
    """Rows containing every word of query as a whole word (case-insensitive): unreviewed first, then by
    how often the query's words occur, most first.

    A cheap substring test on every text narrows the pool before the exact word count, which only the few
    matching texts pay for.
    """
    terms = list(dict.fromkeys(words(query or "")))
    if not terms:
        raise ValueError("the search queue needs a query with at least one word")
    folded = (text.casefold() for text in pool.texts)
    candidates = [row for row, text in enumerate(folded) if all(term in text for term in terms)]
    matched, counts = [], []
    for row in candidates:
        found = Counter(words(pool.texts[row]))
        if all(found[term] for term in terms):
            matched.append(row)
            counts.append(sum(found[term] for term in terms))
    rows = np.asarray(matched, dtype=np.int64)
    frequency = np.asarray(counts, dtype=np.int64)
    return rows[np.lexsort((tiebreak[rows], -frequency, pool.reviewed[rows]))]

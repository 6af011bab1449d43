"""Discover: clusters of messages on their embeddings, each named by its top terms, with a few examples.

A trainer facing thousands of unlabelled messages teaches fastest by labelling a whole group at once. This
module groups message embeddings with k-means (k-means++ seeding, then Lloyd iterations, all numpy), names
each group by the words that are much more common inside it than in the whole set, and shows the members
closest to the centre as examples.

It also holds the geometric primitives that the active-learning queues reuse (`commine.ml.active`): the
k-means itself, the word tokeniser, and `distinct`, the near-duplicate filter that keeps every batch shown
to a trainer free of repeats. Everything is pure and deterministic for a given seed.

Embeddings are compared by cosine similarity, so they are L2-normalised here before clustering; a zero
vector stays zero (it is then similar to nothing).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse
from numpy.typing import NDArray

FloatArray = NDArray[np.floating]
IntArray = NDArray[np.int64]

# Two messages whose embeddings have at least this cosine similarity count as the same message for a trainer:
# showing both in one batch wastes a review.
NEAR_DUPLICATE = 0.95

# k-means above this many rows fits its centres on a seeded sample of this size and then assigns every row:
# the centres barely move with more data, and the fit stays well under a second at 100k rows.
FIT_ROWS = 20_000

# Top terms are read from at most this many members of each group: enough for stable word shares, and it
# bounds the tokenising (the slow, pure-Python part) however large the groups are.
TERM_ROWS = 300
# ... and from at most this many characters of each: past that a mail is mostly quoted history, signatures
# and disclaimers, which name no topic and would only cost time.
TERM_CHARS = 5_000

# Lloyd iterations stop once no more than this share of rows changes cluster: the last few hundred
# iterations on diffuse data move a handful of border rows and change nothing a trainer would see.
STABLE_SHARE = 0.001

# A small English stop list, plus the greetings and mail furniture (re, fw, regards) that every mail carries
# and that would otherwise name every cluster.
_STOP_LIST = """
    a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each either else ever every few for from
    further had has have having he her here hers herself him himself his how however if in into is it its
    itself just least less let like many may me might more most much must my myself neither no nor not now
    of off often on once only or other others otherwise our ours ourselves out over own per perhaps quite
    rather really same she should since so some still such than that the their theirs them themselves then
    there these they this those though through thus to too under until up upon us very via was we well were
    what whatever when where whether which while who whom whose why will with within without would yet you
    your yours yourself yourselves
    don doesn didn isn aren wasn weren hasn haven hadn won wouldn shouldn couldn cannot ve ll re im
    hi hello dear thanks thank regards kind best please fw fwd sent
"""
STOP_WORDS = frozenset(_STOP_LIST.split())

_WORD = re.compile(r"\w+")
_LETTERS = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class Cluster:
    """One discovered group: its members (most typical first), how many, the words that name it, examples."""

    indices: list[int]
    size: int
    top_terms: list[str]
    examples: list[int]

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable copy (plain lists of ints and strings)."""
        return asdict(self)


def words(text: str) -> list[str]:
    """Case-folded word tokens (letters, digits, underscore), as a search matches them."""
    return _WORD.findall(text.casefold())


def terms_of(text: str) -> list[str]:
    """The distinct content words of a text in order of first use: letters only, two or more, not a stop word.

    Digits are left out because amounts, dates and reference numbers differ in every message and name no topic.
    """
    # dict.fromkeys, not a set: set order changes with the interpreter's hash seed, and so would tie-breaks.
    found = dict.fromkeys(_LETTERS.findall(text.casefold()))
    return [word for word in found if len(word) > 1 and word not in STOP_WORDS]


def normalise_text(text: str) -> str:
    """The text as compared for exact duplicates: case-folded, whitespace runs collapsed to one space."""
    return " ".join(text.casefold().split())


def normalise_rows(vectors: FloatArray) -> NDArray[np.float32]:
    """Rows scaled to unit length as float32; zero rows stay zero rather than becoming NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


def default_k(n: int) -> int:
    """About sqrt(n / 2) clusters, at least 1 and at most 30: more groups than a trainer can read is no help."""
    return max(1, min(30, round(math.sqrt(n / 2))))


def distinct(
    ranked: Sequence[int] | IntArray,
    n: int,
    *,
    texts: Sequence[str],
    embeddings: FloatArray | None = None,
    limit: float = NEAR_DUPLICATE,
) -> list[int]:
    """The first n of ranked that are not near-duplicates of an earlier pick, in ranked order.

    A candidate is skipped when its case-folded, whitespace-collapsed text equals a pick's, or (with
    embeddings) when its cosine similarity with a pick is at least limit. A repeated index is skipped too.

    Only candidates are compared with picks, never candidates with each other, so the cost is about
    (candidates walked) x n x d: the ranking is walked in growing chunks and stops as soon as n are picked,
    which keeps a 100k-row pool at a few milliseconds when duplicates are rare.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    if n <= 0 or ranked.size == 0:
        return []
    picked: list[int] = []
    seen_texts: set[str] = set()
    picked_vectors: list[NDArray[np.float32]] = []
    start, chunk = 0, max(2 * n, 64)
    while start < ranked.size and len(picked) < n:
        rows = ranked[start : start + chunk]
        start += rows.size
        chunk = min(chunk * 2, 8192)
        _pick_from_chunk(rows, n, texts, embeddings, limit, picked, seen_texts, picked_vectors)
    return picked


def _pick_from_chunk(
    rows: IntArray,
    n: int,
    texts: Sequence[str],
    embeddings: FloatArray | None,
    limit: float,
    picked: list[int],
    seen_texts: set[str],
    picked_vectors: list[NDArray[np.float32]],
) -> None:
    """Walk one chunk of candidates in order, appending the acceptable ones to picked (in place).

    `closest` holds each candidate's highest similarity to any pick so far; it starts from the picks of
    earlier chunks (one matrix product) and is raised after every new pick, so no pair is compared twice.
    """
    vectors = normalise_rows(embeddings[rows]) if embeddings is not None else None
    closest = np.full(rows.size, -np.inf, dtype=np.float32)
    if vectors is not None and picked_vectors:
        closest = (vectors @ np.stack(picked_vectors).T).max(axis=1)
    for position, row in enumerate(rows.tolist()):
        if len(picked) >= n:
            return
        key = normalise_text(texts[row])
        if key in seen_texts or closest[position] >= limit:
            continue
        picked.append(row)
        seen_texts.add(key)
        if vectors is not None:
            picked_vectors.append(vectors[position])
            np.maximum(closest, vectors @ vectors[position], out=closest)


def kmeans(
    points: FloatArray,
    k: int,
    *,
    seed: int = 0,
    max_iter: int = 50,
    fit_rows: int = FIT_ROWS,
) -> tuple[NDArray[np.float32], IntArray]:
    """Cluster rows into at most k groups: k-means++ seeding, then Lloyd iterations until (nearly) no row moves.

    Returns (centres, assignment). Fewer than k centres come back when the rows have fewer than k distinct
    values (k-means++ cannot place a centre where every row already sits on one). Above fit_rows rows the
    centres are fitted on a seeded sample and every row is then assigned to its nearest centre.
    Deterministic for a seed.
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"points must be a non-empty 2-D array, got shape {points.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rng = np.random.default_rng(seed)
    sample = points
    if points.shape[0] > fit_rows:
        sample = points[np.sort(rng.choice(points.shape[0], size=fit_rows, replace=False))]
    centres = _lloyd(sample, _kmeans_plus_plus(sample, min(k, sample.shape[0]), rng), max_iter)
    assignment, _ = _nearest(points, centres)
    return centres, assignment


def _nearest(points: NDArray[np.float32], centres: NDArray[np.float32]) -> tuple[IntArray, NDArray[np.float32]]:
    """Each row's nearest centre and the squared distance to it (||x||^2 - 2 x.c + ||c||^2, clipped at 0)."""
    partial = np.einsum("ij,ij->i", centres, centres)[None, :] - 2.0 * (points @ centres.T)
    assignment = partial.argmin(axis=1)
    squared = np.einsum("ij,ij->i", points, points) + partial[np.arange(points.shape[0]), assignment]
    return assignment.astype(np.int64), np.maximum(squared, 0.0)


def _kmeans_plus_plus(points: NDArray[np.float32], k: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """k-means++ seeding: each next centre drawn with probability proportional to its squared distance.

    Spreading the starting centres this way makes one run reliable enough that no restarts are needed.
    """
    chosen = [int(rng.integers(points.shape[0]))]
    squared_norms = np.einsum("ij,ij->i", points, points)
    closest = np.maximum(squared_norms - 2.0 * (points @ points[chosen[0]]) + squared_norms[chosen[0]], 0.0)
    for _ in range(1, k):
        cumulative = np.cumsum(closest, dtype=np.float64)
        if cumulative[-1] <= 0.0:
            break  # every row already sits on a centre: fewer distinct rows than k
        pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        pick = min(pick, points.shape[0] - 1)
        chosen.append(pick)
        distance = np.maximum(squared_norms - 2.0 * (points @ points[pick]) + squared_norms[pick], 0.0)
        np.minimum(closest, distance, out=closest)
    return points[chosen].copy()


def _lloyd(points: NDArray[np.float32], centres: NDArray[np.float32], max_iter: int) -> NDArray[np.float32]:
    """Lloyd iterations: assign rows to the nearest centre, move centres to their means, until (nearly) stable.

    A centre left without rows is moved onto the row farthest from its own centre, so k stays k and the
    worst-served region gets a centre of its own.
    """
    k = centres.shape[0]
    previous: IntArray | None = None
    for _ in range(max_iter):
        assignment, squared = _nearest(points, centres)
        if previous is not None and np.count_nonzero(assignment != previous) <= STABLE_SHARE * points.shape[0]:
            break
        previous = assignment
        counts = np.bincount(assignment, minlength=k)
        # A sparse one-hot product sums each cluster's rows in O(rows x d), without sorting or copying rows.
        membership = scipy.sparse.csr_matrix(
            (np.ones(points.shape[0], dtype=np.float32), (assignment, np.arange(points.shape[0]))),
            shape=(k, points.shape[0]),
        )
        sums = np.asarray(membership @ points)
        centres = sums / np.maximum(counts, 1)[:, None].astype(np.float32)
        for empty in np.flatnonzero(counts == 0):
            farthest = int(squared.argmax())
            centres[empty] = points[farthest]
            squared[farthest] = -1.0
    return centres.astype(np.float32)


def discover(
    embeddings: FloatArray,
    texts: Sequence[str],
    *,
    k: int | None = None,
    seed: int = 0,
    examples: int = 5,
    terms: int = 8,
) -> list[Cluster]:
    """Group messages by embedding and describe each group, largest group first.

    Indices are rows of the given arrays: the caller passes the messages to group (typically the
    unreviewed ones) and maps rows back to message ids. k defaults to `default_k`; k-means may return fewer
    groups when the messages have fewer distinct embeddings. Each cluster lists its members most typical
    (closest to the centre) first, its `terms` most distinctive words, and up to `examples` typical members
    with near-duplicates skipped.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(texts):
        raise ValueError(f"embeddings must be (N, d) with N = len(texts) = {len(texts)}, got {embeddings.shape}")
    vectors = normalise_rows(embeddings)
    if vectors.shape[0] == 0:
        return []
    centres, _ = kmeans(vectors, default_k(vectors.shape[0]) if k is None else k, seed=seed)
    # Assign again on the final centres to get each row's distance too, which orders members by typicality.
    assignment, squared = _nearest(vectors, centres)
    names = top_terms(texts, assignment, centres.shape[0], terms=terms, seed=seed)
    clusters = []
    for label in range(centres.shape[0]):
        members = np.flatnonzero(assignment == label)
        if members.size == 0:
            continue
        members = members[np.argsort(squared[members], kind="stable")]
        shown = distinct(members, examples, texts=texts, embeddings=vectors)
        clusters.append(Cluster(members.tolist(), int(members.size), names[label], shown))
    clusters.sort(key=lambda cluster: (-cluster.size, min(cluster.indices)))
    return clusters


def top_terms(
    texts: Sequence[str],
    assignment: IntArray,
    k: int,
    *,
    terms: int = 8,
    seed: int = 0,
    per_group: int = TERM_ROWS,
) -> list[list[str]]:
    """For each of k groups, the words most over-represented in it compared with all texts.

    A word's weight in a group is p_in * log(p_in / p_all), where p_in is the share of the group's messages
    that contain it (document frequency, so one long message repeating a word cannot name a group) and p_all
    the same share over all messages. The log favours words peculiar to the group; the p_in factor keeps a
    word that one member happens to use from outranking one that most members share. Ties (with a single
    group every log is 0) go to the more common word, then to the word met first.

    Tokenising is the slow part, so each group is read from a seeded sample of at most per_group members,
    and p_all is the size-weighted mean of the groups' shares, which is what the full count would give.
    """
    assignment = np.asarray(assignment, dtype=np.int64)
    sizes = np.bincount(assignment, minlength=k)
    rng = np.random.default_rng(seed)
    vocabulary: dict[str, int] = {}
    groups: list[int] = []
    columns: list[int] = []
    read = np.zeros(k, dtype=np.int64)
    for group in range(k):
        members = np.flatnonzero(assignment == group)
        if members.size > per_group:
            members = np.sort(rng.choice(members, size=per_group, replace=False))
        read[group] = members.size
        for row in members.tolist():
            ids = [vocabulary.setdefault(term, len(vocabulary)) for term in terms_of(texts[row][:TERM_CHARS])]
            columns.extend(ids)
            groups.extend([group] * len(ids))
    size = len(vocabulary)
    if size == 0:
        return [[] for _ in range(k)]
    counts = np.bincount(np.asarray(groups) * size + np.asarray(columns), minlength=k * size).reshape(k, size)
    inside = counts / np.maximum(read, 1)[:, None]
    overall = (sizes / max(int(sizes.sum()), 1)) @ inside
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = np.where(counts > 0, inside * np.log(inside / overall), -np.inf)
    words_by_id = np.array(list(vocabulary), dtype=object)
    names = []
    for group in range(k):
        order = np.lexsort((np.arange(size), -inside[group], -weight[group]))
        order = order[np.isfinite(weight[group][order])][:terms]
        names.append(words_by_id[order].tolist())
    return names

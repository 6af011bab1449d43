"""Active-learning queues: hand-made pools with one obvious answer per mode, diversity, seeds and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commine.ml.active import MODES, NEAR_DUPLICATE, Pool, rank, select

UNREVIEWED_MODES = ("shuffle", "teach", "low-confidence", "uncertain", "rebalance")
REVIEWED_MODES = ("check", "missed")


def unit_vectors(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    """n random L2-normalised float32 rows: in 8 dimensions any two are far below the near-duplicate line."""
    rows = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def pool_of(
    scores: list[list[float]] | None,
    reviewed: list[bool],
    truth: list[list[bool]] | None = None,
    texts: list[str] | None = None,
    embeddings: np.ndarray | None = None,
) -> Pool:
    """A pool whose texts and embeddings are all distinct unless given."""
    n = len(reviewed)
    return Pool(
        texts=texts if texts is not None else [f"message number {i}" for i in range(n)],
        reviewed=np.array(reviewed),
        scores=None if scores is None else np.array(scores, dtype=np.float64),
        truth=None if truth is None else np.array(truth),
        embeddings=unit_vectors(n) if embeddings is None else embeddings,
    )


# --- one obvious answer per mode ------------------------------------------------------------------------------


def test_teach_picks_the_message_closest_to_even_odds_for_the_label() -> None:
    # Label 1's probabilities: 0.5 is the most uncertain, then 0.6, then 0.3; the reviewed 0.5 is never shown.
    pool = pool_of(
        [[0.9, 0.9], [0.1, 0.5], [0.2, 0.3], [0.5, 0.5], [0.0, 0.6], [0.0, 0.99]],
        [False, False, False, True, False, False],
    )
    assert select("teach", pool, n=1, label=1) == [1]
    assert select("teach", pool, n=10, label=1) == [1, 4, 2, 0, 5]


def test_teach_centres_on_the_label_threshold_when_given() -> None:
    pool = pool_of([[0.5], [0.85], [0.99]], [False, False, False])
    assert select("teach", pool, n=1, label=0, thresholds=np.array([0.9])) == [1]


def test_low_confidence_picks_unreviewed_messages_that_no_label_covers_least_covered_first() -> None:
    pool = pool_of(
        [[0.2, 0.1], [0.9, 0.1], [0.4, 0.45], [0.05, 0.1], [0.0, 0.0]],
        [False, False, False, False, True],
    )
    # Row 1 is covered (0.9 >= 0.5); row 4 is reviewed. Best label per row: 0.1 (row 3), 0.2 (row 0), 0.45.
    assert select("low-confidence", pool, n=10) == [3, 0, 2]


def test_low_confidence_ignores_labels_without_a_finite_threshold() -> None:
    pool = pool_of([[0.3, 0.9], [0.6, 0.1]], [False, False])
    # Label 1 is not informative yet, so row 0 counts as uncovered despite its 0.9; row 1 reaches 0.6 >= 0.5.
    assert select("low-confidence", pool, n=10, thresholds=np.array([0.5, np.nan])) == [0]


def test_uncertain_ranks_every_unreviewed_message_by_its_top_probability_lowest_first() -> None:
    pool = pool_of(
        [[0.2, 0.1], [0.9, 0.1], [0.4, 0.55], [0.05, 0.1], [0.0, 0.0]],
        [False, False, False, False, True],
    )
    # Tops: 0.2, 0.9, 0.55, 0.1; row 4 is reviewed. Unlike low-confidence, covered rows 2 and 1 follow.
    assert select("uncertain", pool, n=10) == [3, 0, 2, 1]
    assert select("low-confidence", pool, n=10) == [3, 0]


def test_uncertain_needs_a_model() -> None:
    with pytest.raises(ValueError, match="uncertain queue needs model predictions"):
        select("uncertain", pool_of(None, [False, False]), n=1)


def test_check_picks_the_reviewed_message_whose_assigned_label_scores_lowest() -> None:
    pool = pool_of(
        [[0.1, 0.0], [0.9, 0.0], [0.05, 0.0], [0.3, 0.9], [0.0, 0.0]],
        [True, True, False, True, True],
        truth=[[True, False], [True, False], [True, False], [True, True], [False, False]],
    )
    # Row 2 scores lower but is unreviewed; row 1's label is confirmed; row 4 carries no label.
    assert select("check", pool, n=1) == [0]
    assert select("check", pool, n=10) == [0, 3]


def test_missed_picks_reviewed_messages_lacking_a_predicted_label_most_confident_first() -> None:
    pool = pool_of(
        [[0.7, 0.0], [0.95, 0.0], [0.99, 0.0], [0.9, 0.2], [0.1, 0.0]],
        [True, True, False, True, True],
        truth=[[False, False], [False, True], [False, False], [True, False], [False, False]],
    )
    # Row 2 is unreviewed; row 3 already carries label 0; row 4 is predicted nothing.
    assert select("missed", pool, n=10) == [1, 0]


def test_search_finds_the_messages_containing_every_word_unreviewed_first() -> None:
    texts = [
        "Refund for the late delivery please",
        "Late refund, late again: where is my REFUND?",
        "Refund request",
        "The delivery was late",
        "refunded after a late parcel",
        "late refund",
    ]
    pool = pool_of(None, [False, False, False, False, False, True], texts=texts)
    # Whole words, case-insensitive: "refunded" is not "refund". Row 1 has four occurrences, row 0 two;
    # row 5 matches but is reviewed, so it comes last.
    assert select("search", pool, n=10, query="REFUND late") == [1, 0, 5]


def test_rebalance_picks_from_the_region_that_no_reviewed_message_represents() -> None:
    rng = np.random.default_rng(1)
    centres = np.eye(8, dtype=np.float32)
    blobs = np.repeat([0, 1], 20)
    embeddings = centres[blobs] + 0.3 * rng.normal(size=(40, 8)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    # Blob 0: half reviewed. Blob 1: nothing reviewed.
    reviewed = np.zeros(40, dtype=bool)
    reviewed[:10] = True
    pool = Pool(texts=[f"text {i}" for i in range(40)], reviewed=reviewed, embeddings=embeddings)
    # Uniform picks would all land in blob 1 with probability C(20, 8) / C(30, 8), about 2 %.
    picked = select("rebalance", pool, n=8, seed=3)
    assert len(picked) == 8
    assert all(blobs[row] == 1 for row in picked)


def test_rebalance_with_nothing_reviewed_samples_regions_in_proportion() -> None:
    centres = np.eye(8, dtype=np.float32)
    blobs = np.repeat([0, 1], [30, 10])
    embeddings = centres[blobs] + 0.3 * np.random.default_rng(2).normal(size=(40, 8)).astype(np.float32)
    pool = Pool(texts=[f"text {i}" for i in range(40)], reviewed=np.zeros(40, dtype=bool), embeddings=embeddings)
    picked = select("rebalance", pool, n=8)
    assert 1 <= sum(blobs[row] == 1 for row in picked) <= 4


# --- diversity --------------------------------------------------------------------------------------------------


def test_ten_identical_messages_yield_one_pick() -> None:
    texts = ["Where is my card?"] * 10 + ["How do I reset my PIN?"]
    embeddings = np.vstack([np.repeat(unit_vectors(1), 10, axis=0), unit_vectors(1, seed=9)])
    pool = pool_of([[0.5]] * 10 + [[0.1]], [False] * 11, texts=texts, embeddings=embeddings)
    # The ten tie at 0.5, so the seed decides which of them is shown; the 0.1 message follows.
    first, second = select("teach", pool, n=5, label=0)
    assert first < 10 and second == 10
    picked = sorted(select("shuffle", pool, n=5))
    assert len(picked) == 2 and picked[0] < 10 and picked[1] == 10


def test_identical_texts_differing_in_case_and_spacing_are_duplicates_without_embeddings() -> None:
    texts = ["Where is my card?", "where  is my CARD?", "Where is\nmy card?", "something else"]
    pool = Pool(texts=texts, reviewed=np.zeros(4, dtype=bool))
    assert len(select("shuffle", pool, n=4)) == 2


def test_near_duplicate_embeddings_are_skipped_and_merely_similar_ones_kept() -> None:
    base, other, third = np.eye(4, dtype=np.float32)[:3]

    def at_similarity(cosine: float, away: np.ndarray) -> np.ndarray:
        """A unit vector at the given cosine from base, tilted towards away."""
        return cosine * base + np.sqrt(1.0 - cosine**2) * away

    # Row 1 is just past the line from row 0; row 2 is a little less similar to row 0 (and to row 1).
    embeddings = np.vstack([base, at_similarity(NEAR_DUPLICATE + 0.01, other), at_similarity(0.9, third)])
    pool = pool_of([[0.5], [0.52], [0.6]], [False] * 3, embeddings=embeddings.astype(np.float32))
    assert select("teach", pool, n=3, label=0) == [0, 2]


def test_diversity_on_a_large_pool_takes_well_under_a_second() -> None:
    rng = np.random.default_rng(0)
    n_rows = 100_000
    embeddings = rng.normal(size=(n_rows, 256)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    embeddings[:1_000] = embeddings[0]  # a burst of one message at the head of the queue
    scores = np.full((n_rows, 1), 0.5)
    scores[1_000:, 0] = rng.random(n_rows - 1_000)
    pool = Pool(
        texts=[f"message {i}" for i in range(n_rows)],
        reviewed=np.zeros(n_rows, bool),
        scores=scores,
        embeddings=embeddings,
    )
    picked = select("teach", pool, n=50, label=0)
    assert len(picked) == 50
    assert sum(row < 1_000 for row in picked) == 1


# --- seeds, eligibility and errors ------------------------------------------------------------------------------


def test_a_seed_gives_one_answer_and_another_seed_another() -> None:
    pool = pool_of([[0.5]] * 50, [False] * 50)
    assert select("shuffle", pool, n=10, seed=4) == select("shuffle", pool, n=10, seed=4)
    assert select("shuffle", pool, n=10, seed=4) != select("shuffle", pool, n=10, seed=5)
    # Tied scores are broken by the seed too, rather than always serving the first rows.
    assert select("teach", pool, n=10, label=0, seed=4) != select("teach", pool, n=10, label=0, seed=5)
    assert select("teach", pool, n=10, label=0, seed=4) == select("teach", pool, n=10, label=0, seed=4)


@pytest.mark.parametrize("mode", ["teach", "low-confidence", "check", "missed"])
def test_queues_that_need_a_model_say_so_when_there_is_none(mode: str) -> None:
    pool = pool_of(None, [True, False], truth=[[True], [False]])
    with pytest.raises(ValueError, match="model"):
        select(mode, pool, n=1, label=0)


@pytest.mark.parametrize("mode", ["shuffle", "rebalance"])
def test_queues_that_need_no_model_work_without_one(mode: str) -> None:
    pool = pool_of(None, [True, False, False])
    assert sorted(select(mode, pool, n=5)) == [1, 2]


def test_bad_arguments_are_rejected_with_a_clear_message() -> None:
    pool = pool_of([[0.5]], [False])
    with pytest.raises(ValueError, match="unknown mode"):
        select("newest", pool, n=1)
    with pytest.raises(ValueError, match="needs a label"):
        select("teach", pool, n=1)
    with pytest.raises(ValueError, match="out of range"):
        select("teach", pool, n=1, label=1)
    with pytest.raises(ValueError, match="query"):
        select("search", pool, n=1, query="  ?! ")
    with pytest.raises(ValueError, match="truth"):
        select("check", pool, n=1)
    with pytest.raises(ValueError, match="thresholds"):
        select("low-confidence", pool, n=1, thresholds=np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="embeddings"):
        select("rebalance", Pool(texts=["a"], reviewed=np.array([False])), n=1)
    with pytest.raises(ValueError, match="reviewed"):
        Pool(texts=["a", "b"], reviewed=np.array([False]))


@st.composite
def pools(draw: st.DrawFn) -> Pool:
    """Small pools with a few labels, some reviewed rows, and duplicate texts and embeddings now and then."""
    n = draw(st.integers(1, 30))
    n_labels = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    embeddings = unit_vectors(n, seed=seed)
    duplicates = rng.random(n) < 0.2
    embeddings[duplicates] = embeddings[0]
    return Pool(
        texts=[f"text {i % 7}" for i in range(n)],
        reviewed=rng.random(n) < 0.4,
        scores=rng.choice([0.0, 0.1, 0.5, 0.9, 1.0], size=(n, n_labels)) * rng.random((n, n_labels)) ** 0.1,
        truth=rng.random((n, n_labels)) < 0.3,
        embeddings=embeddings,
    )


@settings(max_examples=60, deadline=None)
@given(pools(), st.integers(0, 12), st.integers(0, 3))
def test_every_queue_returns_eligible_distinct_rows(pool: Pool, n: int, seed: int) -> None:
    for mode in MODES:
        picked = select(mode, pool, n=n, seed=seed, label=0, query="text")
        assert len(picked) <= n
        assert len(set(picked)) == len(picked)
        assert len({pool.texts[row] for row in picked}) == len(picked)
        if mode in UNREVIEWED_MODES:
            assert not pool.reviewed[picked].any()
        if mode in REVIEWED_MODES:
            assert pool.reviewed[picked].all()
        # select is the ranking with near-duplicates dropped: its picks come in ranking order.
        ranking = rank(mode, pool, seed=seed, label=0, query="text").tolist()
        assert [ranking.index(row) for row in picked] == sorted(ranking.index(row) for row in picked)

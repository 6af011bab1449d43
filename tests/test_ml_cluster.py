"""Discover: k-means recovers obvious groups, top terms name them, examples are typical and distinct."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commine.ml.cluster import NEAR_DUPLICATE, default_k, discover, distinct, kmeans, terms_of

TOPICS = {
    "refund": ["refund money back", "want my money back refund", "refund not received money"],
    "password": ["password reset login", "cannot login password locked", "reset my password login"],
    "delivery": ["parcel delivery late", "delivery parcel missing courier", "late parcel courier delivery"],
}


def three_blobs(sizes: tuple[int, int, int] = (30, 20, 10), seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Three well-separated blobs in 16 dimensions, each blob's texts drawn from one topic's phrases."""
    rng = np.random.default_rng(seed)
    blob = np.repeat(np.arange(3), sizes)
    embeddings = 6.0 * np.eye(16, dtype=np.float32)[blob] + rng.normal(size=(blob.size, 16)).astype(np.float32)
    phrases = list(TOPICS.values())
    texts = [f"{phrases[b][i % 3]} case {i}" for i, b in enumerate(blob)]
    return embeddings, texts, blob


def test_kmeans_recovers_three_well_separated_blobs_largest_first() -> None:
    embeddings, texts, blob = three_blobs()
    clusters = discover(embeddings, texts, k=3)
    assert [cluster.size for cluster in clusters] == [30, 20, 10]
    for expected, cluster in enumerate(clusters):
        assert sorted(cluster.indices) == np.flatnonzero(blob == expected).tolist()


def test_top_terms_name_each_blobs_words() -> None:
    embeddings, texts, _ = three_blobs()
    clusters = discover(embeddings, texts, k=3, terms=3)
    topic_words = [{word for phrase in phrases for word in phrase.split()} for phrases in TOPICS.values()]
    for cluster, own in zip(clusters, topic_words, strict=True):
        assert len(cluster.top_terms) == 3
        assert set(cluster.top_terms) <= own
    # "case" is in every message, so it names no cluster.
    assert all("case" not in cluster.top_terms for cluster in clusters)


def test_examples_are_typical_members_without_duplicates() -> None:
    embeddings, texts, _ = three_blobs()
    texts = [text.rsplit(" case", 1)[0] for text in texts]  # now only three distinct texts per blob
    for cluster in discover(embeddings, texts, k=3, examples=5):
        assert set(cluster.examples) <= set(cluster.indices)
        assert len(cluster.examples) == 3
        assert cluster.examples[0] == cluster.indices[0]
        assert len({texts[row] for row in cluster.examples}) == 3


def test_members_are_listed_most_typical_first() -> None:
    embeddings, texts, _ = three_blobs()
    for cluster in discover(embeddings, texts, k=3):
        members = embeddings[cluster.indices] / np.linalg.norm(embeddings[cluster.indices], axis=1, keepdims=True)
        centre = members.mean(axis=0)
        distances = np.linalg.norm(members - centre, axis=1)
        assert np.all(np.diff(distances) >= -1e-5)


def test_discover_is_deterministic_for_a_seed() -> None:
    embeddings, texts, _ = three_blobs(sizes=(40, 40, 40))
    first = [cluster.to_dict() for cluster in discover(embeddings, texts, k=7, seed=11)]
    again = [cluster.to_dict() for cluster in discover(embeddings, texts, k=7, seed=11)]
    assert first == again


def test_default_k_grows_like_the_square_root_and_stops_at_thirty() -> None:
    assert [default_k(n) for n in (0, 1, 2, 50, 200, 1_800, 50_000)] == [1, 1, 1, 5, 10, 30, 30]


def test_fewer_distinct_points_than_k_gives_fewer_clusters() -> None:
    points = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)
    centres, assignment = kmeans(points, 8)
    assert centres.shape[0] == 3
    assert sorted(np.bincount(assignment).tolist()) == [4, 4, 4]


def test_discover_of_nothing_is_no_clusters_and_bad_shapes_are_rejected() -> None:
    assert discover(np.zeros((0, 4)), []) == []
    with pytest.raises(ValueError, match="len\\(texts\\)"):
        discover(np.zeros((3, 4)), ["a", "b"])
    with pytest.raises(ValueError, match="k must be"):
        discover(np.eye(3), ["a", "b", "c"], k=0)


def test_terms_drop_stop_words_digits_and_single_letters() -> None:
    assert terms_of("Re: Please refund the £25 fee for order 1234, I was charged TWICE a month") == [
        "refund",
        "fee",
        "order",
        "charged",
        "twice",
        "month",
    ]


def test_distinct_skips_repeated_indices_texts_and_near_duplicate_vectors() -> None:
    vectors = np.array(
        [[1.0, 0.0], [NEAR_DUPLICATE + 0.001, np.sqrt(1 - (NEAR_DUPLICATE + 0.001) ** 2)], [0.0, 1.0], [0.0, 2.0]]
    )
    texts = ["a", "b", "c", "d"]
    assert distinct([0, 0, 1, 2, 3], 5, texts=texts, embeddings=vectors) == [0, 2]
    assert distinct([0, 0, 1, 2, 3], 5, texts=texts) == [0, 1, 2, 3]
    assert distinct([0, 1, 2], 5, texts=["same", " SAME ", "other"]) == [0, 2]


def test_discover_assigns_every_one_of_fifty_thousand_messages() -> None:
    rng = np.random.default_rng(0)
    n_rows = 50_000
    topic = rng.integers(20, size=n_rows)
    embeddings = 3.0 * rng.normal(size=(20, 64)).astype(np.float32)[topic] + rng.normal(size=(n_rows, 64)).astype(
        np.float32
    )
    texts = [f"topic{t:02d}word and some shared filler text number {i}" for i, t in enumerate(topic)]
    clusters = discover(embeddings, texts)
    assert sum(cluster.size for cluster in clusters) == n_rows


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 8), st.integers(0, 1_000))
def test_clusters_partition_the_messages(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(n, 5)).round(0)  # rounding makes duplicate points common
    texts = [f"word{i % 4} other{i % 3}" for i in range(n)]
    clusters = discover(embeddings, texts, k=k, seed=seed, examples=3)
    indices = sorted(row for cluster in clusters for row in cluster.indices)
    assert indices == list(range(n))
    assert [cluster.size for cluster in clusters] == sorted((cluster.size for cluster in clusters), reverse=True)
    assert all(cluster.size == len(cluster.indices) and 1 <= len(cluster.examples) <= 3 for cluster in clusters)
    assert len(clusters) <= k

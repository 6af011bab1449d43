"""The label model: logistic regression, hierarchy, artifacts, determinism, and quality on BANKING77."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from commine.ml.encoders import WORDLLAMA, encoder
from commine.ml.linear import fit_logistic
from commine.ml.metrics import mean_average_precision
from commine.ml.model import Model, TrainingConfig, TrainingSet, artifact_hash, respect_hierarchy, train
from commine.ml.text import comment_text, tokens

BANKING77 = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77"


def test_logistic_regression_separates_two_labels() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    truth = np.column_stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0])
    fitted = fit_logistic(x, truth, c=100.0)
    predicted = fitted.logits(x) > 0
    assert (predicted == truth).mean() > 0.97


def test_a_warm_start_reaches_the_same_fit_in_fewer_steps() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    truth = (x @ rng.normal(size=(8, 3)) > 0).astype(bool)
    cold = fit_logistic(x, truth, c=0.1, max_iter=200)
    warm = fit_logistic(x, truth, c=0.1, max_iter=5, start=cold)
    np.testing.assert_allclose(warm.logits(x), cold.logits(x), atol=1e-3)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (6, 4), elements=st.floats(0, 1)))
def test_a_parent_scores_at_least_as_high_as_each_child(scores: np.ndarray) -> None:
    labels = ["Billing", "Billing > Refund", "Billing > Refund > Late", "Other"]
    out = respect_hierarchy(scores, labels)
    assert (out[:, 0] >= out[:, 1]).all()
    assert (out[:, 1] >= out[:, 2]).all()
    np.testing.assert_array_equal(out[:, 2:], scores[:, 2:])  # leaves and unrelated labels untouched
    assert (out >= scores).all()


def test_comment_text_reads_subject_and_body_and_tokens_stay_on_one_line() -> None:
    comment = {"messages": [{"subject": {"text": "Refund?"}, "body": {"text": "Where is\nmy money!"}}]}
    assert comment_text(comment) == "Refund?\nWhere is\nmy money!"
    assert tokens(comment_text(comment)) == "refund ? where is my money !"


def _toy_set(n_per_label: int = 30) -> TrainingSet:
    topics = {
        "Billing > Refund": "I want my money back for order {i}, please refund the charge",
        "Billing": "Why was my card charged twice on invoice {i}",
        "Delivery": "My parcel {i} has not arrived, where is the courier",
        "Account": "I cannot log in to my account {i}, reset the password",
    }
    labels = ["Account", "Billing", "Billing > Refund", "Delivery"]
    texts, rows = [], []
    for name, template in topics.items():
        for i in range(n_per_label):
            texts.append(template.format(i=i))
            row = np.zeros(len(labels), bool)
            row[labels.index(name)] = True
            row[labels.index("Billing")] |= name.startswith("Billing")
            rows.append(row)
    vectors = encoder(WORDLLAMA).encode(texts)
    uids = [f"s.{i}" for i in range(len(texts))]
    return TrainingSet(uids, texts, labels, np.array(rows), {WORDLLAMA: vectors})


def test_training_is_deterministic_and_the_artifact_round_trips() -> None:
    data = _toy_set()
    first, second = train(data, TrainingConfig(seed=3)), train(data, TrainingConfig(seed=3))
    blob = first.model.to_bytes()
    assert artifact_hash(blob) == artifact_hash(second.model.to_bytes())
    assert first.held_out is not None and first.held_out.scores.shape[1] == 4
    texts = ["please refund my money for order 99", "the courier never delivered parcel 7"]
    embeddings = {WORDLLAMA: encoder(WORDLLAMA).encode(texts)}
    loaded = Model.from_bytes(blob)
    np.testing.assert_array_equal(loaded.predict(texts, embeddings), first.model.predict(texts, embeddings))
    scores = loaded.predict(texts, embeddings)
    assert scores[0].argmax() in (1, 2) and scores[1].argmax() == 3
    assert scores[0, 1] >= scores[0, 2]  # Billing >= Billing > Refund


def test_a_message_without_any_head_embedding_is_refused() -> None:
    model = train(_toy_set(8)).model
    with pytest.raises(ValueError, match="lack"):
        model.predict(["hello"], {WORDLLAMA: np.full((1, 256), np.nan, dtype=np.float32)})


def test_training_needs_a_labelled_message() -> None:
    data = _toy_set(3)
    empty = TrainingSet(data.uids, data.texts, data.labels, np.zeros_like(data.truth), data.embeddings)
    with pytest.raises(ValueError, match="nothing to learn"):
        train(empty)


# --- quality on real data ----------------------------------------------------------------------------------------


def _banking77(name: str) -> tuple[list[str], list[str]]:
    with open(BANKING77 / f"{name}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


@pytest.fixture(scope="module")
def banking77() -> dict[str, object]:
    if not (BANKING77 / "train.csv").exists():
        pytest.skip(f"BANKING77 is not at {BANKING77}: model-quality tests need ../shared/data/banking77")
    train_texts, train_labels = _banking77("train")
    test_texts, test_labels = _banking77("test")
    labels = sorted(set(train_labels))
    wordllama = encoder(WORDLLAMA)
    return {
        "labels": labels,
        "train": (train_texts, np.array([labels.index(y) for y in train_labels]), wordllama.encode(train_texts)),
        "test": (test_texts, np.array([labels.index(y) for y in test_labels]), wordllama.encode(test_texts)),
    }


def _fit_and_score(data: dict[str, object], rows: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    labels = data["labels"]
    texts, targets, vectors = data["train"]
    truth = np.zeros((rows.size, len(labels)), bool)
    truth[np.arange(rows.size), targets[rows]] = True
    uids = [f"b.{i}" for i in rows]
    training = TrainingSet(uids, [texts[i] for i in rows], labels, truth, {WORDLLAMA: vectors[rows]})
    model = train(training).model
    test_texts, test_targets, test_vectors = data["test"]
    scores = model.predict(test_texts, {WORDLLAMA: test_vectors})
    return float((scores.argmax(axis=1) == test_targets).mean()), scores, test_targets


@pytest.mark.slow
def test_full_banking77_reaches_90_percent_and_is_calibrated(banking77: dict[str, object]) -> None:
    accuracy, scores, targets = _fit_and_score(banking77, np.arange(banking77["train"][1].size))
    assert accuracy >= 0.90
    truth = np.zeros_like(scores, dtype=bool)
    truth[np.arange(targets.size), targets] = True
    assert mean_average_precision(scores, truth) >= 0.90
    # Calibration: among labels scored in each band, the share that is right matches the band.
    for low, high in [(0.5, 0.7), (0.7, 0.9), (0.9, 1.0)]:
        band = (scores >= low) & (scores < high)
        assert band.sum() >= 50
        assert abs(truth[band].mean() - scores[band].mean()) < 0.1, (low, high)


@pytest.mark.slow
def test_ten_examples_per_label_reach_80_percent(banking77: dict[str, object]) -> None:
    targets = banking77["train"][1]
    accuracies = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        rows = np.concatenate([rng.choice(np.flatnonzero(targets == k), 10, replace=False) for k in range(77)])
        accuracies.append(_fit_and_score(banking77, rows)[0])
    assert np.mean(accuracies) >= 0.80, accuracies


def test_held_out_scores_come_from_a_stacking_fitted_on_the_other_half() -> None:
    from scipy.special import expit

    from commine.ml.model import _cross_fitted, fit_stack

    rng = np.random.default_rng(3)
    truth = rng.random((60, 4)) < 0.3
    head = np.where(truth, 1.5, -1.5) + rng.normal(size=truth.shape)
    fast = np.where(truth, 0.5, -0.5) + rng.normal(size=truth.shape)
    halves = np.arange(60) < 30
    whole = np.full(truth.shape, 0.5)
    out = _cross_fitted(head, fast, truth, halves, whole)
    a, c, b = fit_stack(head[~halves], fast[~halves], truth[~halves])
    np.testing.assert_allclose(out[halves], expit(a * head[halves] + c * fast[halves] + b))
    a, c, b = fit_stack(head[halves], fast[halves], truth[halves])
    np.testing.assert_allclose(out[~halves], expit(a * head[~halves] + c * fast[~halves] + b))
    assert _cross_fitted(head, fast, truth, np.ones(60, dtype=bool), whole) is whole  # one half empty

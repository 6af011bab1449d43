"""Training a dataset's model: read what was reviewed, train, validate, register, predict everything.

One run (``train_dataset``) reads a consistent snapshot of the dataset at one log position,
trains a model (``commine.ml.model``), rates it on the held-out split, stores the artifact,
records ``ModelTrained`` and then predicts every message of the dataset under the new version
(``PredictionsRecorded``, in batches). Messages that arrive later are predicted on ingestion by
``handlers.prediction``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.engine import Connection, Engine

from commine.domain.model import ModelVersions, models_aggregate_id
from commine.events import ModelTrained, PredictionsRecorded
from commine.handlers.commands import run
from commine.handlers.purge import drop_artifacts_of_purged
from commine.ml import validation
from commine.ml.encoders import MINILM, WORDLLAMA, encoder, minilm_installed
from commine.ml.fasttext_model import FastTextParams
from commine.ml.model import Model, TrainingConfig, TrainingResult, TrainingSet, artifact_hash, train
from commine.persistence import mldata, projections, readmodels
from commine.persistence.mldata import MessageRow
from commine.persistence.store import EventStore

#: Messages per ``PredictionsRecorded`` event.
PREDICTION_BATCH = 500
#: Probabilities below this are left out of ``PredictionsRecorded`` (read back as 0).
MIN_RECORDED = 0.001
DIMENSIONS = {WORDLLAMA: 256, MINILM: 384}

Progress = Callable[[str, float], None]


def _quiet(stage: str, fraction: float) -> None:
    pass


@dataclass
class Snapshot:
    """A dataset as training reads it, at one log position."""

    dataset_id: str
    position: int
    messages: list[MessageRow]
    texts: list[str]
    reviewed: dict[str, list[str]]
    labels: list[str]
    #: Reviewed uids first picked from the shuffle queue: at random, so an unbiased sample.
    shuffled: set[str] = field(default_factory=set)


class NothingToTrain(Exception):
    """The dataset has no reviewed message with a label yet."""


def snapshot(store: EventStore, dataset_id: str, read_models: Engine | None = None) -> Snapshot:
    """The dataset as its read models show it (the live ones, or ``read_models`` rebuilt elsewhere).

    ``position`` is the log position the read models reflect, read in the same snapshot.
    """
    with (read_models or store.engine).connect() as conn:
        if conn.dialect.name == "postgresql":  # one consistent view across the queries below
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        position = projections.checkpoint(conn)
        messages = mldata.dataset_messages(conn, dataset_id)
        reviewed = mldata.annotations(conn, dataset_id)
        shuffled = readmodels.reviewed_from(conn, dataset_id, "shuffle") & set(reviewed)
        known = set(mldata.label_names(conn, dataset_id))
    with store.engine.connect() as conn:  # the text lives in the log
        texts = mldata.texts(conn, messages)
    used = {name for names in reviewed.values() for name in names}
    return Snapshot(dataset_id, position, messages, texts, reviewed, sorted(used & known), shuffled)


def embeddings(
    conn: Connection,
    rows: Sequence[MessageRow],
    texts: Sequence[str],
    *,
    compute: Sequence[str] = (WORDLLAMA,),
    whole_dataset: bool = False,
) -> dict[str, NDArray[np.float32]]:
    """Stored embeddings per encoder; missing ones of the ``compute`` encoders computed and stored.
    ``whole_dataset``: ``rows`` are every message of a dataset (read in one pass per source)."""
    out = {}
    names = [WORDLLAMA, *([MINILM] if minilm_installed() else [])]
    for name in names:
        vectors = mldata.load_embeddings(conn, rows, name, DIMENSIONS[name], whole_sources=whole_dataset)
        missing = np.flatnonzero(np.isnan(vectors).any(axis=1))
        if name in compute and missing.size:
            vectors[missing] = encoder(name).encode([texts[i] for i in missing])
            mldata.save_embeddings(conn, [rows[i] for i in missing], name, vectors[missing])
        out[name] = vectors
    return out


def train_dataset(
    store: EventStore,
    dataset_id: str,
    *,
    actor: str,
    config: TrainingConfig | None = None,
    progress: Progress = _quiet,
) -> ModelTrained:
    """Train, validate and register a new model version of the dataset, then predict all its messages."""
    progress("reading", 0.0)
    data = snapshot(store, dataset_id)
    rows = [i for i, m in enumerate(data.messages) if m.uid in data.reviewed]
    if not data.labels or not rows:
        raise NothingToTrain(f"dataset {dataset_id} has no reviewed message with a label")
    progress("embedding", 0.1)
    with store.transaction() as conn:
        vectors = embeddings(conn, data.messages, data.texts, whole_dataset=True)
    progress("training", 0.3)
    training = _training_set(data, rows, vectors)
    result = train(training, config or TrainingConfig())
    progress("predicting", 0.7)
    scores = result.model.predict(data.texts, vectors)
    metrics = _metrics(data, rows, training, vectors, scores, result)
    blob = result.model.to_bytes()
    digest = artifact_hash(blob)
    with store.transaction() as conn:
        mldata.save_artifact(conn, digest, blob, dataset_id=dataset_id)
    progress("registering", 0.8)
    registry = run(
        store,
        ModelVersions,
        models_aggregate_id(dataset_id),
        lambda models: models.register(
            labels=data.labels,
            hyperparameters=result.model.hyperparameters,
            training_size=len(rows),
            metrics=metrics,
            artifact_hash=digest,
            trained_on_position=data.position,
            actor=actor,
        ),
    )
    trained = registry.newest
    assert trained is not None
    record_predictions(store, dataset_id, trained.version, [m.uid for m in data.messages], data.labels, scores, actor)
    with store.transaction() as conn:  # older versions that learned from a purged source go now
        drop_artifacts_of_purged(conn, dataset_id, trained.version)
    progress("done", 1.0)
    return trained


def _training_set(data: Snapshot, rows: list[int], vectors: dict[str, NDArray[np.float32]]) -> TrainingSet:
    index = {name: j for j, name in enumerate(data.labels)}
    truth = np.zeros((len(rows), len(data.labels)), dtype=bool)
    for k, i in enumerate(rows):
        for name in data.reviewed[data.messages[i].uid]:
            if name in index:
                truth[k, index[name]] = True
    return TrainingSet(
        uids=[data.messages[i].uid for i in rows],
        texts=[data.texts[i] for i in rows],
        labels=data.labels,
        truth=truth,
        embeddings={name: v[rows] for name, v in vectors.items()},
    )


def _metrics(
    data: Snapshot,
    rows: list[int],
    training: TrainingSet,
    vectors: dict[str, NDArray[np.float32]],
    scores: NDArray[np.float64],
    result: TrainingResult,
) -> dict[str, Any]:
    """Validation on the held-out split, coverage over every message, balance, and the rating."""
    held = result.held_out
    reviewed = np.zeros(len(data.messages), dtype=bool)
    reviewed[rows] = True
    examples = dict(zip(data.labels, training.truth.sum(axis=0).tolist(), strict=True))
    out: dict[str, Any] = {"train_seconds": round(result.seconds, 3), "examples": examples}
    if held is None:
        out["validation"] = None
        return out
    report = validation.validate(data.labels, held.scores, held.truth)
    thresholds = validation.preset_thresholds(report, "balanced")
    informative = validation.informative_labels(data.labels, training.truth)
    coverage = validation.coverage(scores, thresholds, informative)
    wordllama = vectors[WORDLLAMA]
    shuffled = sum(data.messages[i].uid in data.shuffled for i in rows)
    balance = validation.balance(wordllama[reviewed], wordllama[~reviewed], random_share=shuffled / max(1, len(rows)))
    rating = validation.rating(report, coverage, balance, examples)
    out.update(
        validation=report.to_dict(),
        coverage=coverage,
        balance=balance.to_dict(),
        rating=rating.to_dict(),
        held_out=len(held.uids),
    )
    return out


def predictions_payload(
    uids: Sequence[str], labels: Sequence[str], scores: NDArray[np.float64]
) -> list[dict[str, Any]]:
    """Sparse, rounded probabilities: what ``PredictionsRecorded`` carries."""
    out = []
    for uid, row in zip(uids, scores, strict=True):
        keep = np.flatnonzero(row >= MIN_RECORDED)
        out.append({"uid": uid, "labels": {labels[j]: round(float(row[j]), 4) for j in keep}})
    return out


def prediction_events(
    dataset_id: str, version: int, uids: Sequence[str], labels: Sequence[str], scores: NDArray[np.float64], actor: str
) -> list[PredictionsRecorded]:
    """One event per batch, each its own aggregate: predictions are facts nobody contends for."""
    events = []
    for start in range(0, len(uids), PREDICTION_BATCH):
        end = start + PREDICTION_BATCH
        events.append(
            PredictionsRecorded(
                aggregate_id=f"predictions:{dataset_id}/{version}/{uuid.uuid4().hex}",
                aggregate_version=1,
                actor=actor,
                dataset_id=dataset_id,
                model_version=version,
                predictions=predictions_payload(uids[start:end], labels, scores[start:end]),
            )
        )
    return events


def record_predictions(
    store: EventStore,
    dataset_id: str,
    version: int,
    uids: Sequence[str],
    labels: Sequence[str],
    scores: NDArray[np.float64],
    actor: str,
) -> None:
    for event in prediction_events(dataset_id, version, uids, labels, scores, actor):
        store.append([event])


def predict_rows(
    store: EventStore,
    conn: Connection,
    rows: Sequence[MessageRow],
    texts: Sequence[str],
    vectors: dict[str, NDArray[np.float32]],
    actor: str,
    *,
    needs: str | None = None,
) -> None:
    """Predict messages under their datasets' newest models and versions streams pin, in ``conn``'s transaction.

    With ``needs`` (an encoder name), only under models with a head that reads it.
    """
    for (dataset_id, version, digest), members in mldata.newest_models_of(conn, rows).items():
        model = model_by_hash(conn, digest)
        if needs is not None and needs not in model.encoders:
            continue
        scores = model.predict([texts[i] for i in members], {name: v[members] for name, v in vectors.items()})
        uids = [rows[i].uid for i in members]
        store.append(prediction_events(dataset_id, version, uids, model.labels, scores, actor), conn=conn)


def load_model(store: EventStore, dataset_id: str, version: int | None = None) -> tuple[int, Model]:
    """A stored model version (the newest when None), loaded from its artifact."""
    with store.engine.connect() as conn:
        row = mldata.model_row(conn, dataset_id, version)
        if row is None:
            raise LookupError(f"dataset {dataset_id} has no model" + (f" version {version}" if version else ""))
        return row.version, model_by_hash(conn, row.artifact_hash)


_MODELS: dict[str, Model] = {}


def model_by_hash(conn: Connection, digest: str) -> Model:
    """A model by its artifact hash, cached, a few per process: loading fastText takes tens of milliseconds."""
    if digest not in _MODELS:
        if len(_MODELS) >= 8:
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[digest] = Model.from_bytes(mldata.load_artifact(conn, digest))
    return _MODELS[digest]


def training_config(hyperparameters: dict[str, Any]) -> TrainingConfig:
    """The configuration ``ModelTrained.hyperparameters`` recorded."""
    fields = {k: v for k, v in hyperparameters.items() if k != "fasttext"}
    return TrainingConfig(**fields, fasttext=FastTextParams(**hyperparameters["fasttext"]))


@dataclass(frozen=True)
class Reproduction:
    version: int
    recorded_hash: str
    reproduced_hash: str
    trained_on_position: int

    @property
    def matches(self) -> bool:
        return self.recorded_hash == self.reproduced_hash


def reproduce(store: EventStore, dataset_id: str, version: int) -> Reproduction:
    """Train a recorded version again from the log alone and compare the artifacts' hashes.

    The read models are rebuilt up to the position the version was trained at, in a fresh schema,
    and the recorded hyper-parameters are used: equal hashes prove the version is what the log says.
    """
    from commine.persistence.replay import fresh_schema

    registry = ModelVersions.replay(
        models_aggregate_id(dataset_id), store.read_aggregate(models_aggregate_id(dataset_id))
    )
    recorded = registry.trained.get(version)
    if recorded is None:
        raise LookupError(f"dataset {dataset_id} has no model version {version}")
    with fresh_schema(store.engine) as target:
        projections.rebuild(store, target, to_position=recorded.trained_on_position)
        data = snapshot(store, dataset_id, read_models=target)
    rows = [i for i, m in enumerate(data.messages) if m.uid in data.reviewed]
    with store.transaction() as conn:
        vectors = embeddings(conn, data.messages, data.texts, whole_dataset=True)
    result = train(_training_set(data, rows, vectors), training_config(recorded.hyperparameters))
    return Reproduction(version, recorded.artifact_hash, artifact_hash(result.model.to_bytes()), data.position)

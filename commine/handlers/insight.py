"""What a trainer asks of a model: predictions for new comments, queues, clusters, drift, validation.

Each function loads one dataset's messages, annotations, embeddings and stored predictions from
the read models, and hands plain arrays to the pure code in ``commine.ml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray

from commine.domain.comment import normalise_comment
from commine.handlers.training import embeddings, load_model, snapshot
from commine.ml import active, cluster
from commine.ml import drift as drift_module
from commine.ml.encoders import MINILM, WORDLLAMA, encoder, minilm_installed
from commine.ml.text import comment_text
from commine.persistence import mldata
from commine.persistence import schema as t
from commine.persistence.store import EventStore, as_utc

SEPARATOR = " > "


@dataclass
class DatasetView:
    """A dataset's messages as arrays, with the newest (or a chosen) model's predictions."""

    uids: list[str]
    texts: list[str]
    created_at: list[datetime]
    labels: list[str]
    version: int | None
    metrics: dict[str, Any]
    trained_at: datetime | None
    pool: active.Pool


def load_view(store: EventStore, dataset_id: str, version: int | None = None) -> DatasetView:
    data = snapshot(store, dataset_id)
    with store.engine.begin() as conn:
        vectors = embeddings(conn, data.messages, data.texts, whole_dataset=True)[WORDLLAMA]
        model = mldata.model_row(conn, dataset_id, version)
        if version is not None and model is None:
            raise LookupError(f"dataset {dataset_id} has no model version {version}")
        stored = mldata.predictions(conn, dataset_id, model.version) if model is not None else {}
        created = _created_at(conn, data.messages)
    uids = [m.uid for m in data.messages]
    labels = list(model.labels) if model is not None else data.labels
    index = {name: j for j, name in enumerate(labels)}
    truth = np.zeros((len(uids), len(labels)), dtype=bool)
    for i, uid in enumerate(uids):
        for name in data.reviewed.get(uid, []):
            if name in index:
                truth[i, index[name]] = True
    scores = _dense(stored, uids, index) if model is not None else None
    reviewed = np.array([uid in data.reviewed for uid in uids], dtype=bool)
    pool = active.Pool(texts=data.texts, reviewed=reviewed, scores=scores, truth=truth, embeddings=vectors)
    return DatasetView(
        uids=uids,
        texts=data.texts,
        created_at=created,
        labels=labels,
        version=model.version if model is not None else None,
        metrics=dict(model.metrics) if model is not None else {},
        trained_at=as_utc(model.trained_at) if model is not None else None,
        pool=pool,
    )


def _dense(stored: dict[str, dict[str, float]], uids: list[str], index: dict[str, int]) -> NDArray[np.float64]:
    scores = np.zeros((len(uids), len(index)))
    for i, uid in enumerate(uids):
        for name, p in (stored.get(uid) or {}).items():
            if name in index:
                scores[i, index[name]] = p
    return scores


def _created_at(conn: Any, rows: list[mldata.MessageRow]) -> list[datetime]:
    m = t.messages
    found: dict[tuple[str, str], datetime] = {}
    for source_id in {row.source_id for row in rows}:
        query = sa.select(m.c.comment_id, m.c.created_at).where(m.c.source_id == source_id)
        found.update(((source_id, cid), as_utc(at)) for cid, at in conn.execute(query))
    return [found[(row.source_id, row.comment_id)] for row in rows]


def thresholds(view: DatasetView, preset: str = "balanced") -> NDArray[np.float64]:
    """Per label, the validation preset's threshold (0.5 where validation could not set one)."""
    reports = {r["name"]: r for r in (view.metrics.get("validation") or {}).get("labels", [])}
    out = []
    for name in view.labels:
        value = (reports.get(name, {}).get("presets") or {}).get(preset)
        out.append(0.5 if value is None else float(value))
    return np.array(out)


def queue(
    view: DatasetView, mode: str, *, n: int, label: str | None = None, query: str | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """The next ``n`` messages a trainer should look at, by an active-learning ``mode``."""
    label_index = None
    if label is not None:
        if label not in view.labels:
            raise LookupError(f"the model has no label {label!r}")
        label_index = view.labels.index(label)
    picked = active.select(mode, view.pool, n=n, seed=seed, label=label_index, query=query, thresholds=thresholds(view))
    return [summary(view, i) for i in picked]


def summary(view: DatasetView, i: int) -> dict[str, Any]:
    """Message ``i`` of the view as a queue or a cluster lists it: uid, text, top predictions, labels."""
    out: dict[str, Any] = {"uid": view.uids[i], "reviewed": bool(view.pool.reviewed[i]), "text": view.texts[i][:500]}
    if view.pool.scores is not None:
        row = view.pool.scores[i]
        top = np.argsort(-row)[:3]
        out["predicted"] = [{"name": view.labels[j], "probability": round(float(row[j]), 4)} for j in top]
    if view.pool.truth is not None and view.pool.reviewed[i]:
        out["assigned"] = [view.labels[j] for j in np.flatnonzero(view.pool.truth[i])]
    return out


def discover(view: DatasetView, *, k: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Clusters of unreviewed messages, with their top terms and a few examples."""
    rows = np.flatnonzero(~view.pool.reviewed)
    if rows.size == 0:
        return []
    assert view.pool.embeddings is not None
    found = cluster.discover(view.pool.embeddings[rows], [view.texts[i] for i in rows], k=k, seed=seed)
    return [
        {
            "size": c.size,
            "top_terms": list(c.top_terms),
            "examples": [summary(view, int(rows[i])) for i in c.examples],
            "uids": [view.uids[int(rows[i])] for i in c.indices],
        }
        for c in found
    ]


def drift(view: DatasetView) -> dict[str, Any]:
    """Scores of messages that arrived since the model was trained against those before."""
    if view.pool.scores is None or view.trained_at is None:
        raise LookupError("the dataset has no model yet")
    after = np.array([at > view.trained_at for at in view.created_at], dtype=bool)
    if not after.any() or after.all():
        return {"model_version": view.version, "shifted": False, "reason": "no messages on one side of training"}
    report = drift_module.drift(view.pool.scores[~after], view.pool.scores[after], view.labels, thresholds(view))
    return {"model_version": view.version, **report.to_dict()}


def validation_summary(view: DatasetView) -> dict[str, Any]:
    if view.version is None:
        raise LookupError("the dataset has no model yet")
    return {"model_version": view.version, **view.metrics}


def predict_comments(
    store: EventStore, dataset_id: str, comments: list[Any], *, version: int | None = None, threshold: float = 0.0
) -> list[dict[str, Any]]:
    """Predictions for comments that need not be stored: ``{"id", "labels": [{"name": [...], "probability"}]}``."""
    number, model = load_model(store, dataset_id, version)
    normalised = [normalise_comment(c) for c in comments]
    texts = [comment_text(c) for c in normalised]
    vectors = {WORDLLAMA: encoder(WORDLLAMA).encode(texts)}
    if MINILM in model.encoders and minilm_installed():
        vectors[MINILM] = encoder(MINILM).encode(texts)
    scores = model.predict(texts, vectors)
    out = []
    for comment, row in zip(normalised, scores, strict=True):
        order = np.argsort(-row, kind="stable")
        labels = [
            {"name": model.labels[j].split(SEPARATOR), "probability": round(float(row[j]), 4)}
            for j in order
            if row[j] >= threshold
        ]
        out.append({"id": comment["id"], "model_version": number, "labels": labels})
    return out

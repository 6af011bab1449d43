"""Prediction on ingestion: every new message of a dataset's sources, under the dataset's newest model.

A follower of the log (see ``persistence.tracking.follow``): for each window of new
``MessageIngested`` events it computes the fast embedding of the messages whose source belongs
to a dataset (stored for training and active learning), and, where the dataset has a model,
records ``PredictionsRecorded`` in the same transaction that moves its position, so each message
is predicted once even when two workers race. Messages ingested before a dataset's first model
are predicted by the training run itself.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from commine.events import MessageIngested
from commine.handlers.training import embeddings, model_by_hash, prediction_events
from commine.ml.text import comment_text
from commine.persistence import mldata
from commine.persistence import schema as t
from commine.persistence.mldata import MessageRow
from commine.persistence.store import EventStore
from commine.persistence.tracking import follow

NAME = "predict"
ACTOR = "commine-predictor"


def predict_new(store: EventStore, *, wait: bool = False, batch_size: int = 2000) -> int | None:
    """Predict what was ingested since the last run; None when another runner is at it."""

    def react(conn: Connection, _events: list[Any], start: int, end: int) -> None:
        _predict_window(store, conn, start, end)

    return follow(store, NAME, react, wait=wait, batch_size=batch_size, read_events=False)


def _predict_window(store: EventStore, conn: Connection, start: int, end: int) -> None:
    in_datasets = _sources_in_datasets(conn)
    if not in_datasets:  # nothing to embed or predict: skip the window without reading it
        return
    e = t.events
    query = (
        sa.select(e.c.position, e.c.payload)
        .where(
            e.c.position > start,
            e.c.position <= end,
            e.c.type == MessageIngested.type_name(),
            e.c.payload["source_id"].as_string().in_(sorted(in_datasets)),
        )
        .order_by(e.c.position)
    )
    latest: dict[tuple[str, str], tuple[MessageRow, dict[str, Any]]] = {}
    for position, payload in conn.execute(query):
        row = MessageRow(payload["source_id"], payload["comment_id"], position, payload["content_hash"])
        latest[(row.source_id, row.comment_id)] = (row, payload["comment"])
    if not latest:
        return
    rows = [row for row, _ in latest.values()]
    texts = [comment_text(comment) for _, comment in latest.values()]
    vectors = embeddings(conn, rows, texts)
    models = mldata.latest_models(conn, sorted({row.source_id for row in rows}))
    by_dataset: dict[tuple[str, int, str], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        for dataset_id, version, digest in models.get(row.source_id, []):
            by_dataset[(dataset_id, version, digest)].append(i)
    for (dataset_id, version, digest), members in by_dataset.items():
        model = model_by_hash(conn, digest)
        scores = model.predict([texts[i] for i in members], {name: v[members] for name, v in vectors.items()})
        uids = [rows[i].uid for i in members]
        store.append(prediction_events(dataset_id, version, uids, model.labels, scores, ACTOR), conn=conn)


def _sources_in_datasets(conn: Connection) -> set[str]:
    return set(conn.execute(sa.select(t.dataset_sources.c.source_id).distinct()).scalars())

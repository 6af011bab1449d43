"""The slow embedding: all-MiniLM-L6-v2 for every new message, by its own worker, then a better prediction.

A log follower of its own (so ingestion and the fast prediction never wait for it): for each
window of new ``MessageIngested`` events of sources that belong to a dataset, it computes the
transformer embedding (a few hundred texts a second), stores it, and where the dataset's newest
model has a head that reads it, predicts those messages again with that head
(``PredictionsRecorded`` for the same version replaces the fast-path prediction). Runs only when
the ``transformer`` extra is installed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from commine.events import MessageIngested
from commine.handlers.training import embeddings, model_by_hash, prediction_events
from commine.ml.encoders import MINILM, WORDLLAMA
from commine.ml.text import comment_text
from commine.persistence import mldata
from commine.persistence import schema as t
from commine.persistence.mldata import MessageRow
from commine.persistence.store import EventStore
from commine.persistence.tracking import follow

NAME = "embed-minilm"
ACTOR = "commine-embedder"
#: Messages per window: at a few hundred a second, a window commits every second or two.
WINDOW = 500


def embed_new(store: EventStore, *, wait: bool = False) -> int | None:
    """Embed (and re-predict) what was ingested since the last run; None when another runner is at it."""

    def react(conn: Connection, _events: list[Any], start: int, end: int) -> None:
        _embed_window(store, conn, start, end)

    return follow(store, NAME, react, wait=wait, batch_size=WINDOW, read_events=False)


def _embed_window(store: EventStore, conn: Connection, start: int, end: int) -> None:
    sources = set(conn.execute(sa.select(t.dataset_sources.c.source_id).distinct()).scalars())
    if not sources:
        return
    e = t.events
    query = sa.select(e.c.position, e.c.payload).where(
        e.c.position > start,
        e.c.position <= end,
        e.c.type == MessageIngested.type_name(),
        e.c.payload["source_id"].as_string().in_(sorted(sources)),
    )
    latest: dict[tuple[str, str], tuple[MessageRow, dict[str, Any]]] = {}
    for position, payload in conn.execute(query.order_by(e.c.position)):
        row = MessageRow(payload["source_id"], payload["comment_id"], position, payload["content_hash"])
        latest[(row.source_id, row.comment_id)] = (row, payload["comment"])
    if not latest:
        return
    rows = [row for row, _ in latest.values()]
    texts = [comment_text(comment) for _, comment in latest.values()]
    vectors = embeddings(conn, rows, texts, compute=(WORDLLAMA, MINILM))
    _predict_again(store, conn, rows, texts, vectors)


def _predict_again(
    store: EventStore, conn: Connection, rows: list[MessageRow], texts: list[str], vectors: dict[str, Any]
) -> None:
    models = mldata.latest_models(conn, sorted({row.source_id for row in rows}))
    members: dict[tuple[str, int, str], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        for key in models.get(row.source_id, []):
            members[key].append(i)
    for (dataset_id, version, digest), chosen in members.items():
        model = model_by_hash(conn, digest)
        if MINILM not in model.encoders:
            continue
        scores = model.predict([texts[i] for i in chosen], {name: v[chosen] for name, v in vectors.items()})
        uids = [rows[i].uid for i in chosen]
        store.append(prediction_events(dataset_id, version, uids, model.labels, scores, ACTOR), conn=conn)

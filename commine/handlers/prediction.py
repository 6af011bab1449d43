"""Prediction on ingestion: every new message of a dataset's sources, under the dataset's newest model.

A follower of the log (see ``persistence.tracking.follow``): for each window of new
``MessageIngested`` events it computes the fast embedding of the messages whose source belongs
to a dataset (stored for training and active learning), and, where the dataset has a model,
records ``PredictionsRecorded`` in the same transaction that moves its position, so each message
is predicted once even when two workers race. Messages ingested before a dataset's first model
are predicted by the training run itself.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from commine.handlers.training import embeddings, predict_rows
from commine.ml.text import comment_text
from commine.persistence import mldata
from commine.persistence.store import EventStore

NAME = "predict"
ACTOR = "commine-predictor"


def predict_new(store: EventStore, *, wait: bool = False, batch_size: int = 2000) -> int | None:
    """Predict what was ingested since the last run; None when another runner is at it."""

    def react(conn: Connection, _events: list[Any], start: int, end: int) -> None:
        _predict_window(store, conn, start, end)

    return mldata.follow_datasets_messages(store, NAME, react, busy=batch_size, wait=wait)


def _predict_window(store: EventStore, conn: Connection, start: int, end: int) -> None:
    sources = mldata.sources_in_datasets(conn)
    if not sources:  # nothing to embed or predict: skip the window without reading it
        return
    ingested = mldata.ingested_between(conn, start, end, sources)
    if not ingested:
        return
    rows = [row for row, _ in ingested]
    texts = [comment_text(comment) for _, comment in ingested]
    vectors = embeddings(conn, rows, texts)
    predict_rows(store, conn, rows, texts, vectors, ACTOR)

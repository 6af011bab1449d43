"""The slow embedding: all-MiniLM-L6-v2 for every new message, by its own worker, then a better prediction.

A log follower of its own (so ingestion and the fast prediction never wait for it): for each
window of new ``MessageIngested`` events of sources that belong to a dataset, it computes the
transformer embedding (a few hundred texts a second), stores it, and where the dataset's newest
model has a head that reads it, predicts those messages again with that head
(``PredictionsRecorded`` for the same version replaces the fast-path prediction). Runs only when
the ``transformer`` extra is installed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from commine.handlers.training import embeddings, predict_rows
from commine.ml.encoders import MINILM, WORDLLAMA
from commine.ml.text import comment_text
from commine.persistence import mldata
from commine.persistence.store import EventStore
from commine.persistence.tracking import position_of

NAME = "embed-minilm"
ACTOR = "commine-embedder"
#: Messages per window: at a few hundred a second, a window commits every second or two.
WINDOW = 500


def embed_new(store: EventStore, *, wait: bool = False) -> int | None:
    """Embed (and re-predict) what was ingested since the last run; None when another runner is at it.

    It stops where the read models have got to (``mldata.follow_datasets_messages``); the
    ``project`` actor, once they have caught up, nudges it on when it is ``held_back``.
    """

    def react(conn: Connection, _events: list[Any], start: int, end: int) -> None:
        _embed_window(store, conn, start, end)

    return mldata.follow_datasets_messages(store, NAME, react, busy=WINDOW, wait=wait)


def held_back(store: EventStore) -> bool:
    """Whether the embedder is short of the log's end: the read models were behind when it ran,
    or events came since."""
    with store.engine.connect() as conn:
        return position_of(conn, NAME) < store.last_position(conn)


def _embed_window(store: EventStore, conn: Connection, start: int, end: int) -> None:
    sources = mldata.sources_in_datasets(conn)
    ingested = mldata.ingested_between(conn, start, end, sources) if sources else []
    if not ingested:
        return
    rows = [row for row, _ in ingested]
    texts = [comment_text(comment) for _, comment in ingested]
    vectors = embeddings(conn, rows, texts, compute=(WORDLLAMA, MINILM))
    predict_rows(store, conn, rows, texts, vectors, ACTOR, needs=MINILM)

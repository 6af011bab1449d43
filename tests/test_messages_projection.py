"""The messages read model: PostgreSQL's set-based catch-up against the Python fold replay uses."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from commine.domain.comment import normalise_comment
from commine.domain.message import Message, message_aggregate_id
from commine.persistence import projections
from commine.persistence import schema as t
from commine.persistence.engine import make_engine, migrate
from commine.persistence.store import EventStore

SOURCE_ID = "0123456789abcdef"


def ingest(store: EventStore, versions: dict[str, Message], comment_id: str, text: str, at: str) -> None:
    """One ingestion of ``comment_id`` with ``text`` (an update when it was ingested before)."""
    aggregate_id = message_aggregate_id(SOURCE_ID, comment_id)
    message = versions.get(comment_id) or Message(aggregate_id)
    comment: dict[str, Any] = {"id": comment_id, "timestamp": at, "messages": [{"body": {"text": text}}]}
    if comment_id.endswith("t"):
        comment["thread_id"] = f"thread-{comment_id}"
    message.ingest(normalise_comment(comment), actor="test")
    store.append(message.collect())
    versions[comment_id] = message


def message_rows(store: EventStore) -> list[Any]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(t.messages).order_by(t.messages.c.comment_id)))


def fold_in_python(store: EventStore, batch_size: int) -> None:
    """The messages table rebuilt by ``_messages`` over ``_ingested``, window by window as catch-up cuts them."""
    with store.transaction() as conn:
        conn.execute(t.messages.delete())
        last = store.last_position(conn)
        for start in range(0, last, batch_size):
            end = min(last, start + batch_size)
            projections._messages(conn, projections._ingested(store, conn, start, end))


@pytest.mark.parametrize("batch_size", [3, 2000])
def test_catch_up_writes_the_same_message_rows_as_the_python_fold(pg_url: str, batch_size: int) -> None:
    engine = make_engine(pg_url)
    migrate(engine)
    store = EventStore(engine)
    try:
        versions: dict[str, Message] = {}
        # Given comments ingested once, updated within a window, updated across windows, re-sent unchanged,
        # at different times, some with a thread...
        ids = [uuid.uuid4().hex[:8] + suffix for suffix in ("a", "bt", "c", "dt")]
        for round_ in range(4):
            for n, comment_id in enumerate(ids):
                if n <= round_:
                    text = f"text {comment_id} {round_ if n % 2 else 0}"
                    ingest(store, versions, comment_id, text, f"2026-0{n + 1}-0{round_ + 1}T09:30:00.123456+02:00")
        projections.catch_up(store, batch_size=batch_size)
        caught_up = message_rows(store)
        # ...the set-based catch-up holds what the fold replay uses holds, row for row.
        fold_in_python(store, batch_size)
        assert caught_up == message_rows(store)
        assert len(caught_up) == len(ids)
        versions_seen = {row.comment_id: row.version for row in caught_up}
        assert versions_seen == {comment_id: message.version for comment_id, message in versions.items()}
    finally:
        engine.dispose()


def test_a_later_window_never_moves_a_message_row_back(pg_url: str) -> None:
    engine = make_engine(pg_url)
    migrate(engine)
    store = EventStore(engine)
    try:
        versions: dict[str, Message] = {}
        ingest(store, versions, "m1", "first", "2026-01-01T00:00:00Z")
        ingest(store, versions, "m1", "second", "2026-01-01T00:00:00Z")
        projections.catch_up(store)
        newest = message_rows(store)
        # Given the window of the first ingestion applied again (a catch-up that crashed before its commit)...
        with store.transaction() as conn:
            projections._messages_in_sql(conn, 0, 1)
        # ...the row still points at the newest ingestion.
        assert message_rows(store) == newest
        assert newest[0].version == 2
    finally:
        engine.dispose()

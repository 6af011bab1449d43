"""Replay against read models that keep moving, and catch-up that is interrupted half-way."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from commine.domain.comment import normalise_comment
from commine.domain.message import Message, message_aggregate_id
from commine.domain.project import Project, project_aggregate_id
from commine.persistence import projections, replay
from commine.persistence import schema as t
from commine.persistence.store import EventStore

SOURCE_ID = "0123456789abcdef"


def ingest(store: EventStore, count: int) -> None:
    """Append ``count`` new messages in one batch, as the ingest handler would."""
    events = []
    for _ in range(count):
        comment_id = uuid.uuid4().hex
        message = Message(message_aggregate_id(SOURCE_ID, comment_id))
        comment = {"id": comment_id, "timestamp": "2026-01-01T00:00:00Z", "messages": [{"body": {"text": "hi"}}]}
        message.ingest(normalise_comment(comment), actor="test")
        events.extend(message.collect())
    store.append(events)


def test_replay_equals_the_live_state_while_workers_keep_writing(store: EventStore) -> None:
    project = Project(project_aggregate_id("acme"))
    project.create(actor="test")
    store.append(project.collect())
    ingest(store, 50)
    stop = threading.Event()

    def keep_writing() -> None:
        # Given an ingest worker and a projection worker that never pause...
        while not stop.is_set():
            ingest(store, 20)
            projections.catch_up(store)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        # ...the rebuild is compared with a snapshot of the read models at the position it shows.
        seen: list[int] = []
        for _ in range(3):
            live, rebuilt = replay.verify(store)
            assert live.position > 0
            assert rebuilt.position == live.position
            assert rebuilt.total == live.total
            seen.append(live.position)
            wait_for_the_log_to_pass(store, live.position)
    finally:
        stop.set()
        writer.join()
    assert seen == sorted(set(seen)), f"each replay saw a later state of the log: {seen}"


def wait_for_the_log_to_pass(store: EventStore, position: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while store.last_position() <= position:
        assert time.monotonic() < deadline, "the writer stopped writing"
        time.sleep(0.01)


def test_a_catch_up_interrupted_half_way_through_a_rebuild_finishes_it_later(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(5):
        ingest(store, 30)
    projections.catch_up(store)
    before = replay.digest(store.engine)
    with store.transaction() as conn:
        for table in (*projections_tables(), t.checkpoints):
            conn.execute(table.delete())

    # Given a rebuild from nothing that fails on its second window...
    real_apply = projections.apply
    calls = {"n": 0}

    def failing_apply(conn, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker died")
        real_apply(conn, batch)

    monkeypatch.setattr(projections, "apply", failing_apply)
    with pytest.raises(RuntimeError):
        projections.catch_up(store, batch_size=40)
    monkeypatch.setattr(projections, "apply", real_apply)
    assert 0 < replay.digest(store.engine).position < before.position

    # ...the next catch-up picks up where the first window ended and loses no message.
    projections.catch_up(store, batch_size=40)
    assert replay.digest(store.engine) == before
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.messages)).scalar_one() == 150


def projections_tables() -> list[sa.Table]:
    return [table for table in t.projection_metadata.sorted_tables if table.name != "checkpoints"]


def test_a_stored_comment_is_read_from_the_event_the_read_model_points_at(store: EventStore) -> None:
    from commine.persistence.readmodels import get_comment

    ingest(store, 1)
    projections.catch_up(store)
    (event,) = [stored.event for stored in store.read_all()]
    assert get_comment(store.engine, SOURCE_ID, event.comment_id) == event.comment
    assert get_comment(store.engine, SOURCE_ID, "no-such-comment") is None

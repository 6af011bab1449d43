"""Deleting a dataset takes its streams, their entries and exceptions with it; replay agrees."""

from __future__ import annotations

import sqlalchemy as sa
from streams_helpers import DATASET, make_world, refund

from commine.handlers import streams
from commine.handlers.commands import delete_dataset
from commine.persistence import replay
from commine.persistence import schema as t
from commine.persistence.projections import catch_up
from commine.persistence.store import EventStore


def count(store: EventStore, table: sa.Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)


def test_deleting_a_dataset_deletes_its_streams(store: EventStore) -> None:
    world = make_world(store)
    world.ingest(["c1", "c2"])
    version = world.train()
    world.predict(version, {"c1": refund(0.9), "c2": refund(0.8)})
    streams.create_stream(store, DATASET, "refunds", actor="admin")
    streams.tag_exceptions(store, DATASET, "refunds", [{"uid": world.uid("c1")}], actor="robot")
    catch_up(store)
    assert count(store, t.stream_entries) == 2 and count(store, t.stream_exceptions) == 1

    delete_dataset(store, DATASET, reason="test", actor="admin")
    catch_up(store)

    for table in (t.streams, t.stream_entries, t.stream_exceptions, t.predictions, t.models):
        assert count(store, table) == 0, table.name
    assert count(store, t.messages) == 2
    live, rebuilt = replay.verify(store)
    assert live == rebuilt

"""Fetch by index gives what a walk over the stream's entries gives, for every size and max_filtered;
the backlog an advance leaves equals a recount. Against the real PostgreSQL (and SQLite)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from streams_helpers import DATASET, World, make_world, refund

from commine.handlers import streams
from commine.persistence import schema as t
from commine.persistence import streamdata
from commine.persistence.store import EventStore

THRESHOLDS = [{"name": ["Billing", "Refund"], "threshold": 0.5}]


@pytest.fixture
def world(store: EventStore) -> Iterator[World]:
    yield make_world(store)


def walk(entries: list[Any], after: int, size: int, max_filtered: int | None) -> tuple[list[int], int, int]:
    """The reference: walk entries in order, stop when size qualified or max_filtered did not."""
    chosen: list[int] = []
    filtered, last = 0, after
    for entry in entries:
        if entry.seq <= after:
            continue
        last = entry.seq
        if entry.qualifies:
            chosen.append(entry.seq)
        else:
            filtered += 1
        if len(chosen) >= size or (max_filtered is not None and filtered >= max_filtered):
            break
    return chosen, filtered, last


def test_fetch_by_index_matches_a_walk_over_the_entries(world: World) -> None:
    rng = random.Random(7)
    version = world.train()
    streams.create_stream(world.store, DATASET, "refunds", label_thresholds=THRESHOLDS, actor="user:ann")
    ids = [f"m{i:03d}" for i in range(120)]
    world.ingest(ids)
    # Runs of qualifying and filtered messages, so both limits are met at many places.
    world.predict(version, {cid: refund(0.9 if (i // rng.randint(1, 6)) % 2 else 0.1) for i, cid in enumerate(ids)})
    stream_id = streams.get_stream(world.store, DATASET, "refunds")["id"]
    with world.store.engine.connect() as conn:
        entries = streamdata.entries_after(conn, stream_id, 0, 10_000)
        # No message was deleted, so the last id handed out is the last entry's: a walk ends there too.
        last_seq = entries[-1].seq
        for after in (0, 1, 17, 60, 119, 120):
            stream = SimpleNamespace(stream_id=stream_id, cursor=after, last_seq=last_seq)
            for size in (1, 2, 5, 64):
                for max_filtered in (None, 1, 3, 10):
                    chosen, filtered, last = streams._scan(conn, stream, size, max_filtered)
                    expected = walk(entries, after, size, max_filtered)
                    assert ([e.seq for e in chosen], filtered, last) == expected, (after, size, max_filtered)


def test_the_backlog_after_advances_equals_a_recount(world: World) -> None:
    version = world.train()
    streams.create_stream(world.store, DATASET, "refunds", label_thresholds=THRESHOLDS, actor="user:ann")
    ids = [f"m{i:03d}" for i in range(40)]
    world.ingest(ids)
    world.predict(version, {cid: refund(0.9 if i % 3 else 0.2) for i, cid in enumerate(ids)})
    for sequence_id in ("5", "6", "19", "33"):
        streams.advance(world.store, DATASET, "refunds", sequence_id, actor="robot")
        row = streams.get_stream(world.store, DATASET, "refunds")
        with world.store.engine.connect() as conn:
            entries = t.stream_entries
            recount = conn.execute(
                sa.select(sa.func.count()).where(
                    entries.c.stream_id == row["id"], entries.c.qualifies, entries.c.seq > int(row["cursor"])
                )
            ).scalar()
        assert row["backlog"] == recount > 0


def test_a_stream_created_in_chunks_keeps_ingestion_order(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from commine.persistence import replay, stream_projection

    monkeypatch.setattr(stream_projection, "ADD_CHUNK", 2)
    version = world.train()
    order = ["m5", "m1", "m4", "m2", "m6", "m3", "m0"]
    for comment_id in order:
        world.ingest([comment_id])
    # m5 again with new content: its place is still its first ingestion.
    world.ingest(["m5"], properties={"m5": {"string:Tier": "gold"}})
    world.predict(version, {cid: refund(0.9) for cid in sorted(order)})
    streams.create_stream(world.store, DATASET, "refunds", label_thresholds=THRESHOLDS, actor="user:ann")

    batch = streams.fetch(world.store, DATASET, "refunds", size=10)
    assert [r["comment"]["id"] for r in batch["results"]] == order
    live, rebuilt = replay.verify(world.store)
    assert rebuilt == live

"""The event store contract, one suite run on SQLite and on PostgreSQL.

Appends are gapless and atomic, optimistic concurrency loses no update, redelivery writes nothing,
the read models follow the log and a replay of the log reproduces them, and the Alembic migration
builds exactly the tables the code declares.
"""

from __future__ import annotations

import copy
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commine.domain.aggregate import Aggregate
from commine.domain.annotation import Annotation, annotation_aggregate_id
from commine.domain.comment import content_hash, normalise_comment
from commine.domain.dataset import Dataset, dataset_aggregate_id
from commine.domain.errors import CommentError
from commine.domain.message import NEW, UNCHANGED, UPDATED, Message, message_aggregate_id
from commine.domain.project import Project, project_aggregate_id
from commine.domain.source import Source, source_aggregate_id
from commine.domain.stream import Stream, stream_aggregate_id
from commine.events import (
    DomainEvent,
    EventRegistry,
    LabelApplied,
    LabelDefined,
    MessageIngested,
    ModelTrained,
    ProjectCreated,
    to_record,
)
from commine.events.codec import record_to_dict
from commine.persistence import projections, replay
from commine.persistence import schema as t
from commine.persistence import store as store_module
from commine.persistence.engine import alembic_config, drop_database, ensure_database, is_sqlite, make_engine, migrate
from commine.persistence.store import ConcurrencyError, EventStore, StoredEvent

ACTOR = "test"
INBOX, CHAT = "0123456789abcdef", "aaaaaaaaaaaaaaaa"
DATASET = "fedcba9876543210"

# --- helpers ---------------------------------------------------------------------------------


def defined(aggregate_id: str, version: int, name: str = "L", **envelope: Any) -> LabelDefined:
    return LabelDefined(
        aggregate_id=aggregate_id, aggregate_version=version, actor=ACTOR, dataset_id=DATASET, name=name, **envelope
    )


def log(store: EventStore) -> list[tuple[int, uuid.UUID, str, int]]:
    """The whole log as (position, event id, aggregate, version)."""
    return [(s.position, s.event.event_id, s.event.aggregate_id, s.event.aggregate_version) for s in store.read_all()]


def comment(comment_id: str, text: str, **extra: Any) -> dict[str, Any]:
    return normalise_comment(
        {"id": comment_id, "timestamp": "2024-05-01T09:30:00+02:00", "messages": [{"body": text}], **extra}
    )


# --- appending and reading -------------------------------------------------------------------


def test_appends_get_gapless_positions_in_append_order(store: EventStore) -> None:
    a, b, c = "dataset:acme/a", "dataset:acme/b", "dataset:acme/c"
    batches = [
        [defined(a, 1)],
        [defined(b, 1), defined(b, 2), defined(a, 2)],
        [defined(c, 1)],
        [defined(a, 3), defined(b, 3)],
    ]

    positions = [store.append(batch) for batch in batches]

    assert positions == [[1], [2, 3, 4], [5], [6, 7]]
    assert [p for p, *_ in log(store)] == list(range(1, 8))
    assert [event_id for _, event_id, *_ in log(store)] == [e.event_id for batch in batches for e in batch]
    assert store.last_position() == 7


def awkwardly_defined(awkward: str, suffix: str = "") -> LabelDefined:
    """A label defined with ``awkward`` in its aggregate id, actor and name."""
    return LabelDefined(
        aggregate_id=f"dataset:acme/{awkward}{suffix}",
        aggregate_version=1,
        actor=f"csv:{awkward}",
        dataset_id=DATASET,
        name=f"L {awkward}",
    )


@pytest.mark.parametrize("count", [1, 100])  # a small batch is inserted in a pipeline, a large one by COPY
def test_tabs_newlines_and_backslashes_in_ids_actors_and_text_read_back_as_written(
    store: EventStore, count: int
) -> None:
    awkward = "a\tb\nc\rd\\e \\t é"
    events: list[Any] = [awkwardly_defined(awkward, str(i)) for i in range(count)]
    message = Message(message_aggregate_id(INBOX, "c1"))
    message.ingest(comment("c1", f"line one\nline\ttwo \\ {awkward}"), actor=awkward)
    events += message.collect()

    store.append(events)

    assert [s.event for s in store.read_all()] == events


def test_the_relay_wire_form_is_the_codec_record_of_each_event_with_its_payload_as_stored(store: EventStore) -> None:
    awkward = 'quote " backslash \\ tab \t newline \n control \x01 é 😀 </script>'
    events: list[Any] = [
        awkwardly_defined(awkward),
        defined("dataset:acme/b", 1, occurred_at=datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=5)))),
        defined("dataset:acme/c", 1, occurred_at=datetime(2024, 5, 1, 9, 30, 0, 120, tzinfo=UTC)),
        defined(":no-kind", 1),
    ]
    message = Message(message_aggregate_id(INBOX, "c1"))
    message.ingest(comment("c1", awkward), actor="integration")
    events += message.collect()
    positions = store.append(events)

    with store.engine.connect() as conn:
        wire = store.read_wire(positions[0] - 1, positions[-1], conn=conn)
        stored = {row.position: orjson.loads(row.payload_json) for row in store.read_raw(0, positions[-1], conn=conn)}

    expected = []
    for position, event in zip(positions, events, strict=True):
        record = record_to_dict(to_record(event))
        record.update(position=position, payload=stored[position])  # the payload as stored: sealed text sealed
        record["occurred_at"] = event.occurred_at.astimezone(UTC).isoformat()
        expected.append((event.aggregate_id, event.type_name(), record))
    assert [(a, kind, orjson.loads(body)) for a, kind, body in wire] == expected
    assert [orjson.loads(body)["occurred_at"] for *_, body in wire][1:3] == [
        "2024-05-01T04:30:00+00:00",
        "2024-05-01T09:30:00.000120+00:00",
    ]


def test_the_log_is_analyzed_once_it_holds_enough_events_for_statistics(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without statistics PostgreSQL scanned the whole log for every ingested batch's look-up.
    monkeypatch.setattr(store_module, "ANALYZE_AFTER", 40)
    store.append([defined(f"dataset:acme/d{i}", 1) for i in range(39)])
    if is_sqlite(store.engine):
        assert store.ensure_statistics()  # its planner needs none
        return

    assert not store.ensure_statistics()
    assert _row_estimate(store) <= 0

    store.append([defined("dataset:acme/last", 1)])

    assert store.ensure_statistics()
    assert _row_estimate(store) == 40


def _row_estimate(store: EventStore) -> float:
    with store.engine.connect() as conn:
        return float(conn.execute(sa.text("SELECT reltuples FROM pg_class WHERE oid = 'events'::regclass")).scalar())


def test_an_empty_store_reads_empty_and_an_empty_append_writes_nothing(store: EventStore) -> None:
    assert store.append([]) == []
    assert store.last_position() == 0
    assert list(store.read_all()) == []
    assert store.read_aggregate("project:none") == []


def test_an_aggregate_reads_back_in_version_order_equal_to_what_was_appended(store: EventStore) -> None:
    message = Message(message_aggregate_id(INBOX, "c1"))
    message.ingest(
        comment(
            "c1",
            "Grüße — où est mon remboursement? 退款 🙂",
            user_properties={"string:Country": "de", "number:NPS": 7, "number:Score": 0.25},
        ),
        actor=ACTOR,
    )
    message.delete(reason="spam", actor=ACTOR)
    message.ingest(comment("c1", "back again"), actor="csv-upload")
    events = message.collect()
    kolkata = timezone(timedelta(hours=5, minutes=30))
    other = [
        ProjectCreated(
            aggregate_id="project:acme",
            aggregate_version=1,
            actor=ACTOR,
            name="acme",
            occurred_at=datetime.now(kolkata),
        ),
        LabelApplied(
            aggregate_id=annotation_aggregate_id(DATASET, f"{INBOX}.c1"),
            aggregate_version=1,
            actor=ACTOR,
            dataset_id=DATASET,
            uid=f"{INBOX}.c1",
            assigned=[{"name": "Billing", "sentiment": None}, {"name": "Billing > Refund", "sentiment": "negative"}],
            dismissed=["Card"],
            occurred_at=datetime(2024, 5, 1, 9, 30, 0, 123456, tzinfo=timezone(timedelta(hours=-8))),
        ),
    ]
    # Interleaved with other aggregates, and the message's events split over two batches.
    store.append([other[0], events[0]])
    store.append([other[1], *events[1:]])

    read = store.read_aggregate(message.id)

    assert [e.aggregate_version for e in read] == [1, 2, 3]
    assert [type(e) for e in read] == [type(e) for e in events]
    assert read == events  # ids, envelope, payload, and occurred_at as the same instant
    assert [e.payload() for e in read] == [e.payload() for e in events]
    assert read[0].comment["user_properties"] == {"string:Country": "de", "number:NPS": 7, "number:Score": 0.25}
    by_id = store.read_aggregates([other[0].aggregate_id, other[1].aggregate_id, "project:none"])
    assert by_id == {other[0].aggregate_id: [other[0]], other[1].aggregate_id: [other[1]], "project:none": []}
    assert all(e.occurred_at.utcoffset() is not None for e in store.read_aggregate(other[0].aggregate_id))


def test_read_all_pages_after_a_position_and_stops_at_the_limit(store: EventStore) -> None:
    store.append([defined(f"dataset:acme/d{i}", 1) for i in range(10)])

    def positions(**kwargs: Any) -> list[int]:
        return [s.position for s in store.read_all(**kwargs)]

    assert positions() == list(range(1, 11))
    assert positions(after=3) == list(range(4, 11))
    assert positions(after=3, limit=4) == [4, 5, 6, 7]
    assert positions(after=3, limit=4, batch_size=3) == [4, 5, 6, 7]
    assert positions(after=0, batch_size=3) == list(range(1, 11))
    assert positions(after=8, limit=5) == [9, 10]
    assert positions(after=10) == []
    assert positions(limit=0) == []
    stored = next(iter(store.read_all(after=4, limit=1)))
    assert isinstance(stored, StoredEvent)
    assert stored.event.aggregate_id == "dataset:acme/d4"


def test_until_gives_a_prefix_of_the_log_at_each_moment(store: EventStore) -> None:
    for part in range(3):
        store.append([defined(f"dataset:acme/p{part}", 1), defined(f"dataset:acme/p{part}", 2)])
        time.sleep(0.01)
    everything = list(store.read_all())
    moments = [s.recorded_at for s in everything]

    assert moments == sorted(moments)
    assert all(m.utcoffset() == timedelta(0) for m in moments)
    for cut in (1, 3, 5):
        until = everything[cut].recorded_at
        prefix = [s.position for s in store.read_all(until=until)]
        assert prefix == list(range(1, cut + 2))
        # the same instant written in another zone selects the same prefix
        elsewhere = until.astimezone(timezone(timedelta(hours=-7)))
        assert [s.position for s in store.read_all(until=elsewhere)] == prefix
        assert [s.position for s in store.read_all(after=1, until=until, limit=1)] == prefix[1:2]
    assert list(store.read_all(until=moments[0] - timedelta(microseconds=1))) == []


# --- optimistic concurrency ------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 4, 0, -1], ids=["taken", "taken-last", "skips-ahead", "zero", "negative"])
def test_a_conflicting_append_raises_and_writes_nothing(store: EventStore, version: int) -> None:
    store.append([defined("dataset:acme/a", 1), defined("dataset:acme/a", 2, name="M")])
    before = log(store)

    with pytest.raises(ConcurrencyError, match="dataset:acme/a"):
        store.append([defined("dataset:acme/a", version, name="X")])

    assert log(store) == before
    assert [e.name for e in store.read_aggregate("dataset:acme/a")] == ["L", "M"]


def test_a_new_aggregate_must_start_at_version_1(store: EventStore) -> None:
    with pytest.raises(ConcurrencyError, match="expected version 1, the log is at version 0"):
        store.append([defined("dataset:acme/new", 2)])
    assert store.last_position() == 0


def test_a_batch_with_one_conflicting_event_writes_none_of_its_events(store: EventStore) -> None:
    store.append([defined("dataset:acme/a", 1)])
    before = log(store)

    batch = [defined("dataset:acme/b", 1), defined("dataset:acme/b", 2), defined("dataset:acme/a", 1)]
    with pytest.raises(ConcurrencyError):
        store.append(batch)
    assert log(store) == before
    assert store.read_aggregate("dataset:acme/b") == []

    # the failed batch used up no positions: the next append continues the log without a gap
    assert store.append(batch[:2]) == [2, 3]


def test_versions_inside_one_batch_must_follow_each_other(store: EventStore) -> None:
    with pytest.raises(ConcurrencyError, match="must follow each other"):
        store.append([defined("dataset:acme/a", 1), defined("dataset:acme/a", 3)])
    with pytest.raises(ConcurrencyError, match="must follow each other"):
        store.append([defined("dataset:acme/a", 1), defined("dataset:acme/a", 1, name="again")])
    assert store.last_position() == 0


def test_an_append_inside_a_transaction_that_fails_leaves_nothing(store: EventStore) -> None:
    with pytest.raises(RuntimeError), store.transaction() as conn:
        assert store.append([defined("dataset:acme/a", 1)], conn) == [1]
        raise RuntimeError("the handler failed after appending")
    assert store.last_position() == 0

    with store.transaction() as conn:
        store.append([defined("dataset:acme/a", 1)], conn)
        conn.execute(
            t.ingest_receipts.insert().values(
                batch_id="b1",
                source_id=INBOX,
                new=1,
                updated=0,
                unchanged=0,
                rejected=0,
                errors=[],
                recorded_at=datetime.now(UTC),
            )
        )
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.ingest_receipts)).scalar_one() == 1
    assert store.last_position() == 1


def test_appends_on_one_connection_after_a_rolled_back_one_still_work(store: EventStore) -> None:
    """A transaction rolled back after its append (which took the log's lock, and on PostgreSQL a
    savepoint) leaves its connection ready for the next append, with nothing written."""
    with store.engine.connect() as conn:
        with pytest.raises(RuntimeError), conn.begin():
            assert store.append([defined("dataset:acme/a", 1)], conn) == [1]
            raise RuntimeError("the handler failed after appending")
        with conn.begin():
            assert store.append([defined("dataset:acme/a", 1), defined("dataset:acme/b", 1)], conn) == [1, 2]
        with conn.begin():
            assert store.append([defined("dataset:acme/a", 2)], conn) == [3]
    assert [p for p, *_ in log(store)] == [1, 2, 3]


# --- idempotence by event id -----------------------------------------------------------------


def test_appending_the_same_batch_again_writes_nothing(store: EventStore) -> None:
    batch = [defined("dataset:acme/a", 1), defined("dataset:acme/b", 1), defined("dataset:acme/a", 2)]
    assert store.append(batch) == [1, 2, 3]
    before = log(store)

    assert store.append(batch) == []
    assert store.append(copy.deepcopy(batch)) == []
    assert log(store) == before
    assert store.append([defined("dataset:acme/a", 3)]) == [4]


def test_a_redelivered_event_is_skipped_even_after_its_aggregate_moved_on(store: EventStore) -> None:
    first = defined("dataset:acme/a", 1)
    store.append([first])
    store.append([defined("dataset:acme/a", 2)])

    assert store.append([first]) == []
    assert store.last_position() == 2


def test_a_duplicate_inside_one_batch_is_written_once(store: EventStore) -> None:
    a1, b1 = defined("dataset:acme/a", 1), defined("dataset:acme/b", 1)

    assert store.append([a1, b1, a1, b1]) == [1, 2]
    assert [event_id for _, event_id, *_ in log(store)] == [a1.event_id, b1.event_id]


def test_a_batch_mixing_stored_and_new_events_writes_only_the_new_ones(store: EventStore) -> None:
    a1, a2 = defined("dataset:acme/a", 1), defined("dataset:acme/a", 2)
    store.append([a1])

    assert store.append([a1, a2]) == [2]
    assert store.read_aggregate("dataset:acme/a") == [a1, a2]


# --- concurrent writers ----------------------------------------------------------------------

LOCAL = EventRegistry()


@LOCAL.register
@dataclass(frozen=True, kw_only=True)
class Incremented(DomainEvent):
    """A test-local event: writer ``writer`` made its ``seq``-th increment, taking the count to ``count``."""

    writer: int
    seq: int
    count: int


class Counter(Aggregate):
    prefix = "counter:"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.count = 0

    def increment(self, writer: int, seq: int, *, actor: str) -> None:
        self.record(Incremented, actor, writer=writer, seq=seq, count=self.count + 1)

    def _on_Incremented(self, event: Incremented) -> None:
        self.count = event.count


WRITERS, APPENDS = 10, 100


@pytest.fixture
def counters(store: EventStore) -> EventStore:
    """The same database, reading and writing the test-local ``Incremented`` events."""
    return EventStore(store.engine, registry=LOCAL)


def backoff(attempt: int) -> None:
    """Jittered exponential wait after a lost race, so ten writers do not retry in lock step."""
    time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 6)))


#: How a writer appends: in a transaction of its own (on PostgreSQL a small batch goes through the
#: pipelined insert), or inside the caller's (the lock's round trip, then a COPY).
APPEND_PATHS = ["own-transaction", "caller-transaction"]


def append_via(store: EventStore, path: str, events: list[DomainEvent]) -> list[int]:
    if path == "own-transaction":
        return store.append(events)
    with store.transaction() as conn:
        return store.append(events, conn)


def run_writers(work: Callable[[int], int]) -> list[int]:
    start = threading.Barrier(WRITERS)

    def writer(w: int) -> int:
        start.wait()
        return work(w)

    with ThreadPoolExecutor(WRITERS) as pool:
        return list(pool.map(writer, range(WRITERS)))


def check_counter_events(events: list[Incremented], writers: list[int]) -> None:
    """Versions and counts 1..k without gaps, and each writer's increments all there, in its order."""
    assert [e.aggregate_version for e in events] == list(range(1, len(events) + 1))
    assert [e.count for e in events] == list(range(1, len(events) + 1))
    per_writer: dict[int, list[int]] = defaultdict(list)
    for e in events:
        per_writer[e.writer].append(e.seq)
    assert sorted(per_writer) == writers
    assert all(seqs == list(range(APPENDS)) for seqs in per_writer.values())


@pytest.mark.parametrize("path", APPEND_PATHS)
def test_ten_writers_on_one_aggregate_lose_no_update(counters: EventStore, path: str) -> None:
    """Load, decide, append; on ConcurrencyError load again and retry.

    Each writer keeps its view of the counter and brings it up to date from the log (reading
    ``read_all`` after the last position it saw) instead of re-reading all 1,000 events on every
    attempt: that keeps the test within seconds, while every decision is still taken on a view
    that may be stale, which is exactly what the store must catch.
    """
    aggregate_id = "counter:shared"

    def work(w: int) -> int:
        view, seen, retries = Counter(aggregate_id), 0, 0
        for seq in range(APPENDS):
            attempt = 0
            while True:
                for stored in counters.read_all(seen):  # load: catch the view up with the log
                    view.apply(stored.event)
                    seen = stored.position
                decision = copy.deepcopy(view)  # decide on a copy: the view only takes stored events
                decision.increment(w, seq, actor=f"writer-{w}")
                try:
                    append_via(counters, path, decision.collect())
                    break
                except ConcurrencyError:
                    attempt += 1
                    retries += 1
                    backoff(attempt)
        return retries

    retries = run_writers(work)

    total = WRITERS * APPENDS
    assert [s.position for s in counters.read_all()] == list(range(1, total + 1))
    events = counters.read_aggregate(aggregate_id)
    assert len(events) == total
    check_counter_events(events, list(range(WRITERS)))
    assert sum(retries) > 0, "the writers never raced; the test did not test concurrency"


@pytest.mark.parametrize("path", APPEND_PATHS)
def test_ten_writers_on_their_own_aggregates_keep_a_gapless_log(counters: EventStore, path: str) -> None:
    def work(w: int) -> int:
        aggregate_id, retries = f"counter:{w}", 0
        for seq in range(APPENDS):
            while True:
                counter = Counter.replay(aggregate_id, counters.read_aggregate(aggregate_id))
                counter.increment(w, seq, actor=f"writer-{w}")
                try:
                    append_via(counters, path, counter.collect())
                    break
                except ConcurrencyError:  # pragma: no cover - nobody else writes this aggregate
                    retries += 1
        return retries

    assert run_writers(work) == [0] * WRITERS

    everything = list(counters.read_all())
    assert [s.position for s in everything] == list(range(1, WRITERS * APPENDS + 1))
    by_aggregate: dict[str, list[Incremented]] = defaultdict(list)
    for stored in everything:  # in log order, so versions must also come out in order
        by_aggregate[stored.event.aggregate_id].append(stored.event)
    assert sorted(by_aggregate) == sorted(f"counter:{w}" for w in range(WRITERS))
    for w in range(WRITERS):
        check_counter_events(by_aggregate[f"counter:{w}"], [w])
        assert counters.read_aggregate(f"counter:{w}") == by_aggregate[f"counter:{w}"]
    writers_interleaved = {stored.event.writer for stored in everything[: WRITERS * 5]}
    assert len(writers_interleaved) > 1


# --- upcasting through the store -------------------------------------------------------------


def test_events_stored_by_an_old_deployment_load_upcast_in_a_new_one(store: EventStore) -> None:
    old, new = EventRegistry(), EventRegistry()

    @old.register
    @dataclass(frozen=True, kw_only=True)
    class CustomerRenamed(DomainEvent):
        name: str

    @new.register
    @dataclass(frozen=True, kw_only=True)
    class CustomerRenamed(DomainEvent):  # noqa: F811 - the same type, deployed later at version 2
        schema_version = 2
        first_name: str
        last_name: str

    @new.upcaster("CustomerRenamed", 1)
    def split_name(payload: dict[str, Any]) -> dict[str, Any]:
        first, _, last = payload.pop("name").partition(" ")
        return {**payload, "first_name": first, "last_name": last}

    EventStore(store.engine, registry=old).append(
        [
            old.lookup("CustomerRenamed")(
                aggregate_id="customer:1", aggregate_version=1, actor="crm", name="Ada Lovelace"
            )
        ]
    )
    (event,) = EventStore(store.engine, registry=new).read_aggregate("customer:1")

    assert type(event).schema_version == 2
    assert event.payload() == {"first_name": "Ada", "last_name": "Lovelace"}


# --- any valid comment survives the store ----------------------------------------------------

#: Every code point, NUL and lone surrogates included (and drawn often: they are what breaks).
_any_text = st.text(alphabet=st.characters(exclude_categories=()) | st.sampled_from("\x00\ud800\udfff"), max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=_any_text,
    subject=_any_text,
    country=_any_text,
    score=st.integers(min_value=-(2**53), max_value=2**53) | st.floats(min_value=-1e15, max_value=1e15),
)
def test_every_comment_that_normalises_is_stored_and_read_back_unchanged(
    store: EventStore, body: str, subject: str, country: str, score: float
) -> None:
    """A comment either fails validation with a CommentError or the store keeps it exactly, on both backends.

    Floats are kept below 1e15: PostgreSQL's jsonb prints numbers without an exponent, so a float
    like 1e23 reads back as the int 10**23 there, a known difference this test is not about.
    """
    raw = {
        "id": f"c-{uuid.uuid4().hex}",
        "timestamp": "2024-05-01T09:30:00Z",
        "messages": [{"body": body, "subject": subject}],
        "user_properties": {"string:Country": country, "number:Score": score},
    }
    try:
        normalised = normalise_comment(raw)
    except CommentError:
        return
    message = Message(message_aggregate_id(INBOX, raw["id"]))
    message.ingest(normalised, actor=ACTOR)
    (event,) = message.collect()

    store.append([event])
    (back,) = store.read_aggregate(message.id)

    assert back == event
    assert back.comment == normalised
    assert content_hash(back.comment) == event.content_hash


# --- projections and replay ------------------------------------------------------------------


@dataclass
class History:
    """A small realistic history built with the domain aggregates, in three parts of append batches.

    The events are made once, so the very same events (ids, times) can go to more than one store.
    """

    parts: list[list[list[DomainEvent]]] = field(default_factory=lambda: [[], [], []])
    aggregates: dict[str, Aggregate] = field(default_factory=dict)

    def do(self, part: int, *changes: tuple[type[Aggregate], str, Callable[[Any], Any]]) -> list[Any]:
        """Run commands on aggregates and keep their new events as one append batch."""
        batch: list[DomainEvent] = []
        results = []
        for cls, aggregate_id, command in changes:
            aggregate = self.aggregates.setdefault(aggregate_id, cls(aggregate_id))
            results.append(command(aggregate))
            batch.extend(aggregate.collect())
        if batch:
            self.parts[part].append(batch)
        return results

    def append_to(self, store: EventStore, *parts: int) -> None:
        for part in parts:
            for batch in self.parts[part]:
                store.append(batch)
            time.sleep(0.005)  # so that the parts have different recorded_at


M1_V1, M1_V2 = comment("m1", "Where is my refund?"), comment("m1", "Where is my refund? It has been 3 weeks.")
M2, M3, M4 = comment("m2", "Card blocked"), comment("m3", "Late fee on my bill"), comment("m4", "chat: hi")


def uid(comment_id: str) -> str:
    return f"{INBOX}.{comment_id}"


@pytest.fixture
def history() -> History:
    h = History()
    project, inbox, chat = (
        project_aggregate_id("acme"),
        source_aggregate_id("acme", "inbox"),
        source_aggregate_id("acme", "chat"),
    )
    dataset = dataset_aggregate_id("acme", "support")

    # part 0: the catalogue, a taxonomy, four messages, one annotation
    h.do(0, (Project, project, lambda p: p.create(title="Acme", actor=ACTOR)))
    h.do(
        0,
        (Source, inbox, lambda s: s.create(source_id=INBOX, project_exists=True, kind="csv", actor=ACTOR)),
        (Source, chat, lambda s: s.create(source_id=CHAT, project_exists=True, actor=ACTOR)),
    )
    h.do(
        0,
        (
            Dataset,
            dataset,
            lambda d: d.create(dataset_id=DATASET, source_ids=[INBOX, CHAT], project_exists=True, actor=ACTOR),
        ),
    )
    h.do(
        0,
        (
            Dataset,
            dataset,
            lambda d: [d.define_label(n, actor=ACTOR) for n in ("Billing > Refund", "Billing > Fee", "Card")],
        ),
    )
    assert (
        h.do(
            0,
            (Message, message_aggregate_id(INBOX, "m1"), lambda m: m.ingest(M1_V1, actor="csv")),
            (Message, message_aggregate_id(INBOX, "m2"), lambda m: m.ingest(M2, actor="csv")),
            (Message, message_aggregate_id(INBOX, "m3"), lambda m: m.ingest(M3, actor="csv")),
            (Message, message_aggregate_id(CHAT, "m4"), lambda m: m.ingest(M4, actor="chat")),
        )
        == [NEW] * 4
    )
    h.do(0, (Annotation, annotation_aggregate_id(DATASET, uid("m1")), lambda a: a.label(["Card"], actor="trainer")))

    # part 1: a rename, an update, a deletion, an unchanged re-send, more annotations, a purge
    h.do(1, (Dataset, dataset, lambda d: d.rename_label("Billing", "Payments", actor=ACTOR)))
    assert h.do(
        1,
        (Message, message_aggregate_id(INBOX, "m1"), lambda m: m.ingest(M1_V2, actor="csv")),
        (Message, message_aggregate_id(INBOX, "m3"), lambda m: m.ingest(copy.deepcopy(M3), actor="csv")),
    ) == [UPDATED, UNCHANGED]
    h.do(1, (Message, message_aggregate_id(INBOX, "m2"), lambda m: m.delete(reason="spam", actor=ACTOR)))
    h.do(
        1,
        (
            Annotation,
            annotation_aggregate_id(DATASET, uid("m3")),
            lambda a: a.label(["Payments > Refund"], dismissed=["Card"], actor="trainer"),
        ),
        (
            Annotation,
            annotation_aggregate_id(DATASET, uid("m1")),
            lambda a: a.label(["Card", "Payments > Fee"], actor="trainer"),
        ),
    )
    h.do(1, (Source, chat, lambda s: s.purge(reason="gdpr", actor=ACTOR)))

    # part 2: a deleted message comes back, a model and a stream
    assert h.do(2, (Message, message_aggregate_id(INBOX, "m2"), lambda m: m.ingest(M2, actor="csv"))) == [NEW]
    model = ModelTrained(
        aggregate_id=f"model:{DATASET}",
        aggregate_version=1,
        actor="trainer",
        dataset_id=DATASET,
        version=1,
        labels=["Card", "Payments", "Payments > Fee", "Payments > Refund"],
        training_size=2,
        metrics={"map": 0.5},
        artifact_hash="ab" * 32,
    )
    h.parts[2].append([model])
    h.do(
        2,
        (
            Stream,
            stream_aggregate_id(DATASET, "refunds"),
            lambda s: s.create(
                stream_id="1111111111111111",
                model_version=1,
                label_thresholds=[{"name": "Payments > Refund", "threshold": 0.4}],
                actor=ACTOR,
            ),
        ),
    )
    return h


@pytest.fixture
def live(store: EventStore) -> EventStore:
    """The store as the application runs it: every read model follows the log by catch-up."""
    return store


def rows(store: EventStore, table: sa.Table, *columns: str) -> set[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return {tuple(r) for r in conn.execute(sa.select(*(table.c[c] for c in columns)))}


def checkpoint(store: EventStore) -> int | None:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(t.checkpoints.c.position).where(t.checkpoints.c.name == projections.CHECKPOINT)
        ).scalar()


def ingested_at(store: EventStore) -> dict[tuple[str, str], tuple[int, int]]:
    """(source, comment) -> (position, version) of its latest MessageIngested event."""
    latest: dict[tuple[str, str], tuple[int, int]] = {}
    for stored in store.read_all():
        if isinstance(stored.event, MessageIngested):
            latest[(stored.event.source_id, stored.event.comment_id)] = (
                stored.position,
                stored.event.aggregate_version,
            )
    return latest


def test_catching_up_builds_the_read_models_of_a_realistic_history(live: EventStore, history: History) -> None:
    history.append_to(live, 0)
    assert projections.catch_up(live) == live.last_position()
    assert checkpoint(live) == live.last_position()

    assert rows(live, t.projects, "name", "title") == {("acme", "Acme")}
    assert rows(live, t.sources, "source_id", "project", "name", "kind", "purged") == {
        (INBOX, "acme", "inbox", "csv", False),
        (CHAT, "acme", "chat", "unknown", False),
    }
    assert rows(live, t.datasets, "dataset_id", "project", "name", "has_sentiment") == {
        (DATASET, "acme", "support", False)
    }
    assert rows(live, t.dataset_sources, "source_id") == {(INBOX,), (CHAT,)}
    assert rows(live, t.labels, "name") == {("Billing",), ("Billing > Refund",), ("Billing > Fee",), ("Card",)}
    assert rows(live, t.messages, "source_id", "comment_id", "version", "deleted", "content_hash") == {
        (INBOX, "m1", 1, False, content_hash(M1_V1)),
        (INBOX, "m2", 1, False, content_hash(M2)),
        (INBOX, "m3", 1, False, content_hash(M3)),
        (CHAT, "m4", 1, False, content_hash(M4)),
    }
    with live.engine.connect() as conn:
        stamps = set(conn.execute(sa.select(t.messages.c.timestamp)).scalars())
    assert {s.replace(tzinfo=s.tzinfo or UTC) for s in stamps} == {datetime(2024, 5, 1, 7, 30, tzinfo=UTC)}

    history.append_to(live, 1)
    assert projections.catch_up(live) == sum(len(b) for b in history.parts[1])
    assert rows(live, t.labels, "name") == {("Payments",), ("Payments > Refund",), ("Payments > Fee",), ("Card",)}
    assert rows(live, t.sources, "source_id", "purged") == {(INBOX, False), (CHAT, True)}
    assert rows(live, t.messages, "source_id", "comment_id", "version", "deleted", "content_hash") == {
        (INBOX, "m1", 2, False, content_hash(M1_V2)),
        (INBOX, "m2", 2, True, content_hash(M2)),
        (INBOX, "m3", 1, False, content_hash(M3)),
    }
    assert _annotations(live) == {
        uid("m1"): ([("Card", None), ("Payments", None), ("Payments > Fee", None)], []),
        uid("m3"): ([("Payments", None), ("Payments > Refund", None)], ["Card"]),
    }

    history.append_to(live, 2)
    projections.catch_up(live)
    assert checkpoint(live) == live.last_position()
    assert rows(live, t.messages, "source_id", "comment_id", "version", "deleted") == {
        (INBOX, "m1", 2, False),
        (INBOX, "m2", 3, False),
        (INBOX, "m3", 1, False),
    }
    latest = ingested_at(live)
    assert rows(live, t.messages, "source_id", "comment_id", "position", "version") == {
        (*key, *latest[key]) for key in [(INBOX, "m1"), (INBOX, "m2"), (INBOX, "m3")]
    }
    assert rows(live, t.models, "dataset_id", "version", "training_size", "artifact_hash") == {
        (DATASET, 1, 2, "ab" * 32)
    }
    assert rows(live, t.streams, "stream_id", "dataset_id", "name", "model_version", "backlog") == {
        ("1111111111111111", DATASET, "refunds", 1, 0)
    }
    assert projections.catch_up(live) == 0


def _annotations(store: EventStore) -> dict[str, tuple[list[tuple[str, Any]], list[str]]]:
    with store.engine.connect() as conn:
        return {
            r.uid: ([(a["name"], a["sentiment"]) for a in r.assigned], list(r.dismissed))
            for r in conn.execute(sa.select(t.annotations))
        }


def test_a_replay_of_the_log_equals_the_live_read_models(live: EventStore, history: History) -> None:
    history.append_to(live, 0, 1, 2)
    projections.catch_up(live, batch_size=7)  # live batches differ from the replay's
    state = replay.digest(live.engine)

    rebuilt = replay.replay(live)

    assert rebuilt == state
    assert state.tables["messages"][0] == 3
    assert state.tables["labels"][0] == 4
    assert state.tables["checkpoints"][0] == 1


@pytest.mark.parametrize("how", ["delete-rows", "drop-tables"])
def test_read_models_dropped_with_their_checkpoint_come_back_the_same(
    live: EventStore, history: History, how: str
) -> None:
    history.append_to(live, 0, 1, 2)
    projections.catch_up(live)
    before = replay.digest(live.engine)

    if how == "delete-rows":
        with live.engine.begin() as conn:
            for table in reversed(t.projection_metadata.sorted_tables):
                conn.execute(table.delete())
    else:
        t.projection_metadata.drop_all(live.engine)
        t.projection_metadata.create_all(live.engine)
    emptied = replay.digest(live.engine)
    assert all(count == 0 for count, _ in emptied.tables.values())
    assert emptied != before

    assert projections.catch_up(live) == live.last_position()
    assert replay.digest(live.engine) == before


@pytest.fixture
def other_store(store: EventStore, tmp_path: Path) -> Iterator[EventStore]:
    """A second, empty store on the same backend as ``store``."""
    url = store.engine.url
    if is_sqlite(store.engine):
        other_url = f"sqlite:///{tmp_path / 'other.db'}"
    else:
        other_url = url.set(database=f"{url.database}_b").render_as_string(hide_password=False)
        ensure_database(other_url)
    engine = make_engine(other_url)
    try:
        migrate(engine)
        yield EventStore(engine)
    finally:
        engine.dispose()
        if not is_sqlite(other_url):
            drop_database(other_url)


def test_a_replay_until_a_moment_equals_a_store_that_only_saw_the_log_up_to_then(
    store: EventStore, other_store: EventStore, history: History
) -> None:
    history.append_to(store, 0)
    moment = list(store.read_all())[-1].recorded_at
    history.append_to(store, 1, 2)
    projections.catch_up(store)
    history.append_to(other_store, 0)
    projections.catch_up(other_store)

    assert replay.replay(store, until=moment) == replay.digest(other_store.engine)
    assert replay.replay(store, until=moment) != replay.digest(store.engine)
    assert replay.replay(store, until=datetime.now(UTC) + timedelta(days=1)) == replay.digest(store.engine)


def test_two_catch_ups_at_once_apply_each_event_exactly_once(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append([ProjectCreated(aggregate_id="project:acme", aggregate_version=1, actor=ACTOR, name="acme")])
    for start in range(0, 300, 50):
        batch = []
        for i in range(start, start + 50):
            message = Message(message_aggregate_id(INBOX, f"c{i}"))
            message.ingest(comment(f"c{i}", f"message {i}"), actor=ACTOR)
            batch.extend(message.collect())
        store.append(batch)
    total = store.last_position()
    applied_positions: list[int] = []
    guard = threading.Lock()
    original_apply, original_messages = projections.apply, projections._messages

    def counting(original: Callable[[sa.Connection, list[StoredEvent]], None]) -> Any:
        def count(conn: sa.Connection, batch: list[StoredEvent]) -> None:
            original(conn, batch)
            with guard:
                applied_positions.extend(s.position for s in batch)

        return count

    original_in_sql = projections._messages_in_sql

    def counting_in_sql(conn: sa.Connection, start: int, end: int) -> None:
        original_in_sql(conn, start, end)
        window = sa.select(t.events.c.position).where(projections.ingestions_in(start, end))
        with guard:
            applied_positions.extend(conn.execute(window).scalars())

    # Catch-up folds MessageIngested through the messages projection directly (on PostgreSQL in one
    # statement), the rest through apply.
    monkeypatch.setattr(projections, "apply", counting(original_apply))
    monkeypatch.setattr(projections, "_messages", counting(original_messages))
    monkeypatch.setattr(projections, "_messages_in_sql", counting_in_sql)
    start = threading.Barrier(2)
    # Two store objects, as two processes would have: threads of one share passes
    # (``SharedPasses``), and the checkpoint row's lock is what this test is about.
    other = EventStore(store.engine, store.registry, store.cipher)

    def runner(which: EventStore) -> int:
        start.wait()
        return projections.catch_up(which, batch_size=7)

    with ThreadPoolExecutor(2) as pool:
        counts = [f.result() for f in [pool.submit(runner, store), pool.submit(runner, other)]]

    assert sum(counts) == total
    assert sorted(applied_positions) == list(range(1, total + 1))
    assert checkpoint(store) == total
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.messages)).scalar_one() == 300
        assert conn.execute(sa.select(sa.func.count()).select_from(t.projects)).scalar_one() == 1


# --- schema ----------------------------------------------------------------------------------


def test_the_migration_builds_exactly_the_declared_tables(store: EventStore) -> None:
    """Autogenerate finds nothing to change between the migrated database and the metadata."""
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, [t.log_metadata, t.projection_metadata])
        current = context.get_current_revision()

    assert differences == []
    assert current == ScriptDirectory.from_config(alembic_config(store.engine)).get_current_head()
    declared = set(t.log_metadata.tables) | set(t.projection_metadata.tables)
    assert declared <= set(sa.inspect(store.engine).get_table_names())


def test_migrating_again_is_a_no_op_that_keeps_the_data(store: EventStore) -> None:
    store.append([defined("dataset:acme/a", 1)])
    migrate(store.engine)
    assert store.last_position() == 1
    assert store.read_aggregate("dataset:acme/a")[0].name == "L"


@pytest.mark.parametrize("number", [-0.0, 1e23, 1e308, 10**20, 2**63 - 1, -(2**63), 0.1, 5e-324])
def test_number_properties_read_back_with_the_content_hash_they_were_stored_with(
    store: EventStore, number: float
) -> None:
    message = Message(message_aggregate_id(INBOX, "n"))
    message.ingest(comment("n", "numbers", user_properties={"number:N": number}), actor=ACTOR)
    (event,) = message.collect()
    store.append([event])
    (back,) = store.read_aggregate(event.aggregate_id)
    assert content_hash(back.comment) == event.content_hash
    assert back.comment["user_properties"] == event.comment["user_properties"]


def test_snapshots_keep_the_newest_version_and_an_aggregate_reads_from_after_a_version(store: EventStore) -> None:
    store.append([defined("dataset:acme/a", v, name=f"L{v}") for v in range(1, 6)])
    store.append([defined("dataset:acme/b", 1)])
    later = store.read_aggregate("dataset:acme/a", after_version=3)
    assert [e.aggregate_version for e in later] == [4, 5] and [e.name for e in later] == ["L4", "L5"]
    assert store.read_aggregate("dataset:acme/a", after_version=5) == []
    with store.engine.begin() as conn:
        assert store.snapshot("dataset:acme/a", conn) is None
        store.save_snapshot("dataset:acme/a", 4, {"cursor": 4}, conn)
        store.save_snapshot("dataset:acme/a", 2, {"cursor": 2}, conn)  # older: a slower writer, ignored
    with store.engine.begin() as conn:
        assert store.snapshot("dataset:acme/a", conn) == (4, {"cursor": 4})
        store.save_snapshot("dataset:acme/a", 5, {"cursor": 5}, conn)
    with store.engine.connect() as conn:
        assert store.snapshot("dataset:acme/a", conn) == (5, {"cursor": 5})
        assert store.snapshot("dataset:acme/b", conn) is None

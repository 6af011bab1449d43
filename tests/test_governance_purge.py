"""Governance after a purge, against the real PostgreSQL (and RabbitMQ for the stream queues): keyed content
hashes, stream queues drained of the source, reads that say "purged" (410 in the API, an error in the CLI),
derived data gone, CLI stream fetches in the access log, and deletions in the audit trail with their reason."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
import sqlalchemy as sa
from api_helpers import Api, comment
from click.testing import CliRunner, Result
from conftest import AMQP_URL
from streams_helpers import DATASET, World, make_world, refund

from commine.bootstrap import open_store
from commine.broker.streams import (
    StreamPublisher,
    delete_purge_marks,
    delete_stream_topology,
    exception_queue,
    is_purged,
    purged_message,
    report_exception,
    stream_queue,
)
from commine.domain.comment import canonical, content_hash, normalise_comment
from commine.domain.message import Message, message_aggregate_id
from commine.handlers import export as exporting
from commine.handlers import streams
from commine.handlers.commands import (
    add_source_to_dataset,
    create_dataset,
    create_project,
    create_source,
    delete_source,
)
from commine.handlers.ingest import handle_ingest
from commine.handlers.purge import drain_purged_sources
from commine.handlers.training import train_dataset
from commine.integrations.ingest_client import make_body
from commine.persistence import mldata, replay
from commine.persistence import schema as t
from commine.persistence.encryption import ContentPurged, hash_owner
from commine.persistence.engine import make_engine, migrate
from commine.persistence.projections import catch_up
from commine.persistence.store import EventStore
from commine.scripts.cli import cli
from commine.scripts.sample_mail import generate
from commine.settings import Settings

#: A word that survives fastText's tokenizer, so it would show in a model's vocabulary.
MARKER = "zqxpurge5512"
ACTOR = "test"


def stored_hashes(store: EventStore, source_id: str) -> dict[str, str]:
    m = t.messages
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(m.c.comment_id, m.c.content_hash).where(m.c.source_id == source_id)).all()
    return dict(rows)


# --- keyed content hashes ---------------------------------------------------------------------------------------


def test_content_hashes_are_keyed_per_source_idempotent_and_shredded_by_the_purge(store: EventStore) -> None:
    create_project(store, "p", actor=ACTOR)
    first = create_source(store, "p/a", actor=ACTOR).source_id
    second = create_source(store, "p/b", actor=ACTOR).source_id
    same = comment("c1", f"the same words {MARKER}")
    for name in ("p/a", "p/b"):
        assert handle_ingest(store, make_body(name, [same], actor="csv")).new == 1
    catch_up(store)
    plain = hashlib.sha256(canonical(normalise_comment(same))).hexdigest()
    a, b = stored_hashes(store, first)["c1"], stored_hashes(store, second)["c1"]
    # Keyed: the hash of the known text confirms nothing, and the same text hashes apart in two sources.
    assert plain not in (a, b) and a != b and len(a) == 64
    with store.engine.connect() as conn:
        raw = conn.execute(sa.select(t.events.c.payload).where(t.events.c.type == "MessageIngested")).scalars().all()
    assert plain not in json.dumps(raw)
    # Dedup on re-sync still works: unchanged stays unchanged, new text is an update.
    assert handle_ingest(store, make_body("p/a", [same], actor="csv")).unchanged == 1
    assert handle_ingest(store, make_body("p/a", [comment("c1", "new words")], actor="csv")).updated == 1
    # A message stored with the plain hash of older versions still compares as unchanged.
    old = comment("legacy", "stored before keyed hashes")
    message = Message(message_aggregate_id(first, "legacy"))
    message.ingest(normalise_comment(old), actor="csv")
    store.append(message.collect())
    assert handle_ingest(store, make_body("p/a", [old], actor="csv")).unchanged == 1
    # The purge destroys the hash key with the data key: no one can recompute a hash of that source.
    delete_source(store, "p/a", reason="customer asked", actor=ACTOR)
    with store.engine.connect() as conn:
        key = conn.execute(sa.select(t.data_keys).where(t.data_keys.c.owner == hash_owner(first))).one()
        assert key.wrapped_key is None and key.destroyed_at is not None
        with pytest.raises(ContentPurged):
            store.cipher.content_hasher(conn, first)
        hasher = store.cipher.content_hasher(conn, second)
        assert hasher is not None and hasher(canonical(normalise_comment(same))) == b
    assert content_hash(normalise_comment(same)) == plain  # without a hasher: the plain digest, as before


# --- the API: 410 for a purged comment, deletions audited with actor and reason ------------------------------------


def test_api_reads_of_a_purged_comment_are_410_and_deletions_are_audited_with_their_reason(api: Api) -> None:
    source_id, _ = api.setup_source_and_dataset()
    api.ok("DELETE", "/api/v1/sources/acme/inbox/comments?id=c2&reason=GDPR%20erasure%20of%20c2")
    api.ok("DELETE", "/api/v1/datasets/acme/support?reason=project%20closed")
    assert api.ok("GET", "/api/v1/sources/acme/inbox/comments/c1")["comment"]["id"] == "c1"
    api.ok("DELETE", f"/api/v1/sources/id:{source_id}?reason=contract%20ended")
    message = api.fails(410, "GET", "/api/v1/sources/acme/inbox/comments/c1")
    assert "comment 'c1' of source acme/inbox was purged on " in message and "can no longer be read" in message
    assert "was purged" in api.fails(410, "GET", "/api/_private/sources/acme/inbox/comments")
    api.fails(404, "GET", "/api/v1/sources/acme/nowhere/comments/c1")  # never existed: still 404
    wanted = {"filter": {"event_types": ["MessageDeleted", "DatasetDeleted", "SourcePurged"]}}
    events = api.ok("POST", "/api/v1/audit_events/query", api.user("audit-read"), json=wanted)["audit_events"]
    got = [(e["event_type"], e["actor_user_id"], e["reason"], e["project_ids"]) for e in events]
    assert got == [
        ("MessageDeleted", "api:root", "GDPR erasure of c2", ["acme"]),
        ("DatasetDeleted", "api:root", "project closed", ["acme"]),
        ("SourcePurged", "api:root", "contract ended", ["acme"]),
    ]
    created = api.ok("POST", "/api/v1/audit_events/query", json={"filter": {"event_types": ["SourceCreated"]}})
    assert "reason" not in created["audit_events"][0]


@pytest.fixture
def api(pg_url: str) -> Iterator[Api]:
    engine = make_engine(pg_url)
    migrate(engine)
    yield Api(EventStore(engine))
    engine.dispose()


# --- the CLI: stream fetches audited, a purged comment says so -----------------------------------------------------


@pytest.fixture
def cli_env(service_settings: Settings) -> Iterator[tuple[dict[str, str], World]]:
    """A fetch stream over acme/inbox on PostgreSQL, and the environment of a CLI on that database."""
    store = open_store(service_settings)
    world = make_world(store)
    version = world.train()
    world.ingest(["m0", "m1"])
    world.predict(version, {"m0": refund(0.9), "m1": refund(0.9)})
    streams.create_stream(
        store, DATASET, "refunds", label_thresholds=[{"name": ["Billing", "Refund"], "threshold": 0.5}], actor="t"
    )
    env = {
        "COMMINE_DATABASE_URL": service_settings.database_url,
        "COMMINE_AMQP_URL": service_settings.amqp_url,
        "COMMINE_QUEUE_PREFIX": service_settings.queue_prefix,
        "COMMINE_HOME": str(service_settings.home),
        "COMMINE_TRANSFORMER": "0",
        "COMMINE_EMBEDDED": "",
    }
    yield env, world
    store.engine.dispose()


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_cli_reads_are_audited_and_a_purged_comment_says_purged(cli_env: tuple[dict[str, str], World]) -> None:
    env, _world = cli_env
    fetched = run(env, "streams", "fetch", DATASET, "refunds")
    assert fetched.exit_code == 0, fetched.output
    assert [r["comment"]["id"] for r in json.loads(fetched.output)["results"]] == ["m0", "m1"]
    shown = run(env, "sources", "comment", "acme/inbox", "m0")
    assert shown.exit_code == 0 and json.loads(shown.output)["messages"][0]["body"]["text"] == "message m0"
    purged = run(env, "sources", "delete", "acme/inbox", "--reason", "customer left", "--yes")
    assert purged.exit_code == 0 and "purged source acme/inbox" in purged.output
    gone = run(env, "sources", "comment", "acme/inbox", "m0")
    assert gone.exit_code != 0 and "comment 'm0' of source acme/inbox was purged on " in gone.output
    assert "message m0" not in gone.output
    after = json.loads(run(env, "streams", "fetch", DATASET, "refunds").output)
    assert after["results"] == []

    accesses = [json.loads(line) for line in run(env, "audit", "--type", "DataAccessed", "--json").output.splitlines()]
    assert [a["action"] for a in accesses] == [
        f"streams fetch {DATASET} refunds",
        "sources comment acme/inbox m0",
        "sources comment acme/inbox m0",
        f"streams fetch {DATASET} refunds",
    ]
    assert all(a["channel"] == "cli" and a["project"] == "acme" and a["actor"].startswith("user:") for a in accesses)
    trail = run(env, "audit", "--type", "SourcePurged").output.splitlines()
    assert len(trail) == 1 and "source:acme/inbox" in trail[0] and "reason: customer left" in trail[0]


# --- streams: nothing of a purged source reaches a robot -------------------------------------------------------------


@pytest.fixture
def world(pg_url: str, queue_prefix: str) -> Iterator[World]:
    engine = make_engine(pg_url)
    migrate(engine)
    world = make_world(EventStore(engine))
    create_source(world.store, "acme/other", actor=ACTOR)
    add_source_to_dataset(world.store, DATASET, "acme/other", actor=ACTOR)
    catch_up(world.store)
    yield world
    engine.dispose()


def ingest_other(world: World, ids: list[str]) -> None:
    comments = [
        {"id": i, "timestamp": "2026-05-01T09:30:00Z", "messages": [{"body": {"text": f"other {i}"}}]} for i in ids
    ]
    handle_ingest(world.store, make_body("acme/other", comments, actor=ACTOR))
    catch_up(world.store)


def other_uid(world: World, comment_id: str) -> str:
    with world.store.engine.connect() as conn:
        source_id = conn.execute(sa.select(t.sources.c.source_id).where(t.sources.c.name == "other")).scalar_one()
    return f"{source_id}.{comment_id}"


def queued(queue: str) -> list[dict[str, Any]]:
    """Everything ready on the queue, taken off it."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        bodies = []
        while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
            bodies.append(json.loads(got[2]))
        return bodies
    finally:
        connection.close()


#: The queue stream's model version, its queue, and a publisher onto it.
QueueStream = tuple[int, str, StreamPublisher]


@pytest.fixture
def queue_stream(world: World, queue_prefix: str) -> Iterator[QueueStream]:
    """A trained model and a queue-delivered stream "refunds" (Billing > Refund at 0.5) on it; its queues
    and the inbox's purge mark are deleted afterwards."""
    version = world.train()
    streams.create_stream(
        world.store,
        DATASET,
        "refunds",
        label_thresholds=[{"name": ["Billing", "Refund"], "threshold": 0.5}],
        delivery="queue",
        actor="user:ann",
    )
    queue = stream_queue(queue_prefix, world.dataset_id, "refunds")
    publisher = StreamPublisher(AMQP_URL, queue_prefix)
    try:
        yield version, queue, publisher
    finally:
        publisher.close()
        delete_stream_topology(AMQP_URL, queue_prefix, [queue])
        delete_purge_marks(AMQP_URL, queue_prefix, [world.source_id])


@pytest.mark.services
def test_a_purge_drains_the_source_from_the_stream_queue_and_keeps_the_rest_in_order(
    world: World, queue_prefix: str, queue_stream: QueueStream
) -> None:
    version, queue, publisher = queue_stream
    world.ingest(["m0", "m1"])
    ingest_other(world, ["o0"])
    world.ingest(["m2"])
    ingest_other(world, ["o1"])
    scores = {"m0": refund(0.9), "m1": refund(0.9), "m2": refund(0.9)}
    world.predict(version, scores)
    other = {other_uid(world, i): refund(0.9) for i in ("o0", "o1")}
    world.store.append([_predictions(world, version, other)])
    catch_up(world.store)
    assert streams.route_streams(world.store, publisher) == 5  # on the queue, text and all
    world.ingest(["m3"])  # an entry not yet routed when the purge comes
    world.predict(version, {"m3": refund(0.9)})

    delete_source(world.store, "acme/inbox", reason="erasure", actor=ACTOR)
    assert drain_purged_sources(world.store, AMQP_URL, queue_prefix) == 3
    assert drain_purged_sources(world.store, AMQP_URL, queue_prefix) == 0  # once per purge
    catch_up(world.store)
    assert streams.route_streams(world.store, publisher) == 0  # m3's entry went with the purge
    left = queued(queue)
    assert [body["comment"]["id"] for body in left] == ["o0", "o1"]  # the others, in their order
    assert "message m" not in json.dumps(left)


@pytest.mark.services
def test_a_message_a_robot_held_during_the_purge_comes_back_marked_and_the_exceptions_queue_is_drained(
    world: World, queue_prefix: str, queue_stream: QueueStream
) -> None:
    version, queue, publisher = queue_stream
    holder = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    robot = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    source_id = world.source_id
    try:
        world.ingest(["m0", "m1"])
        ingest_other(world, ["o0"])
        world.predict(version, {"m0": refund(0.9), "m1": refund(0.9)})
        world.store.append([_predictions(world, version, {other_uid(world, "o0"): refund(0.9)})])
        catch_up(world.store)
        assert streams.route_streams(world.store, publisher) == 3
        # One robot holds m0 unacknowledged through the purge; another reports m1 as an exception.
        held = holder.channel()
        method, _, body = held.basic_get(queue, auto_ack=False)
        assert method is not None and json.loads(body)["comment"]["id"] == "m0"
        reporter = robot.channel()
        reporter.confirm_delivery()
        method, properties, body = reporter.basic_get(queue, auto_ack=False)
        report_exception(reporter, queue_prefix, queue, method, properties, body, "no such order")
        assert streams.record_exceptions(world.store, AMQP_URL, queue_prefix) == 1

        delete_source(world.store, "acme/inbox", reason="erasure", actor=ACTOR)
        assert drain_purged_sources(world.store, AMQP_URL, queue_prefix) == 1  # m1, off the exceptions queue
        assert queued(exception_queue(queue)) == []
        holder.close()  # the robot dies without its ack: RabbitMQ puts m0 back on the queue

        channel = robot.channel()
        seen = []
        for _ in range(2):
            method, _, body = channel.basic_get(queue, auto_ack=False)
            assert method is not None and method.redelivered  # m0 given back, o0 put back by the drain
            seen.append((json.loads(body)["comment"]["id"], purged_message(robot, queue_prefix, method, body)))
            channel.basic_ack(method.delivery_tag)
        assert sorted(seen) == [("m0", True), ("o0", False)]  # only the purged source's message is dropped unread
        assert is_purged(robot, queue_prefix, source_id) and not is_purged(robot, queue_prefix, "0" * 16)
    finally:
        for connection in (holder, robot):
            if connection.is_open:
                connection.close()


def _predictions(world: World, version: int, scores: dict[str, dict[str, float]]) -> Any:
    import uuid

    from commine.events import PredictionsRecorded

    return PredictionsRecorded(
        aggregate_id=f"predictions:{world.dataset_id}/{version}/{uuid.uuid4().hex}",
        aggregate_version=1,
        actor="predictor",
        dataset_id=world.dataset_id,
        model_version=version,
        predictions=[{"uid": uid, "labels": labels} for uid, labels in scores.items()],
    )


@pytest.mark.services
def test_fetch_never_returns_a_purged_message_the_read_models_still_hold(world: World) -> None:
    version = world.train()
    world.ingest(["m0", "m1"])
    world.predict(version, {"m0": refund(0.9), "m1": refund(0.9)})
    thresholds = [{"name": ["Billing", "Refund"], "threshold": 0.5}]
    streams.create_stream(world.store, DATASET, "refunds", label_thresholds=thresholds, actor="user:ann")
    assert len(streams.fetch(world.store, DATASET, "refunds")["results"]) == 2
    # The purge is committed, its key destroyed; the read models have not caught up with it yet.
    delete_source(world.store, "acme/inbox", reason="erasure", actor=ACTOR)
    with world.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.stream_entries)).scalar_one() == 2
    assert streams.fetch(world.store, DATASET, "refunds")["results"] == []


# --- derived data: nothing of the purged source is left ------------------------------------------------------------


def scan_tables(engine: sa.Engine, needle: str) -> set[str]:
    """Tables (public schema) with a row whose text holds ``needle``."""
    found = set()
    with engine.connect() as conn:
        names = conn.execute(
            sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        ).scalars()
        for name in list(names):
            query = sa.text(f'SELECT count(*) FROM "{name}" AS r WHERE position(:n IN r::text) > 0')
            if conn.execute(query, {"n": needle}).scalar_one():
                found.add(name)
    return found


#: Where a purged source's id may stay: the log and its bookkeeping, the catalogue, the key tombstones.
ALLOWED = {"events", "sources", "dataset_sources", "data_keys", "ingest_receipts"}


@pytest.mark.services
def test_after_a_purge_no_derived_data_holds_anything_of_the_source(pg_url: str, tmp_path: Path) -> None:
    engine = make_engine(pg_url)
    migrate(engine)
    try:
        store = EventStore(engine)
        create_project(store, "acme", actor=ACTOR)
        doomed = create_source(store, "acme/doomed", actor=ACTOR).source_id
        create_source(store, "acme/kept", actor=ACTOR)
        dataset_id = create_dataset(store, "acme/ds", sources=["acme/doomed", "acme/kept"], actor=ACTOR).dataset_id
        samples = [m for m in generate(400, seed=5) if m.label is not None][:240]
        for name, part in (("acme/doomed", samples[:120]), ("acme/kept", samples[120:])):
            comments = []
            for m in part:
                text = m.comment["messages"][0]["body"]["text"]
                body = f"{text} {MARKER}" if name == "acme/doomed" else text
                comments.append({**m.comment, "messages": [{"body": {"text": body}}]})
            labels = {m.comment["id"]: [m.label] for m in part[:90]}
            handle_ingest(store, make_body(name, comments, actor="csv", dataset="acme/ds", annotations=labels))
        catch_up(store)
        train_dataset(store, dataset_id, actor="trainer")
        catch_up(store)
        with engine.connect() as conn:
            first = mldata.model_row(conn, dataset_id).artifact_hash
            assert MARKER.encode() in mldata.load_artifact(conn, first)  # the first model learned the marker
        assert {"embeddings", "predictions", "annotations", "messages"} <= scan_tables(engine, doomed)

        delete_source(store, "acme/doomed", reason="erasure", actor=ACTOR)
        catch_up(store)
        train_dataset(store, dataset_id, actor="trainer")  # what the retrain follower asks for
        catch_up(store)

        assert scan_tables(engine, doomed) <= ALLOWED
        with engine.connect() as conn:
            newest = mldata.model_row(conn, dataset_id)
            assert newest.version == 2 and MARKER.encode() not in mldata.load_artifact(conn, newest.artifact_hash)
            assert MARKER not in json.dumps(newest.metrics)
            with pytest.raises(LookupError):  # the version that learned from the purged text is gone
                mldata.load_artifact(conn, first)
            assert conn.execute(sa.select(sa.func.count()).select_from(t.models)).scalar_one() == 2  # registry stays
        plan = exporting.plan(store, dataset_id)
        lines = [exporting.jsonl_line(record) for record in exporting.records(store, plan)]
        assert len(lines) == 120 and MARKER not in "".join(lines) and doomed not in "".join(lines)
        live, rebuilt = replay.verify(store)
        assert live.total == rebuilt.total
    finally:
        engine.dispose()

"""Ingestion end to end on the real RabbitMQ and PostgreSQL: the CLI, worker processes and the log.

Every test runs on its own database and queue prefix (``service_env``), starts its workers as
``commine worker`` subprocesses and stops (or kills) them in the fixture teardown.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from commine.bootstrap import open_store
from commine.broker.dramatiq_broker import read_dead_letters
from commine.broker.topology import INGEST, declare_events_exchange, events_exchange, queue_name
from commine.handlers.commands import create_dataset, create_project, create_source
from commine.integrations.ingest_client import make_body
from commine.persistence import schema as t
from commine.persistence.engine import make_engine
from commine.persistence.projections import catch_up
from commine.persistence.store import EventStore
from commine.scripts.sample_mail import generate, to_csv_rows
from commine.settings import Settings

pytestmark = pytest.mark.services

COMMINE = [sys.executable, "-m", "commine"]
SOURCE = "p/s"
CSV_OPTIONS = ["--subject-column", "subject", "--from-column", "from"]
GOOD_TIME = "2024-05-01T09:30:00Z"


# --- helpers ---------------------------------------------------------------------------------


def commine(
    env: dict[str, str], *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run one ``commine`` command; with ``check``, fail the test (showing its output) unless it exits 0."""
    result = subprocess.run([*COMMINE, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(
            f"commine {' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
        )
    return result


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    failure: Callable[[], str],
    workers: list[subprocess.Popen[bytes]] | None = None,
) -> None:
    """Poll ``condition`` until it holds; fail with ``failure()`` after ``timeout`` or if a worker dies."""
    deadline = time.monotonic() + timeout
    while not condition():
        for process in workers or []:
            if process.poll() is not None:
                pytest.fail(f"worker {process.pid} exited with code {process.returncode}: {failure()}")
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f} s: {failure()}")
        time.sleep(0.02)


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def sample_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    return to_csv_rows(generate(count, seed=seed))


def scalar(engine: Engine, query: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(query).scalar()


def receipt_count(engine: Engine) -> int:
    return int(scalar(engine, sa.select(sa.func.count()).select_from(t.ingest_receipts)))


def ingested_events(engine: Engine) -> int:
    query = sa.select(sa.func.count()).where(t.events.c.type == "MessageIngested")
    return int(scalar(engine, query))


def ingested_aggregates(engine: Engine) -> int:
    query = sa.select(sa.func.count(sa.distinct(t.events.c.aggregate_id))).where(t.events.c.type == "MessageIngested")
    return int(scalar(engine, query))


def stored_comment_ids(store: EventStore, source_id: str) -> set[str]:
    """Comment ids in the ``messages`` read model, brought up to the end of the log first."""
    catch_up(store)
    with store.engine.connect() as conn:
        query = sa.select(t.messages.c.comment_id).where(t.messages.c.source_id == source_id)
        return set(conn.execute(query).scalars())


def dramatiq_message(prefix: str, actor: str, args: list[Any]) -> bytes:
    """A message as dramatiq puts it on the wire, to publish with plain pika."""
    return json.dumps(
        {
            "queue_name": queue_name(prefix, INGEST),
            "actor_name": actor,
            "args": args,
            "kwargs": {},
            "options": {},
            "message_id": str(uuid.uuid4()),
            "message_timestamp": int(time.time() * 1000),
        }
    ).encode()


def queue_exists(amqp_url: str, name: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()


def status_json(env: dict[str, str]) -> dict[str, Any]:
    return json.loads(commine(env, "status", "--json").stdout)


def source_status(env: dict[str, str], project: str = "p", source: str = "s") -> dict[str, Any]:
    projects = {p["name"]: p for p in status_json(env)["projects"]}
    assert project in projects, f"project {project} missing from status: {list(projects)}"
    sources = {s["name"]: s for s in projects[project]["sources"]}
    assert source in sources, f"source {source} missing from status: {list(sources)}"
    return sources[source]


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def store(service_settings: Settings) -> Iterator[EventStore]:
    """The test database's event store, migrated before any subprocess starts on it."""
    store = open_store(service_settings)
    try:
        yield store
    finally:
        store.engine.dispose()


@pytest.fixture
def db(store: EventStore) -> Engine:
    return store.engine


@pytest.fixture
def source_id(store: EventStore) -> str:
    """Project ``p`` with source ``p/s``; returns the source id."""
    create_project(store, "p", actor="test")
    return create_source(store, SOURCE, actor="test").source_id


@pytest.fixture
def workers(service_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``commine worker`` subprocesses; every one still running is stopped at teardown.

    ``start(*options, ready=n)`` returns once the log shows ``n`` consuming processes. Each worker
    leads its own process group, so that a worker that ignores SIGTERM is killed with its children.
    """
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(*options: str, ready: int = 1) -> subprocess.Popen[bytes]:
        log = tmp_path / f"worker-{len(started)}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(
                [*COMMINE, "worker", *options],
                env=service_env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append((process, log))

        def consuming() -> bool:
            text = log.read_text(errors="replace")
            if "Traceback" in text:
                pytest.fail(f"a worker process crashed while starting; the log:\n{text[-3000:]}")
            return text.count(" consuming ") >= ready

        wait_until(
            consuming,
            timeout=60,
            failure=lambda: f"not {ready} worker(s) consuming; the log:\n{log.read_text(errors='replace')[-3000:]}",
            workers=[process],
        )
        return process

    try:
        yield start
    finally:
        for process, _log in started:
            if process.poll() is None:
                process.terminate()
        for process, log in started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
                print(f"worker {process.pid} ignored SIGTERM; log:\n{log.read_text(errors='replace')[-2000:]}")


@pytest.fixture
def amqp(service_settings: Settings) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(service_settings.amqp_url))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


# --- tests -----------------------------------------------------------------------------------


def test_a_ten_thousand_message_csv_is_stored_exactly_once_and_uploading_it_again_adds_nothing(
    service_env: dict[str, str], store: EventStore, source_id: str, workers: Callable[..., Any], tmp_path: Path
) -> None:
    db = store.engine
    path = write_csv(tmp_path / "mail.csv", sample_rows(10_000))
    workers()

    first = commine(service_env, "upload", SOURCE, str(path), *CSV_OPTIONS)

    assert "10000 new, 0 updated, 0 unchanged, 0 rejected" in first.stdout, first.stdout
    assert source_status(service_env)["messages"] == 10_000
    assert ingested_events(db) == 10_000
    assert ingested_aggregates(db) == 10_000
    assert len(stored_comment_ids(store, source_id)) == 10_000

    second = commine(service_env, "upload", SOURCE, str(path), *CSV_OPTIONS)

    assert "0 new, 0 updated, 10000 unchanged, 0 rejected" in second.stdout, second.stdout
    assert source_status(service_env)["messages"] == 10_000
    assert ingested_events(db) == 10_000
    assert ingested_aggregates(db) == 10_000


def test_a_worker_killed_in_the_middle_of_ingestion_loses_and_doubles_nothing(
    service_env: dict[str, str], store: EventStore, source_id: str, workers: Callable[..., Any], tmp_path: Path
) -> None:
    db = store.engine
    rows = sample_rows(10_000, seed=1)
    path = write_csv(tmp_path / "mail.csv", rows)
    # Small batches, so that the kill lands while most of them are still queued.
    published = commine(
        {**service_env, "COMMINE_INGEST_BATCH_SIZE": "50"}, "upload", SOURCE, str(path), *CSV_OPTIONS, "--no-wait"
    )
    assert "published 200 batch(es)" in published.stdout, published.stdout

    # Kill two workers part-way (a third of the batches done, then two thirds), let a third finish.
    for target in (60, 130):
        worker = workers()
        wait_until(
            lambda target=target: receipt_count(db) >= target,
            timeout=120,
            failure=lambda target=target: f"only {receipt_count(db)} of 200 batches stored, waiting for {target}",
            workers=[worker],
        )
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=20)
        killed_at = receipt_count(db)
        assert killed_at < 200, "the worker stored every batch before it could be killed; the test proves nothing"

    last = workers()
    wait_until(
        lambda: receipt_count(db) == 200,
        timeout=180,
        failure=lambda: f"{receipt_count(db)} of 200 batches stored (last kill at {killed_at})",
        workers=[last],
    )
    catch_up(store)

    expected = {row["id"] for row in rows}
    assert stored_comment_ids(store, source_id) == expected, "comments lost or invented"
    with db.connect() as conn:
        doubled = conn.execute(
            sa.select(t.events.c.aggregate_id)
            .where(t.events.c.type == "MessageIngested")
            .group_by(t.events.c.aggregate_id)
            .having(sa.func.count() > 1)
        ).all()
        positions = conn.execute(
            sa.select(sa.func.count(), sa.func.min(t.events.c.position), sa.func.max(t.events.c.position))
        ).one()
        new_in_receipts = conn.execute(sa.select(sa.func.sum(t.ingest_receipts.c.new))).scalar()
    assert doubled == [], f"{len(doubled)} comments ingested more than once"
    assert ingested_events(db) == 10_000
    # Project, source and one event per comment, at positions 1..N without a gap.
    assert tuple(positions) == (10_002, 1, 10_002)
    assert new_in_receipts == 10_000


def test_malformed_messages_are_dead_lettered_with_their_reason_and_the_worker_goes_on(
    service_env: dict[str, str],
    service_settings: Settings,
    store: EventStore,
    source_id: str,
    workers: Callable[..., Any],
    amqp: pika.adapters.blocking_connection.BlockingChannel,
) -> None:
    db = store.engine
    prefix = service_settings.queue_prefix
    ingest_queue = queue_name(prefix, INGEST)
    worker = workers()
    good = make_body(SOURCE, [s.comment for s in generate(5, seed=3)], actor="integration:test")
    # The worker's consumers declare the queue; a message published before would be dropped.
    wait_until(
        lambda: queue_exists(service_settings.amqp_url, ingest_queue),
        timeout=30,
        failure=lambda: f"the worker did not declare {ingest_queue}",
        workers=[worker],
    )

    amqp.basic_publish("", ingest_queue, b"this is {not json")
    amqp.basic_publish("", ingest_queue, dramatiq_message(prefix, INGEST, [{"batch_id": "b-1", "source": SOURCE}]))
    amqp.basic_publish("", ingest_queue, dramatiq_message(prefix, "no_such_actor", [good]))
    amqp.basic_publish("", ingest_queue, dramatiq_message(prefix, INGEST, [good]))

    def letters() -> list[Any]:
        return read_dead_letters(service_settings.amqp_url, ingest_queue)

    wait_until(
        lambda: receipt_count(db) == 1 and len(letters()) == 3,
        timeout=60,
        failure=lambda: f"{receipt_count(db)} receipt(s), dead letters: {[d.reason for d in letters()]}",
        workers=[worker],
    )
    assert stored_comment_ids(store, source_id) == {c["id"] for c in good["comments"]}
    reasons = sorted(letter.reason for letter in letters())
    assert all(letter.queue == f"{ingest_queue}.XQ" for letter in letters())
    assert any("MalformedMessage" in r and "comments" in r for r in reasons), reasons
    assert any("unknown actor 'no_such_actor'" in r for r in reasons), reasons
    assert any("not a dramatiq message" in r for r in reasons), reasons
    assert b"this is {not json" in {letter.body for letter in letters()}
    assert worker.poll() is None, "the worker died on a malformed message"

    shown = commine(service_env, "deadletters")
    assert "3 dead letter(s) shown" in shown.stdout, shown.stdout
    assert "unknown actor 'no_such_actor'" in shown.stdout
    assert "comments" in shown.stdout
    # Peeking leaves them in place.
    assert len(letters()) == 3


def test_a_message_whose_arguments_do_not_fit_the_actor_is_dead_lettered_at_once_not_retried(
    service_settings: Settings, store: EventStore, source_id: str, workers: Callable[..., Any]
) -> None:
    prefix = service_settings.queue_prefix
    ingest_queue = queue_name(prefix, INGEST)
    worker = workers()
    good = make_body(SOURCE, [s.comment for s in generate(3, seed=6)], actor="integration:test")
    wait_until(
        lambda: queue_exists(service_settings.amqp_url, ingest_queue),
        timeout=30,
        failure=lambda: f"the worker did not declare {ingest_queue}",
        workers=[worker],
    )
    connection = pika.BlockingConnection(pika.URLParameters(service_settings.amqp_url))
    try:
        channel = connection.channel()
        channel.basic_publish("", ingest_queue, dramatiq_message(prefix, INGEST, [good, "extra"]))
        channel.basic_publish("", ingest_queue, dramatiq_message(prefix, INGEST, []))
    finally:
        connection.close()

    def reasons() -> list[str]:
        return [letter.reason for letter in read_dead_letters(service_settings.amqp_url, ingest_queue)]

    # Retried as if transient, they would reach the dead-letter queue only after about ten minutes.
    wait_until(
        lambda: len(reasons()) == 2,
        timeout=30,
        failure=lambda: f"dead letters so far: {reasons()}",
        workers=[worker],
    )
    assert all("arguments do not fit actor 'ingest'" in r for r in reasons()), reasons()
    assert receipt_count(store.engine) == 0


def test_the_relay_publishes_every_ingested_message_as_a_json_event_on_the_topic_exchange(
    service_env: dict[str, str],
    service_settings: Settings,
    db: Engine,
    source_id: str,
    workers: Callable[..., Any],
    amqp: pika.adapters.blocking_connection.BlockingChannel,
    tmp_path: Path,
) -> None:
    prefix = service_settings.queue_prefix
    declare_events_exchange(amqp, prefix)
    subscriber = amqp.queue_declare("", exclusive=True).method.queue
    amqp.queue_bind(subscriber, events_exchange(prefix), routing_key="message.#")
    path = write_csv(tmp_path / "mail.csv", sample_rows(1000, seed=2))
    workers()

    summary = commine(service_env, "upload", SOURCE, str(path), *CSV_OPTIONS)
    assert "1000 new" in summary.stdout, summary.stdout

    received: list[dict[str, Any]] = []

    def drain() -> bool:
        while True:
            method, properties, body = amqp.basic_get(subscriber, auto_ack=True)
            if method is None:
                return len(received) >= 1000
            assert properties.content_type == "application/json"
            batch = json.loads(body)
            assert isinstance(batch, list) and batch, "a relayed message is a JSON array of events"
            received.extend({"routing_key": method.routing_key, **event} for event in batch)

    wait_until(drain, timeout=60, failure=lambda: f"the subscriber received {len(received)} of 1000 events")

    assert len(received) == 1000, "events relayed more than once"
    assert {e["type"] for e in received} == {"MessageIngested"}
    assert {e["routing_key"] for e in received} == {"message.MessageIngested"}
    assert len({e["event_id"] for e in received}) == 1000
    assert len({e["aggregate_id"] for e in received}) == 1000
    assert all(e["aggregate_id"].startswith(f"message:{source_id}/") for e in received)
    with db.connect() as conn:
        stored = dict(
            conn.execute(
                sa.select(t.events.c.position, t.events.c.event_id).where(t.events.c.type == "MessageIngested")
            ).all()
        )
    assert {e["position"]: e["event_id"] for e in received} == {p: str(i) for p, i in stored.items()}


def test_bad_csv_rows_are_reported_by_line_and_column_and_every_good_row_is_stored(
    service_env: dict[str, str], store: EventStore, source_id: str, workers: Callable[..., Any], tmp_path: Path
) -> None:
    good = [f"g{i}".encode() for i in range(1, 21)]
    lines = [b"id,timestamp,subject,from,text"]
    lines += [b"%s,%s,Hello,a@example.com,first text of %s" % (g, GOOD_TIME.encode(), g) for g in good[:10]]
    lines += [
        b",%s,Hello,a@example.com,no id here" % GOOD_TIME.encode(),  # line 12
        b"b2,yesterday-ish,Hello,a@example.com,bad time",  # line 13
        b"b3,%s,Hello,a@example.com,bad \xff\xfe bytes" % GOOD_TIME.encode(),  # line 14
        b"b4,%s,Hello,a@example.com,%s" % (GOOD_TIME.encode(), b"x" * 65_537),  # line 15
        b"g1,%s,Hello,a@example.com,a second g1" % GOOD_TIME.encode(),  # line 16
    ]
    lines += [b"%s,%s,Hello,a@example.com,first text of %s" % (g, GOOD_TIME.encode(), g) for g in good[10:]]
    path = tmp_path / "bad.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    workers()

    result = commine(service_env, "upload", SOURCE, str(path), *CSV_OPTIONS)

    assert "20 new, 0 updated, 0 unchanged, 5 rejected" in result.stdout, result.stdout
    errors = result.stderr
    assert f"{path}: line 12, column id: is required" in errors, errors
    assert f"{path}: line 13, column timestamp: not an ISO-8601" in errors, errors
    assert f"{path}: line 14, column text: not valid UTF-8" in errors, errors
    assert f"{path}: line 15, column text: is 65537 characters long; at most 65536" in errors, errors
    assert f"{path}: line 16, column id: duplicate id 'g1' (first seen on line 2)" in errors, errors
    assert stored_comment_ids(store, source_id) == {g.decode() for g in good}
    # The first g1 is the one stored: sending it again changes nothing, sending the duplicate would.
    again = tmp_path / "again.csv"
    again.write_bytes(b"\n".join([lines[0], lines[1]]) + b"\n")
    result = commine(service_env, "upload", SOURCE, str(again), *CSV_OPTIONS)
    assert "0 new, 0 updated, 1 unchanged, 0 rejected" in result.stdout, "the duplicate row replaced the first"


def test_replay_equals_the_live_state_and_until_shows_the_state_between_two_uploads(
    service_env: dict[str, str], source_id: str, workers: Callable[..., Any], tmp_path: Path
) -> None:
    rows = sample_rows(500, seed=4)
    first = write_csv(tmp_path / "first.csv", rows[:200])
    second = write_csv(tmp_path / "second.csv", rows[200:])
    workers()
    assert "200 new" in commine(service_env, "upload", SOURCE, str(first), *CSV_OPTIONS).stdout
    between = datetime.now(UTC)
    time.sleep(0.01)  # recorded_at of the second upload is strictly after ``between``
    assert "300 new" in commine(service_env, "upload", SOURCE, str(second), *CSV_OPTIONS).stdout

    text = commine(service_env, "replay")
    assert "rebuild equals the live state" in text.stdout, text.stdout
    live = json.loads(commine(service_env, "replay", "--json").stdout)
    assert live["matches_live"] is True
    assert live["tables"]["messages"]["rows"] == 500
    assert live["tables"]["sources"]["rows"] == 1

    past = json.loads(commine(service_env, "replay", "--until", between.isoformat(), "--json").stdout)
    assert past["until"] == between.isoformat()
    assert past["tables"]["messages"]["rows"] == 200
    assert past["tables"]["projects"]["rows"] == 1
    assert past["digest"] != live["digest"]
    assert "matches_live" not in past


def test_status_json_shows_projects_sources_and_datasets_with_their_counts(
    service_env: dict[str, str], store: EventStore, workers: Callable[..., Any], tmp_path: Path
) -> None:
    create_project(store, "p", actor="test")
    create_project(store, "q", actor="test")
    inbox = create_source(store, "p/inbox", actor="test")
    create_source(store, "p/chat", actor="test")
    create_source(store, "q/empty", actor="test")
    support = create_dataset(store, "p/support", sources=["p/inbox", "p/chat"], actor="test")
    rows = sample_rows(300, seed=5)
    labelled = sum(1 for row in rows if row["label"])
    inbox_csv = write_csv(tmp_path / "inbox.csv", rows[:250])
    chat_csv = write_csv(tmp_path / "chat.csv", rows[250:])
    workers()
    commine(
        service_env,
        "upload",
        "p/inbox",
        str(inbox_csv),
        *CSV_OPTIONS,
        "--dataset",
        "p/support",
        "--label-column",
        "label",
    )
    commine(
        service_env,
        "upload",
        "p/chat",
        str(chat_csv),
        *CSV_OPTIONS,
        "--dataset",
        "p/support",
        "--label-column",
        "label",
    )

    state = status_json(service_env)

    assert state["projected_position"] > 300
    projects = {p["name"]: p for p in state["projects"]}
    assert set(projects) == {"p", "q"}
    assert {s["name"]: s["messages"] for s in projects["p"]["sources"]} == {"inbox": 250, "chat": 50}
    assert {s["name"]: s["messages"] for s in projects["q"]["sources"]} == {"empty": 0}
    assert next(s["id"] for s in projects["p"]["sources"] if s["name"] == "inbox") == inbox.source_id
    assert projects["q"]["datasets"] == []
    [dataset] = projects["p"]["datasets"]
    assert dataset["name"] == "support"
    assert dataset["id"] == support.dataset_id
    assert dataset["sources"] == ["p/chat", "p/inbox"]
    assert dataset["messages"] == 300
    assert dataset["annotations"] == labelled
    assert dataset["model_version"] is None
    text = commine(service_env, "status").stdout
    assert "source  inbox" in text and "250 messages" in text, text


def test_several_worker_processes_started_together_on_a_fresh_database_all_start_consuming(
    workers: Callable[..., Any], service_settings: Settings
) -> None:
    # The database exists but has no schema yet: every child would migrate it at the same moment.
    parent = workers("--processes", "3", ready=3)

    assert parent.poll() is None
    engine = make_engine(service_settings.database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()


def test_uploading_with_no_worker_running_fails_after_its_timeout_with_a_hint(
    service_env: dict[str, str], source_id: str, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "mail.csv", sample_rows(10))

    result = commine(service_env, "upload", SOURCE, str(path), *CSV_OPTIONS, "--timeout", "2", check=False)

    assert result.returncode == 1
    assert "1 of 1 batches not stored" in result.stderr, result.stderr
    assert "is `commine worker` running?" in result.stderr, result.stderr


def test_uploading_into_a_source_that_does_not_exist_fails_with_a_clear_message(
    service_env: dict[str, str], source_id: str, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "mail.csv", sample_rows(10))

    result = commine(service_env, "upload", "p/nowhere", str(path), check=False)

    assert result.returncode == 1
    assert "source p/nowhere does not exist" in result.stderr, result.stderr

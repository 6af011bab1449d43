"""Per-stream RabbitMQ queues against the real RabbitMQ and PostgreSQL: routing in order, competing
robots, redelivery after a robot dies, rejects that become exceptions."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from conftest import AMQP_URL
from streams_helpers import DATASET, World, make_world, refund

from commine.broker.streams import (
    StreamPublisher,
    delete_stream_topology,
    exception_queue,
    report_exception,
    stream_queue,
)
from commine.events import ExceptionReported, StreamAdvanced
from commine.handlers import streams
from commine.persistence.engine import make_engine, migrate
from commine.persistence.store import EventStore

pytestmark = pytest.mark.services
THRESHOLDS = [{"name": ["Billing", "Refund"], "threshold": 0.5}]


@pytest.fixture
def world(pg_url: str, queue_prefix: str) -> Iterator[World]:
    engine = make_engine(pg_url)
    migrate(engine)
    world = make_world(EventStore(engine))
    yield world
    engine.dispose()


@pytest.fixture
def publisher(world: World, queue_prefix: str) -> Iterator[StreamPublisher]:
    publisher = StreamPublisher(AMQP_URL, queue_prefix)
    yield publisher
    publisher.close()
    delete_stream_topology(AMQP_URL, queue_prefix, [stream_queue(queue_prefix, world.dataset_id, "refunds")])


def queue_of(world: World, publisher: StreamPublisher) -> str:
    return stream_queue(publisher.prefix, world.dataset_id, "refunds")


def make_stream(world: World, count: int, qualifying: set[int]) -> None:
    version = world.train()
    streams.create_stream(
        world.store, DATASET, "refunds", label_thresholds=THRESHOLDS, delivery="queue", actor="user:ann"
    )
    world.ingest([f"m{i:03d}" for i in range(count)])
    world.predict(version, {f"m{i:03d}": refund(0.9 if i in qualifying else 0.1) for i in range(count)})


def drain(queue: str, *, ack: bool = True) -> list[dict[str, Any]]:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        bodies = []
        while True:
            method, _properties, body = channel.basic_get(queue, auto_ack=ack)
            if method is None:
                return bodies
            bodies.append(json.loads(body))
    finally:
        connection.close()


def ids(bodies: list[dict[str, Any]]) -> list[str]:
    return [body["comment"]["id"] for body in bodies]


def test_exactly_the_qualifying_messages_reach_the_queue_in_order(world: World, publisher: StreamPublisher) -> None:
    qualifying = {0, 3, 4, 7, 11, 12, 19}
    make_stream(world, 20, qualifying)

    assert streams.route_streams(world.store, publisher, batch_size=6) == len(qualifying)
    assert streams.route_streams(world.store, publisher) == 0  # nothing twice

    bodies = drain(queue_of(world, publisher))
    assert ids(bodies) == [f"m{i:03d}" for i in sorted(qualifying)]
    assert [int(b["sequence_id"]) for b in bodies] == sorted(int(b["sequence_id"]) for b in bodies)
    assert bodies[0]["labels"] == [{"name": ["Billing", "Refund"], "probability": 0.9}]
    assert bodies[0]["comment"]["uid"] == world.uid("m000")
    # The router delivered: the cursor is past everything, in the log, and the backlog is empty.
    advances = [s.event for s in world.store.read_all() if isinstance(s.event, StreamAdvanced)]
    assert advances and all(a.actor == "commine-router" for a in advances)
    assert streams.get_stream(world.store, DATASET, "refunds")["backlog"] == 0


def test_a_threshold_change_reroutes_what_is_not_yet_pushed(world: World, publisher: StreamPublisher) -> None:
    version = world.train()
    streams.create_stream(
        world.store, DATASET, "refunds", label_thresholds=THRESHOLDS, delivery="queue", actor="user:ann"
    )
    world.ingest(["a", "b"])
    world.predict(version, {"a": refund(0.9), "b": refund(0.3)})
    streams.route_streams(world.store, publisher)
    world.ingest(["c", "d"])
    world.predict(version, {"c": refund(0.3), "d": refund(0.9)})
    streams.change_threshold(world.store, DATASET, "refunds", "Billing > Refund", 0.2, actor="user:bob")
    streams.route_streams(world.store, publisher)

    # b was passed over before the change and stays passed; c, not yet pushed, now qualifies.
    assert ids(drain(queue_of(world, publisher))) == ["a", "c", "d"]


def test_competing_robots_each_get_different_messages_and_all_are_handled_once(
    world: World, publisher: StreamPublisher
) -> None:
    make_stream(world, 60, set(range(60)))
    streams.route_streams(world.store, publisher)
    queue = queue_of(world, publisher)
    seen: dict[str, list[str]] = {"r1": [], "r2": []}
    total = threading.Semaphore(0)

    def robot(name: str, stop: threading.Event) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1)
        for method, _properties, body in channel.consume(queue, inactivity_timeout=0.2):
            if stop.is_set():
                break
            if method is None:
                continue
            seen[name].append(json.loads(body)["comment"]["id"])
            channel.basic_ack(method.delivery_tag)
            total.release()
        channel.cancel()
        connection.close()

    stop = threading.Event()
    robots = [threading.Thread(target=robot, args=(name, stop)) for name in seen]
    for thread in robots:
        thread.start()
    for _ in range(60):
        assert total.acquire(timeout=60), "the robots stopped receiving"
    stop.set()
    for thread in robots:
        thread.join(timeout=30)

    handled = seen["r1"] + seen["r2"]
    assert sorted(handled) == [f"m{i:03d}" for i in range(60)]  # each exactly once
    assert not set(seen["r1"]) & set(seen["r2"])


def test_a_robot_that_dies_before_its_ack_gets_the_message_redelivered(
    world: World, publisher: StreamPublisher
) -> None:
    make_stream(world, 3, {0, 1, 2})
    streams.route_streams(world.store, publisher)
    queue = queue_of(world, publisher)

    doomed = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    method, _properties, body = doomed.channel().basic_get(queue, auto_ack=False)
    assert json.loads(body)["comment"]["id"] == "m000"
    doomed.close()  # the robot dies holding m000, unacknowledged

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        method, _properties, body = wait_for(connection.channel(), queue)
        assert json.loads(body)["comment"]["id"] == "m000"
        assert method.redelivered
    finally:
        connection.close()


def test_rejected_messages_become_exceptions_and_wait_on_the_exception_queue(
    world: World, publisher: StreamPublisher
) -> None:
    make_stream(world, 3, {0, 1, 2})
    streams.route_streams(world.store, publisher)
    queue = queue_of(world, publisher)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        method, _properties, _body = channel.basic_get(queue, auto_ack=False)
        channel.basic_reject(method.delivery_tag, requeue=False)  # a plain nack: no reason
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        report_exception(channel, publisher.prefix, queue, method, properties, body, "Wrong Prediction")
        method, _properties, _body = channel.basic_get(queue, auto_ack=False)
        channel.basic_ack(method.delivery_tag)
    finally:
        connection.close()

    recorded = 0
    deadline = time.monotonic() + 30
    while recorded < 2 and time.monotonic() < deadline:
        recorded += streams.record_exceptions(world.store, AMQP_URL, publisher.prefix)
    assert recorded == 2

    reports = {e.uid: e.exception_type for e in events(world, ExceptionReported)}
    assert reports == {world.uid("m000"): "rejected", world.uid("m001"): "Wrong Prediction"}
    tagged = streams.list_exceptions(world.store, DATASET, "refunds")
    assert {(x["uid"], x["metadata"]["type"]) for x in tagged} == set(reports.items())
    assert ids(drain(exception_queue(queue))) == ["m000", "m001"]
    assert drain(queue) == []


def wait_for(channel: Any, queue: str, timeout: float = 30) -> tuple[Any, Any, bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is not None:
            return method, properties, body
        time.sleep(0.05)
    raise AssertionError(f"nothing arrived on {queue}")


def events(world: World, kind: type) -> list[Any]:
    return [s.event for s in world.store.read_all() if isinstance(s.event, kind)]


def test_the_robot_example_handles_and_reports(world: World, publisher: StreamPublisher) -> None:
    import subprocess
    import sys

    make_stream(world, 2, {0, 1})
    streams.route_streams(world.store, publisher)
    command = [sys.executable, "-m", "commine.scripts.robot_example", world.dataset_id, "refunds"]
    options = ["--amqp-url", AMQP_URL, "--prefix", publisher.prefix, "--count", "2"]
    done = subprocess.run(
        [*command, *options, "--reject-label", "Billing > Refund"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("exception ") == 2
    assert ids(drain(exception_queue(queue_of(world, publisher)))) == ["m000", "m001"]

"""The batch-confirmed publisher against the real RabbitMQ: everything confirmed, in order; a
return (unroutable) or a nack (queue full, reject-publish) raises instead of passing silently."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest
from conftest import AMQP_URL

from commine.broker.streams import ConfirmedPublisher, PublishNotConfirmed

pytestmark = pytest.mark.services
PERSISTENT = pika.BasicProperties(delivery_mode=2)


@pytest.fixture
def connection(queue_prefix: str) -> Iterator[pika.BlockingConnection]:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    yield connection
    if connection.is_open:
        channel = connection.channel()
        for name in ("quorum", "full"):
            channel.queue_delete(f"{queue_prefix}.{name}")
        connection.close()


def test_a_batch_is_confirmed_and_queued_in_order(connection: pika.BlockingConnection, queue_prefix: str) -> None:
    queue = f"{queue_prefix}.quorum"
    channel = connection.channel()
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    publisher = ConfirmedPublisher(connection)
    for start in (0, 300):  # two batches on one channel: delivery tags carry on
        publisher.publish_all([(queue, str(i).encode(), PERSISTENT) for i in range(start, start + 300)])
    assert channel.queue_declare(queue, passive=True).method.message_count == 600
    bodies = []
    while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
        bodies.append(int(got[2]))
    assert bodies == list(range(600))


def test_an_unroutable_message_raises(connection: pika.BlockingConnection, queue_prefix: str) -> None:
    publisher = ConfirmedPublisher(connection)
    with pytest.raises(PublishNotConfirmed, match="unroutable"):
        publisher.publish_all([(f"{queue_prefix}.nowhere", b"x", PERSISTENT)])


def test_a_nack_raises(connection: pika.BlockingConnection, queue_prefix: str) -> None:
    queue = f"{queue_prefix}.full"
    connection.channel().queue_declare(queue, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    publisher = ConfirmedPublisher(connection)
    with pytest.raises(PublishNotConfirmed, match="refused"):
        publisher.publish_all([(queue, b"x", PERSISTENT) for _ in range(5)])
    # The failed batch is settled: the next one is judged on its own confirms.
    connection.channel().queue_purge(queue)
    publisher.publish_all([(queue, b"y", PERSISTENT)])

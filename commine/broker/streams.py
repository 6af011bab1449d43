"""Per-stream RabbitMQ queues: names, declaration, confirmed publishing, exception reports.

For a stream ``NAME`` of dataset ``DATASET_ID`` (a queue-delivered stream, see README):

* ``<prefix>.stream.<DATASET_ID>.<NAME>``: durable (a quorum queue where the server supports
  it, RabbitMQ 3.8+); the router publishes each qualifying message on it, persistent, with
  publisher confirms, in stream order. Robots consume with manual acks.
* ``<prefix>.stream.<DATASET_ID>.<NAME>.exceptions``: durable; what robots rejected.
* ``<prefix>.stream-exceptions``: durable topic exchange. A stream queue dead-letters into it
  (routing key: the stream queue's name), and robots that want to give a reason publish there
  themselves (``report_exception``). It routes each message to its stream's exceptions queue
  and to ``<prefix>.stream-exceptions.record``, which the exception recorder drains into
  ``ExceptionReported`` events.
* ``<prefix>.purged.<SOURCE_ID>``: durable fanout exchange, never bound, never published to:
  its existence says the source was purged (``mark_purged``). A message a robot held
  unacknowledged while the purge drained the queues comes back to the queue if the robot dies
  or requeues it; a robot asks ``purged_message`` before handling a redelivered message, and
  acknowledges it unread if its source is purged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
import pika

from commine.broker.confirms import Unconfirmed

#: Header carrying the reason a robot gave for an exception.
REASON_HEADER = "x-commine-reason"
#: Headers of every stream message: which stream, and the entry's sequence id.
STREAM_HEADER = "x-commine-stream-id"
SEQUENCE_HEADER = "x-commine-sequence-id"


def stream_queue(prefix: str, dataset_id: str, name: str) -> str:
    return f"{prefix}.stream.{dataset_id}.{name}"


def exception_queue(queue: str) -> str:
    return f"{queue}.exceptions"


def exceptions_exchange(prefix: str) -> str:
    return f"{prefix}.stream-exceptions"


def recorder_queue(prefix: str) -> str:
    return f"{prefix}.stream-exceptions.record"


def purge_mark(prefix: str, source_id: str) -> str:
    return f"{prefix}.purged.{source_id}"


def parse_stream_queue(prefix: str, queue: str) -> tuple[str, str] | None:
    """(dataset id, stream name) of a stream queue's name, or None if it is not one of ours."""
    head = f"{prefix}.stream."
    if not queue.startswith(head):
        return None
    dataset_id, dot, name = queue.removeprefix(head).partition(".")
    return (dataset_id, name) if dot and name and "." not in name else None


def supports_quorum(connection: pika.BlockingConnection) -> bool:
    """Whether the server has quorum queues (RabbitMQ 3.8 and later)."""
    properties = connection._impl.server_properties or {}
    version = properties.get("version", b"0")
    text = version.decode() if isinstance(version, bytes) else str(version)
    try:
        major, minor = (int(part) for part in text.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (3, 8)


def declare_stream_topology(channel: Any, prefix: str, queue: str, *, quorum: bool) -> None:
    """The stream's queue, its exceptions queue, the shared exchange and the recorder's queue."""
    exchange = exceptions_exchange(prefix)
    kind: dict[str, Any] = {"x-queue-type": "quorum"} if quorum else {}
    channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    channel.queue_declare(recorder_queue(prefix), durable=True, arguments=dict(kind))
    channel.queue_bind(recorder_queue(prefix), exchange, routing_key="#")
    channel.queue_declare(exception_queue(queue), durable=True, arguments=dict(kind))
    channel.queue_bind(exception_queue(queue), exchange, routing_key=queue)
    arguments = {**kind, "x-dead-letter-exchange": exchange, "x-dead-letter-routing-key": queue}
    channel.queue_declare(queue, durable=True, arguments=arguments)


def delete_stream_queues(amqp_url: str, queue: str) -> None:
    """Delete a stream's queue and its exceptions queue (when the stream is deleted)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.queue_delete(queue)
        channel.queue_delete(exception_queue(queue))
    finally:
        connection.close()


def delete_stream_topology(amqp_url: str, prefix: str, queues: Sequence[str] = ()) -> None:
    """Delete the given stream queues (and their exceptions queues), the exchange and the
    recorder's queue under ``prefix``: a test's or a benchmark's own."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
            channel.queue_delete(exception_queue(queue))
        channel.queue_delete(recorder_queue(prefix))
        channel.exchange_delete(exceptions_exchange(prefix))
    finally:
        connection.close()


def mark_purged(channel: Any, prefix: str, source_id: str) -> None:
    """Record on the broker that the source was purged (idempotent): a durable exchange by that name."""
    channel.exchange_declare(exchange=purge_mark(prefix, source_id), exchange_type="fanout", durable=True)


def delete_purge_marks(amqp_url: str, prefix: str, source_ids: Sequence[str]) -> None:
    """Delete the purge marks of the given sources: a test's or a benchmark's own."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for source_id in source_ids:
            channel.exchange_delete(purge_mark(prefix, source_id))
    finally:
        connection.close()


def is_purged(connection: pika.BlockingConnection, prefix: str, source_id: str) -> bool:
    """Whether the source was purged, asked of the broker the robot already talks to.

    A passive declare of the source's purge mark, on a channel of its own: the broker closes a
    channel whose passive declare finds nothing, and the robot's consuming channel must live on.
    """
    channel = connection.channel()
    try:
        channel.exchange_declare(exchange=purge_mark(prefix, source_id), passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return False
        raise
    channel.close()
    return True


def source_of(body: bytes) -> str | None:
    """The source id of a stream message's comment (None for a body that is not a stream result)."""
    try:
        comment = orjson.loads(body)["comment"]
        source_id = comment.get("source_id") or str(comment.get("uid", "")).partition(".")[0]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    return str(source_id) if source_id else None


def purged_message(connection: pika.BlockingConnection, prefix: str, method: Any, body: bytes) -> bool:
    """Whether a delivered stream message belongs to a purged source, so the robot must ack it unread.

    Only a redelivered message can be one: the purge drains the queues of the source's ready
    messages after marking it, and the router publishes nothing of a purged source, so only a
    message a robot held during the drain, then gave back, comes round again.
    """
    if not method.redelivered:
        return False
    source_id = source_of(body)
    return source_id is not None and is_purged(connection, prefix, source_id)


class PublishNotConfirmed(pika.exceptions.AMQPError):
    """The broker refused (nack), returned (unroutable) or did not confirm a message in time."""


class ConfirmedPublisher:
    """Publishes a batch and waits once for the broker's confirms of all of it.

    pika's ``BlockingChannel.confirm_delivery`` waits for each message's confirm before the next
    publish, one round trip (and, on a quorum queue, one Raft commit) per message: about 1,000
    messages a second. Here the batch goes out on the channel underneath the blocking one (pika's
    asynchronous ``Channel``, which the blocking connection drives), in confirm mode, and
    ``process_data_events`` runs until every delivery tag is acked, so the broker confirms a
    whole batch in a few round trips. ``publish_all`` returns only when every message is
    confirmed, and raises ``PublishNotConfirmed`` if any was nacked or returned: the caller's
    "acked by the broker before the checkpoint moves" holds as before.
    """

    #: Seconds to wait for a batch's confirms before giving up (the caller retries the batch).
    TIMEOUT = 60.0

    def __init__(self, connection: pika.BlockingConnection) -> None:
        self._connection = connection
        self._channel = connection.channel()
        # The asynchronous channel the blocking one wraps: its confirm mode calls back per ack
        # instead of blocking each publish. pika < 2 is pinned; tests cover this attribute.
        self._impl = self._channel._impl
        self._unconfirmed = Unconfirmed()
        self._failed: list[str] = []
        self._impl.add_on_return_callback(self._on_return)
        self._impl.confirm_delivery(self._on_confirm, callback=lambda _frame: None)
        connection.process_data_events(0)

    @property
    def is_open(self) -> bool:
        return bool(self._channel.is_open)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        settled = self._unconfirmed.settle(method.delivery_tag, multiple=method.multiple)
        if isinstance(method, pika.spec.Basic.Nack):
            self._failed.append(f"the broker refused {settled} message(s)")

    def _on_return(self, _channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
        self._failed.append(f"unroutable: {method.routing_key} ({method.reply_text})")

    def publish_all(self, messages: Sequence[tuple[str, bytes, pika.BasicProperties]]) -> None:
        """Publish ``(routing key, body, properties)`` on the default exchange, mandatory, in order;
        return once the broker has confirmed every one of them."""
        self._failed.clear()
        for routing_key, body, properties in messages:
            self._impl.basic_publish("", routing_key, body, properties, mandatory=True)
            self._unconfirmed.issue()
        deadline = time.monotonic() + self.TIMEOUT
        # Every message of the batch is settled (acked or nacked) before this returns or raises,
        # so no late confirm of this batch is taken for one of the next.
        while self._unconfirmed:
            if not self._channel.is_open:
                raise PublishNotConfirmed("the channel closed before the broker confirmed the batch")
            if time.monotonic() > deadline:
                raise PublishNotConfirmed(f"{len(self._unconfirmed)} message(s) unconfirmed after {self.TIMEOUT:.0f} s")
            self._connection.process_data_events(0.01)
        # A return comes before its message's ack: seeing the last ack means every return is in.
        if self._failed:
            raise PublishNotConfirmed("; ".join(self._failed[:3]))


class StreamPublisher:
    """Publishes stream results onto stream queues with publisher confirms; one connection, reused.

    Queues are declared on first use per process, so a stream gets its queue when its first
    message is routed (or when the robot declares it, with the same arguments).
    """

    def __init__(self, amqp_url: str, prefix: str) -> None:
        self.amqp_url = amqp_url
        self.prefix = prefix
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._confirmed: ConfirmedPublisher | None = None
        self._declared: set[str] = set()
        self.quorum = False

    def _open(self) -> Any:
        """The channel declarations go on; publishing goes through ``self._confirmed``, its own."""
        if self._channel is None or not self._channel.is_open or not self._confirmed or not self._confirmed.is_open:
            self.close()
            self._connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
            self.quorum = supports_quorum(self._connection)
            self._channel = self._connection.channel()
            self._confirmed = ConfirmedPublisher(self._connection)
            self._declared = set()
        return self._channel

    def declare(self, queue: str) -> None:
        channel = self._open()
        if queue not in self._declared:
            declare_stream_topology(channel, self.prefix, queue, quorum=self.quorum)
            self._declared.add(queue)

    def publish(self, queue: str, stream_id: str, results: Sequence[dict[str, Any]]) -> None:
        """Publish each result, persistent and mandatory, in order; returns once the broker confirmed all."""
        self.publish_many([(queue, stream_id, results)])

    def publish_many(self, batches: Sequence[tuple[str, str, Sequence[dict[str, Any]]]]) -> None:
        """``publish`` for several (queue, stream id, results) at once: every message goes out
        before one wait for the confirms of them all."""
        try:
            for queue, _, _ in batches:
                self.declare(queue)
            messages = [
                (
                    queue,
                    orjson.dumps(result),
                    pika.BasicProperties(
                        delivery_mode=2,
                        content_type="application/json",
                        message_id=f"{stream_id}:{result['sequence_id']}",
                        headers={STREAM_HEADER: stream_id, SEQUENCE_HEADER: result["sequence_id"]},
                    ),
                )
                for queue, stream_id, results in batches
                for result in results
            ]
            if not messages:
                return
            assert self._confirmed is not None  # declare() opened it
            self._confirmed.publish_all(messages)
        except pika.exceptions.AMQPError:
            self.close()
            raise

    def close(self) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        self._connection = None
        self._channel = None
        self._confirmed = None


def report_exception(
    channel: Any, prefix: str, queue: str, method: Any, properties: Any, body: bytes, reason: str
) -> None:
    """What a robot calls to reject a stream message with a reason.

    Publishes the message to the exceptions exchange with the reason in ``x-commine-reason``,
    waits for the confirm (put the channel in confirm mode first), then acknowledges the
    original: the reason is never lost and the message is never on both queues for long.
    A plain ``basic_reject(requeue=False)`` also lands on the exceptions queue, with the reason
    ``rejected``.
    """
    headers = dict(properties.headers or {})
    headers[REASON_HEADER] = reason[:256]
    channel.basic_publish(
        exceptions_exchange(prefix),
        queue,
        body,
        pika.BasicProperties(delivery_mode=2, content_type="application/json", headers=headers),
        mandatory=True,
    )
    channel.basic_ack(method.delivery_tag)

"""The dramatiq broker: RabbitMQ with publisher confirms, or in-process for the embedded mode.

Dead letters keep their reason. Every message that ends in a handler queue's dead-letter queue
(``<queue>.XQ``) carries an ``x-commine-reason`` header saying why:

* a body that is not a dramatiq message, names an actor this worker does not have, or carries
  arguments that do not fit the actor's signature, is screened out by ``DeadLetteringConsumer``
  before dramatiq sees it;
* a message whose actor raised a permanent error (``throws``) or ran out of retries is copied
  there by the ``DeadLetters`` middleware just before dramatiq rejects it.

Handler queues are declared without RabbitMQ's own dead-letter routing, so a rejected message is
not dead-lettered a second time without its reason.
"""

from __future__ import annotations

import inspect
import threading
import traceback
from dataclasses import dataclass
from typing import Any

import dramatiq
import orjson
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import xq_name
from dramatiq.encoder import JSONEncoder
from dramatiq.errors import DecodeError
from dramatiq.message import Message
from dramatiq.middleware import CurrentMessage, Middleware

from commine.broker.topology import declare_events_exchange

#: Header of a dead-lettered message that says why it was rejected.
REASON_HEADER = "x-commine-reason"


@dataclass(frozen=True)
class DeadLetter:
    """One message of a dead-letter queue, as ``commine deadletters`` shows it."""

    queue: str
    reason: str
    body: bytes


def publish_dead_letter(channel: Any, queue_name: str, body: bytes, reason: str) -> None:
    """Put ``body`` on the queue's dead-letter queue with its reason, on a channel in confirm mode.

    Mandatory: the original is acknowledged only once its dead letter is safely queued.
    """
    channel.basic_publish(
        exchange="",
        routing_key=xq_name(queue_name),
        body=body,
        properties=pika.BasicProperties(delivery_mode=2, headers={REASON_HEADER: reason[:4000]}),
        mandatory=True,
    )


def screen(broker: dramatiq.Broker, body: bytes) -> str | None:
    """Why ``body`` cannot be processed by this broker's actors, or None when it can."""
    try:
        message = Message.decode(body)
    except Exception as exc:
        cause = exc.__cause__ or exc
        return f"not a dramatiq message: {type(cause).__name__}: {cause}"
    actor = broker.actors.get(message.actor_name)
    if actor is None:
        return f"unknown actor {message.actor_name!r}"
    # Arguments that do not fit the actor raise TypeError on every attempt: dead-letter them now
    # rather than after the retries meant for transient failures (about ten minutes).
    try:
        inspect.signature(actor.fn).bind(*message.args, **message.kwargs)
    except TypeError as exc:
        return f"arguments do not fit actor {message.actor_name!r}: {exc}"
    return None


class FastJSONEncoder(JSONEncoder):
    """dramatiq's JSON encoding through orjson: an ingest message carries hundreds of comments.

    ``DeadLetteringConsumer`` decodes a body to screen it, then dramatiq's consumer decodes the
    same body again: the second decode on the same thread of the very same ``bytes`` object gets
    the first one's result (half a megabyte of JSON for a batch of 500 comments, decoded once).
    """

    def __init__(self) -> None:
        self._last = threading.local()

    def encode(self, data: Any) -> bytes:
        return orjson.dumps(data)

    def decode(self, data: bytes) -> Any:
        last = self._last
        if getattr(last, "data", None) is data:
            decoded, last.data, last.decoded = last.decoded, None, None
            return decoded
        try:
            decoded = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"failed to decode message: {exc}", data, exc) from None
        last.data, last.decoded = data, decoded
        return decoded


class DeadLetteringConsumer(_RabbitmqConsumer):
    """A consumer that moves undecodable messages to the dead-letter queue with their reason."""

    def __init__(self, broker: CommineRabbitmqBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.channel.confirm_delivery()
        self.iterator = self._screened(self.iterator)

    def _screened(self, deliveries: Any) -> Any:
        # Runs on the consumer's own thread, the only one allowed to use its channel.
        for method, properties, body in deliveries:
            reason = screen(self.broker, body) if method is not None else None
            if reason is None:
                yield method, properties, body
                continue
            self.logger.warning("Dead-lettering a message from %s: %s", self.queue_name, reason)
            publish_dead_letter(self.channel, self.queue_name, body, reason)
            self.channel.basic_ack(method.delivery_tag)


class CommineRabbitmqBroker(RabbitmqBroker):
    """dramatiq's RabbitMQ broker with confirms, optional quorum queues and reasoned dead letters."""

    def __init__(self, *, url: str, quorum: bool = False, **kwargs: Any) -> None:
        self.quorum = quorum
        super().__init__(url=url, confirm_delivery=True, **kwargs)

    @property
    def consumer_class(self) -> type[_RabbitmqConsumer]:
        return DeadLetteringConsumer

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        arguments: dict[str, Any] = {}
        if self.quorum:
            arguments["x-queue-type"] = "quorum"
        elif self.max_priority:
            arguments["x-max-priority"] = self.max_priority
        return arguments

    def dead_letter(self, queue_name: str, body: bytes, reason: str) -> None:
        """Publish ``body`` to the queue's dead-letter queue with its reason, confirmed."""
        self.declare_queue(queue_name, ensure=True)
        publish_dead_letter(self.channel, queue_name, body, reason)

    def declare_topology(self, queues: list[str], prefix: str) -> None:
        """Create the handler queues (with their delay and dead-letter queues) and the events exchange
        on the server now, so an integration can publish before any worker has started."""
        for queue in queues:
            self.declare_queue(queue, ensure=True)
        declare_events_exchange(self.channel, prefix)


class InProcessBroker(StubBroker):
    """dramatiq's stub broker, plus dead letters with reasons, for the embedded mode."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reasoned_dead_letters: list[DeadLetter] = []

    def dead_letter(self, queue_name: str, body: bytes, reason: str) -> None:
        self.reasoned_dead_letters.append(DeadLetter(xq_name(queue_name), reason, body))

    def declare_topology(self, queues: list[str], prefix: str) -> None:
        """Nothing to declare in process: the stub creates its queues as actors are declared."""


class DeadLetters(Middleware):
    """Copy a message that is about to be rejected to its dead-letter queue, with the reason."""

    def before_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        exception = getattr(message, "_exception", None)
        if exception is not None:
            reason = "".join(traceback.format_exception_only(type(exception), exception)).strip()
        else:
            reason = "rejected"
        if message.options.get("retries"):
            reason = f"{reason} (after {message.options['retries']} retries)"
        broker.dead_letter(message.queue_name, message.encode(), reason)  # type: ignore[attr-defined]


def build_broker(*, embedded: bool, amqp_url: str, quorum: bool = False) -> dramatiq.Broker:
    """The broker for this process, registered as dramatiq's global broker."""
    broker: dramatiq.Broker
    broker = InProcessBroker() if embedded else CommineRabbitmqBroker(url=amqp_url, quorum=quorum)
    dramatiq.set_encoder(FastJSONEncoder())
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(DeadLetters())
    dramatiq.set_broker(broker)
    return broker


def read_dead_letters(amqp_url: str, queue_name: str, *, limit: int = 100) -> list[DeadLetter]:
    """Peek at a dead-letter queue without removing anything from it."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        letters = []
        tags = []
        for _ in range(limit):
            method, properties, body = channel.basic_get(xq_name(queue_name), auto_ack=False)
            if method is None:
                break
            tags.append(method.delivery_tag)
            headers = properties.headers or {}
            reason = headers.get(REASON_HEADER)
            if isinstance(reason, bytes):
                reason = reason.decode()
            letters.append(DeadLetter(xq_name(queue_name), str(reason or "no reason recorded"), body))
        if tags:
            channel.basic_nack(tags[-1], multiple=True, requeue=True)
        return letters
    finally:
        connection.close()

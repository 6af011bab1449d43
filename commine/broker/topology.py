"""Names of the exchanges and queues commine declares, all under one configurable prefix.

* ``<prefix>.events``: durable topic exchange; every committed domain event is published there
  with routing key ``<aggregate kind>.<EventType>`` (``message.MessageIngested``) for anyone
  outside to subscribe to.
* ``<prefix>.<handler>``: one durable queue per handler (``ingest``, ``project``, ``relay``),
  consumed by dramatiq actors; ``<prefix>.<handler>.XQ`` is its dead-letter queue.
"""

from __future__ import annotations

import pika

#: Handler names; each has its own queue.
INGEST = "ingest"
PROJECT = "project"
RELAY = "relay"
EMBED = "embed"
HANDLERS = (INGEST, PROJECT, RELAY, EMBED)


def queue_name(prefix: str, handler: str) -> str:
    return f"{prefix}.{handler}"


def events_exchange(prefix: str) -> str:
    return f"{prefix}.events"


def routing_key(aggregate_id: str, event_type: str) -> str:
    kind = aggregate_id.partition(":")[0] or "unknown"
    return f"{kind}.{event_type}"


def declare_events_exchange(channel: pika.adapters.blocking_connection.BlockingChannel, prefix: str) -> None:
    channel.exchange_declare(exchange=events_exchange(prefix), exchange_type="topic", durable=True)


def delete_topology(amqp_url: str, prefix: str) -> None:
    """Delete every queue and the exchange under ``prefix`` (a benchmark's or a test's own)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for handler in HANDLERS:
            for suffix in ("", ".DQ", ".XQ"):
                channel.queue_delete(queue_name(prefix, handler) + suffix)
        channel.exchange_delete(events_exchange(prefix))
    finally:
        connection.close()

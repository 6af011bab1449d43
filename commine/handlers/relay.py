"""The event relay: every committed event, in log order, onto the ``<prefix>.events`` exchange.

An outbox read straight from the log: no dual write, nothing published that was not committed.
Delivery is at least once (a crash after publishing and before saving the position publishes
the batch again); subscribers deduplicate by ``event_id`` or ``position``.

Consecutive events with the same routing key travel together, as one JSON array per AMQP
message (at most ``EVENTS_PER_MESSAGE``): a message per event costs the broker and the relay as
much as storing the event did in the first place.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.engine import Connection

from commine.broker.publisher import EventPublisher
from commine.broker.topology import routing_key
from commine.persistence.store import EventStore, StoredEvent, as_utc
from commine.persistence.tracking import follow

NAME = "relay"
#: Events in one AMQP message at most.
EVENTS_PER_MESSAGE = 250


def wire_event(row: Any) -> bytes:
    """The wire form of one event (see ``events.codec.record_to_dict``), payload spliced in as stored."""
    envelope = {
        "event_id": str(row.event_id),
        "type": row.type,
        "schema_version": row.schema_version,
        "aggregate_id": row.aggregate_id,
        "aggregate_version": row.aggregate_version,
        "occurred_at": as_utc(row.occurred_at).isoformat(),
        "actor": row.actor,
        "position": row.position,
    }
    # orjson: the stdlib encoder was a tenth of an ingest worker's time, relaying every event.
    return orjson.dumps(envelope)[:-1] + b',"payload":' + row.payload_json.encode() + b"}"


def messages_for(rows: list[Any]) -> list[tuple[str, bytes]]:
    """(routing key, JSON array body) per run of consecutive events with the same routing key."""
    messages: list[tuple[str, bytes]] = []
    run: list[bytes] = []
    key = ""
    for row in rows:
        row_key = routing_key(row.aggregate_id, row.type)
        if run and (row_key != key or len(run) >= EVENTS_PER_MESSAGE):
            messages.append((key, b"[" + b",".join(run) + b"]"))
            run = []
        key = row_key
        run.append(wire_event(row))
    if run:
        messages.append((key, b"[" + b",".join(run) + b"]"))
    return messages


def relay_events(
    store: EventStore, publisher: EventPublisher, *, batch_size: int = 4000, wait: bool = True
) -> int | None:
    """Publish the events after the relay's position; returns how many were published.

    With ``wait=False`` it returns None at once if another relay is running.
    """

    def publish(conn: Connection, _events: list[StoredEvent], start: int, end: int) -> None:
        publisher.publish(messages_for(store.read_raw(start, end, conn=conn)))

    return follow(store, NAME, publish, batch_size=batch_size, wait=wait, read_events=False)

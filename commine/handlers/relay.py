"""The event relay: every committed event, in log order, onto the ``<prefix>.events`` exchange.

An outbox read straight from the log: no dual write, nothing published that was not committed.
Delivery is at least once (a crash after publishing and before saving the position publishes
the batch again); subscribers deduplicate by ``event_id`` or ``position``.
"""

from __future__ import annotations

import json

from commine.broker.publisher import EventPublisher
from commine.broker.topology import routing_key
from commine.events.codec import record_to_dict, to_record
from commine.persistence.store import EventStore, StoredEvent
from commine.persistence.tracking import lock_position, save_position

NAME = "relay"


def wire_body(stored: StoredEvent) -> bytes:
    record = to_record(stored.event)
    data = record_to_dict(record)
    data["position"] = stored.position
    return json.dumps(data, separators=(",", ":"), default=str).encode()


def relay_events(store: EventStore, publisher: EventPublisher, *, batch_size: int = 1000) -> int:
    """Publish the events after the relay's position; returns how many were published."""
    published = 0
    while True:
        with store.transaction() as conn:
            position = lock_position(conn, NAME)
            batch = list(store.read_all(position, limit=batch_size, conn=conn, batch_size=batch_size))
            if not batch:
                return published
            publisher.publish([(routing_key(s.event.aggregate_id, s.event.type), wire_body(s)) for s in batch])
            save_position(conn, NAME, batch[-1].position)
            published += len(batch)

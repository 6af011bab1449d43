"""The event relay: every committed event, in log order, onto the ``<prefix>.events`` exchange.

An outbox read straight from the log: no dual write, nothing published that was not committed.
Delivery is at least once (a crash after publishing and before saving the position publishes
the batch again); subscribers deduplicate by ``event_id`` or ``position``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from commine.broker.publisher import EventPublisher
from commine.broker.topology import routing_key
from commine.persistence.store import EventStore
from commine.persistence.tracking import lock_position, save_position

NAME = "relay"


def wire_body(row: Any) -> bytes:
    """The wire form of one event (see ``events.codec.record_to_dict``), payload spliced in as stored."""
    envelope = {
        "event_id": str(row.event_id),
        "type": row.type,
        "schema_version": row.schema_version,
        "aggregate_id": row.aggregate_id,
        "aggregate_version": row.aggregate_version,
        "occurred_at": _utc(row.occurred_at).isoformat(),
        "actor": row.actor,
        "position": row.position,
    }
    head = json.dumps(envelope, separators=(",", ":"))
    return f'{head[:-1]},"payload":{row.payload_json}}}'.encode()


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def relay_events(store: EventStore, publisher: EventPublisher, *, batch_size: int = 1000) -> int:
    """Publish the events after the relay's position; returns how many were published."""
    published = 0
    while True:
        with store.transaction() as conn:
            position = lock_position(conn, NAME)
            rows = store.read_raw(position, limit=batch_size, conn=conn)
            if not rows:
                return published
            publisher.publish([(routing_key(row.aggregate_id, row.type), wire_body(row)) for row in rows])
            save_position(conn, NAME, rows[-1].position)
            published += len(rows)

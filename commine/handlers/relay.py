"""The event relay: every committed event, in log order, onto the ``<prefix>.events`` exchange.

An outbox read straight from the log: no dual write, nothing published that was not committed.
Delivery is at least once (a crash after publishing and before saving the position publishes
the batch again); subscribers deduplicate by ``event_id`` or ``position``.

Consecutive events with the same routing key travel together, as one JSON array per AMQP
message (at most ``EVENTS_PER_MESSAGE``): a message per event costs the broker and the relay as
much as storing the event did in the first place.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from commine.broker.publisher import EventPublisher
from commine.broker.topology import routing_key
from commine.persistence.store import EventStore, StoredEvent
from commine.persistence.tracking import follow

NAME = "relay"
#: Events in one AMQP message at most.
EVENTS_PER_MESSAGE = 250


def messages_for(events: list[tuple[str, str, bytes]]) -> list[tuple[str, bytes]]:
    """(routing key, JSON array body) per run of consecutive events with the same routing key."""
    messages: list[tuple[str, bytes]] = []
    run: list[bytes] = []
    key = ""
    for aggregate_id, event_type, wire in events:
        event_key = routing_key(aggregate_id, event_type)
        if run and (event_key != key or len(run) >= EVENTS_PER_MESSAGE):
            messages.append((key, b"[" + b",".join(run) + b"]"))
            run = []
        key = event_key
        run.append(wire)
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
        publisher.publish(messages_for(store.read_wire(start, end, conn=conn)))

    return follow(store, NAME, publish, batch_size=batch_size, wait=wait, read_events=False)

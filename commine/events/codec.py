"""One codec between events and records: a plain dict for the store, JSON bytes for the wire.

Decoding runs the upcaster chain: a record written at schema version *n* is lifted step by step
to the class's current version, so old history always loads with today's classes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from commine.events.base import ENVELOPE_FIELDS, DomainEvent, EventRegistry
from commine.events.base import registry as default_registry
from commine.events.errors import MalformedEvent, UnsupportedSchemaVersion


@dataclass(frozen=True)
class EventRecord:
    """An event as stored: envelope columns plus a JSON payload."""

    event_id: UUID
    type: str
    schema_version: int
    aggregate_id: str
    aggregate_version: int
    occurred_at: datetime
    actor: str
    payload: dict[str, Any]
    #: Position in the global log; None until the store assigns it.
    position: int | None = None


def to_record(event: DomainEvent) -> EventRecord:
    return EventRecord(
        event_id=event.event_id,
        type=event.type,
        schema_version=type(event).schema_version,
        aggregate_id=event.aggregate_id,
        aggregate_version=event.aggregate_version,
        occurred_at=event.occurred_at,
        actor=event.actor,
        payload=event.payload(),
    )


def upcast(
    type_name: str, version: int, payload: dict[str, Any], registry: EventRegistry = default_registry
) -> dict[str, Any]:
    """Lift ``payload`` from ``version`` to the current schema version of ``type_name``."""
    cls = registry.lookup(type_name)
    target = cls.schema_version
    if version > target:
        raise UnsupportedSchemaVersion(
            f"{type_name} schema version {version} is newer than this code knows (version {target})"
        )
    while version < target:
        step = registry.upcaster_for(type_name, version)
        if step is None:
            raise UnsupportedSchemaVersion(f"no upcaster for {type_name} from schema version {version}")
        payload = step(dict(payload))
        version += 1
    return payload


def from_record(record: EventRecord, registry: EventRegistry = default_registry) -> DomainEvent:
    cls = registry.lookup(record.type)
    payload = upcast(record.type, record.schema_version, record.payload, registry)
    known = {f.name for f in dataclasses.fields(cls)} - set(ENVELOPE_FIELDS)
    unknown = set(payload) - known
    if unknown:
        raise MalformedEvent(f"{record.type} has unknown payload fields: {', '.join(sorted(unknown))}")
    try:
        return cls(
            event_id=record.event_id,
            aggregate_id=record.aggregate_id,
            aggregate_version=record.aggregate_version,
            occurred_at=record.occurred_at,
            actor=record.actor,
            **payload,
        )
    except TypeError as exc:
        raise MalformedEvent(f"{record.type}: {exc}") from None


def record_to_dict(record: EventRecord) -> dict[str, Any]:
    """The JSON-ready form of a record: the wire format of events on the topic exchange."""
    data: dict[str, Any] = {
        "event_id": str(record.event_id),
        "type": record.type,
        "schema_version": record.schema_version,
        "aggregate_id": record.aggregate_id,
        "aggregate_version": record.aggregate_version,
        "occurred_at": record.occurred_at.isoformat(),
        "actor": record.actor,
        "payload": record.payload,
    }
    if record.position is not None:
        data["position"] = record.position
    return data


def record_from_dict(data: dict[str, Any]) -> EventRecord:
    # dict() would turn a list of pairs into a payload with non-string keys, which then crashes
    # the unknown-field check with a TypeError instead of reporting a malformed event.
    if "payload" in data and not isinstance(data["payload"], dict):
        raise MalformedEvent(f"event record payload must be a JSON object, got {type(data['payload']).__name__}")
    try:
        return EventRecord(
            event_id=UUID(str(data["event_id"])),
            type=str(data["type"]),
            schema_version=int(data["schema_version"]),
            aggregate_id=str(data["aggregate_id"]),
            aggregate_version=int(data["aggregate_version"]),
            occurred_at=datetime.fromisoformat(str(data["occurred_at"])),
            actor=str(data["actor"]),
            payload=dict(data["payload"]),
            position=data.get("position"),
        )
    except KeyError as exc:
        raise MalformedEvent(f"event record is missing the field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise MalformedEvent(f"event record is malformed: {exc}") from None


def encode(event: DomainEvent) -> bytes:
    return json.dumps(record_to_dict(to_record(event)), separators=(",", ":")).encode()


def decode(data: bytes, registry: EventRegistry = default_registry) -> DomainEvent:
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEvent(f"event is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise MalformedEvent("event must be a JSON object")
    return from_record(record_from_dict(parsed), registry)

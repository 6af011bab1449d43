"""The envelope every domain event carries, and the registry that maps type names to classes.

Events are frozen dataclasses. The envelope (event id, aggregate id and version, occurred-at,
actor) is common; each subclass adds its payload as plain fields of JSON types. The type name is
the class name and the schema version a class attribute, so a stored record says exactly which
class and which shape it was written with.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

from commine.events.errors import UnknownEventType

#: Names of the envelope fields; every other dataclass field of an event is payload.
ENVELOPE_FIELDS = ("event_id", "aggregate_id", "aggregate_version", "occurred_at", "actor")

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    """Something that happened to one aggregate, at one version, caused by one actor."""

    #: Current schema version of the payload; raise it with an upcaster from the old one.
    schema_version: ClassVar[int] = 1

    aggregate_id: str
    aggregate_version: int
    actor: str
    event_id: UUID = field(default_factory=uuid4)
    occurred_at: datetime = field(default_factory=utc_now)

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__

    @property
    def type(self) -> str:
        return type(self).__name__

    def payload(self) -> dict[str, Any]:
        """The event's own fields, without the envelope."""
        return {name: getattr(self, name) for name in _payload_fields(type(self))}


@functools.cache
def _payload_fields(cls: type[DomainEvent]) -> tuple[str, ...]:
    # dataclasses.fields() is slow enough to show in ingestion profiles; a class's fields never change.
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ENVELOPE_FIELDS)


class EventRegistry:
    """Maps type names to event classes, and (type, version) to the upcaster from that version."""

    def __init__(self) -> None:
        self._classes: dict[str, type[DomainEvent]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, cls: type[DomainEvent]) -> type[DomainEvent]:
        self._classes[cls.type_name()] = cls
        return cls

    def upcaster(self, type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorate a function that turns a payload of ``from_version`` into ``from_version + 1``."""

        def decorate(fn: Upcaster) -> Upcaster:
            self._upcasters[(type_name, from_version)] = fn
            return fn

        return decorate

    def lookup(self, type_name: str) -> type[DomainEvent]:
        try:
            return self._classes[type_name]
        except KeyError:
            raise UnknownEventType(
                f"unknown event type {type_name!r}; known types: {', '.join(sorted(self._classes))}"
            ) from None

    def upcaster_for(self, type_name: str, from_version: int) -> Upcaster | None:
        return self._upcasters.get((type_name, from_version))

    def names(self) -> list[str]:
        return sorted(self._classes)


#: The catalogue every store and broker uses unless told otherwise.
registry = EventRegistry()


def event(cls: type[DomainEvent]) -> type[DomainEvent]:
    """Register an event class in the catalogue (use as a class decorator)."""
    return registry.register(cls)

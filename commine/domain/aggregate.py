"""The aggregate base: state rebuilt from its events, commands that record new ones.

An aggregate never touches a database. A service loads its events, calls a command, and appends
what ``collect()`` returns with the version the aggregate was loaded at as the expectation.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Self

from commine.events import DomainEvent, utc_now


class Aggregate:
    """Base of every aggregate: an id, a version, and the events not yet saved."""

    #: Prefix of the aggregate id, naming the kind (``source:``).
    prefix: str = ""
    #: Keep a snapshot every this many events (None: never). Only for kinds whose history grows
    #: without bound; such a kind also implements ``state`` and ``restore``.
    snapshot_every: int | None = None
    #: The shape of ``state()``: a snapshot of another shape is ignored (the events are replayed).
    snapshot_schema = 1

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self.version = 0
        self._pending: list[DomainEvent] = []

    @classmethod
    def replay(cls, aggregate_id: str, events: Iterable[DomainEvent]) -> Self:
        aggregate = cls(aggregate_id)
        for event in events:
            aggregate.apply(event)
        return aggregate

    @classmethod
    def from_snapshot(
        cls, aggregate_id: str, version: int, state: dict[str, Any], events: Iterable[DomainEvent]
    ) -> Self:
        """The aggregate as a snapshot had it at ``version``, moved on by the events after it."""
        aggregate = cls(aggregate_id)
        aggregate.restore(state)
        aggregate.version = version
        for event in events:
            aggregate.apply(event)
        return aggregate

    def state(self) -> dict[str, Any]:
        """What a snapshot keeps: the state ``apply`` built, as JSON."""
        raise NotImplementedError(f"{type(self).__name__} keeps no snapshots")

    def restore(self, state: dict[str, Any]) -> None:
        """Set the state kept by ``state()``."""
        raise NotImplementedError(f"{type(self).__name__} keeps no snapshots")

    @property
    def exists(self) -> bool:
        return self.version > 0

    def apply(self, event: DomainEvent) -> None:
        """Move the state forward by one event."""
        handler = getattr(self, f"_on_{event.type}", None)
        if handler is not None:
            handler(event)
        self.version = event.aggregate_version

    def record(
        self, event_class: type[DomainEvent], actor: str, at: datetime | None = None, **payload: Any
    ) -> DomainEvent:
        """Create the next event of this aggregate, apply it and keep it for saving."""
        event = event_class(
            aggregate_id=self.id,
            aggregate_version=self.version + 1,
            actor=actor,
            occurred_at=at or utc_now(),
            **payload,
        )
        self.apply(event)
        self._pending.append(event)
        return event

    def collect(self) -> list[DomainEvent]:
        """The new events since the last collect, oldest first."""
        pending, self._pending = self._pending, []
        return pending

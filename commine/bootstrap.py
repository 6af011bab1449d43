"""The composition root: build the store, the broker and the actors from the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import dramatiq
from sqlalchemy.engine import Engine

from commine.persistence.engine import ensure_database, make_engine, migrate
from commine.persistence.store import EventStore
from commine.settings import Settings
from commine.workers.actors import Actors, register_actors


@dataclass
class App:
    """Everything a command needs, wired once."""

    settings: Settings
    engine: Engine
    store: EventStore
    broker: dramatiq.Broker
    actors: Actors
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def on_close(self, closer: Callable[[], None]) -> None:
        """Run ``closer`` when the app closes (in-process workers stop this way)."""
        self._closers.append(closer)

    def close(self) -> None:
        for closer in reversed(self._closers):
            closer()
        self.broker.close()
        self.engine.dispose()


def open_store(settings: Settings) -> EventStore:
    """The event store, its database created and migrated on first use."""
    ensure_database(settings.database_url)
    engine = make_engine(settings.database_url)
    migrate(engine)
    return EventStore(engine)


def bootstrap(settings: Settings) -> App:
    from commine.broker.dramatiq_broker import build_broker

    store = open_store(settings)
    broker = build_broker(embedded=settings.embedded, amqp_url=settings.amqp_url, quorum=settings.quorum_queues)
    actors = register_actors(broker, store, settings)
    broker.declare_topology(actors.queues, settings.queue_prefix)  # type: ignore[attr-defined]
    return App(settings, store.engine, store, broker, actors)

"""The composition root: build the store, the broker and the actors from the settings."""

from __future__ import annotations

from dataclasses import dataclass

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

    def close(self) -> None:
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
    return App(settings, store.engine, store, broker, actors)

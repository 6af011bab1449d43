"""The composition root: build the store, the broker and the actors from the settings."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dramatiq
from sqlalchemy.engine import Engine

from commine.persistence.encryption import cipher_for
from commine.persistence.engine import ensure_database, make_engine, migrate
from commine.persistence.store import EventStore
from commine.settings import Settings
from commine.workers.actors import Actors, register_actors

if TYPE_CHECKING:
    from commine.workers.training import TrainingRequests

#: Allocations between two young-generation collections in a long-running process (CPython: 700).
GC_THRESHOLD = 50_000
#: Seconds a worker thread may hold the GIL while another waits (CPython's default is 0.005).
WORKER_SWITCH_INTERVAL = 0.02


@dataclass
class App:
    """Everything a command needs, wired once."""

    settings: Settings
    engine: Engine
    store: EventStore
    broker: dramatiq.Broker
    actors: Actors
    #: Where retraining requests go: RQ on Redis, or in the embedded mode a list run in-process.
    training: TrainingRequests | PendingTraining | None = None
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
    return EventStore(engine, cipher=cipher_for(settings))


class PendingTraining:
    """The embedded mode's retraining: datasets collected, trained when the command asks."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.pending: list[str] = []

    def request(self, dataset_id: str) -> None:
        if dataset_id not in self.pending:
            self.pending.append(dataset_id)

    def run_pending(self, actor: str = "commine-trainer") -> list[Any]:
        from commine.handlers.training import NothingToTrain, train_dataset
        from commine.persistence import projections

        trained = []
        while self.pending:
            dataset_id = self.pending.pop(0)
            projections.catch_up(self.store)
            try:
                trained.append(train_dataset(self.store, dataset_id, actor=actor))
            except NothingToTrain:
                continue
            projections.catch_up(self.store)
        return trained


def training_requests(settings: Settings) -> TrainingRequests | None:
    """RQ-backed retraining for a deployment; None when retraining is off or embedded (see bootstrap)."""
    if not settings.retrain or settings.embedded:
        return None
    from commine.workers.training import TrainingRequests

    return TrainingRequests(settings.redis_url, settings.database_url, settings.queue_prefix)


def bootstrap(settings: Settings) -> App:
    from commine.broker.dramatiq_broker import build_broker

    store = open_store(settings)
    broker = build_broker(embedded=settings.embedded, amqp_url=settings.amqp_url, quorum=settings.quorum_queues)
    training: TrainingRequests | PendingTraining | None = training_requests(settings)
    if settings.embedded and settings.retrain:
        training = PendingTraining(store)
    actors = register_actors(broker, store, settings, training.request if training else None)
    broker.declare_topology(actors.queues, settings.queue_prefix)  # type: ignore[attr-defined]
    return App(settings, store.engine, store, broker, actors, training=training)


def tune_gc() -> None:
    """Fewer garbage collections in a worker or server process, once it has started up.

    A batch of 500 comments decodes into tens of thousands of objects: with CPython's default
    threshold a worker ran a young collection every few comments and carried each batch up through
    the older generations, 3.5 s of a 30 s ingestion run (collections timed by a callback). Objects
    alive after start-up (modules, models, the broker) are frozen out of the collector's sight;
    collections still run, ten times less often: 0.25 s in the same run.
    """
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


def tune_worker_threads() -> None:
    """Let a worker's threads keep the GIL longer before handing it to another that wants it.

    A worker's threads (two ingesting, the consumer, the followers, the stream loop) are busy in
    Python most of the time, and CPython makes the one holding the GIL give it up every 5 ms when
    another is waiting: each handover is a wake-up and a cache gone cold. At 20 ms, ``bench
    ingest`` ran 9 % faster (mean of four alternated pairs, each in the same direction). Not for
    the server, whose requests would wait longer for a turn.
    """
    sys.setswitchinterval(WORKER_SWITCH_INTERVAL)

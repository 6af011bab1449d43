"""The dramatiq actors: each binds one handler to its own durable queue.

Actors are registered on the broker of the process (queue names carry the configured prefix),
not at import time, so a test or a benchmark can run its own queues beside a deployment.
Every actor acknowledges only after its handler committed; its effects are idempotent, so a
redelivery after a crash does no harm.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import dramatiq

from commine.broker.publisher import EventPublisher
from commine.broker.topology import INGEST, PROJECT, RELAY, queue_name
from commine.handlers.ingest import MalformedMessage, handle_ingest
from commine.handlers.relay import relay_events
from commine.persistence import projections
from commine.persistence.store import EventStore
from commine.settings import Settings

#: Retry transient failures (a database restart, a lost connection) for about ten minutes.
RETRY_OPTIONS: dict[str, Any] = {"max_retries": 12, "min_backoff": 500, "max_backoff": 60_000}


@dataclass
class Actors:
    ingest: dramatiq.Actor[Any, Any]
    project: dramatiq.Actor[Any, Any]
    relay: dramatiq.Actor[Any, Any] | None

    @property
    def queues(self) -> list[str]:
        actors = [self.ingest, self.project] + ([self.relay] if self.relay else [])
        return [a.queue_name for a in actors]


def register_actors(broker: dramatiq.Broker, store: EventStore, settings: Settings) -> Actors:
    prefix = settings.queue_prefix
    local = threading.local()
    # In-process, a failure should surface at once in the command that caused it, not be retried.
    options = {"max_retries": 0} if settings.embedded else RETRY_OPTIONS

    def project() -> None:
        """Bring the read models up to the end of the log."""
        projections.catch_up(store)

    def relay() -> None:
        """Publish newly committed events on the topic exchange."""
        if not hasattr(local, "publisher"):
            local.publisher = EventPublisher(settings.amqp_url, prefix)
        relay_events(store, local.publisher)

    project_actor = dramatiq.actor(
        project, actor_name=PROJECT, queue_name=queue_name(prefix, PROJECT), broker=broker, **options
    )
    relay_actor = (
        None
        if settings.embedded
        else dramatiq.actor(
            relay, actor_name=RELAY, queue_name=queue_name(prefix, RELAY), broker=broker, **options
        )
    )

    def ingest(body: Any) -> None:
        """Store one batch of comments, then nudge the read models and the relay."""
        handle_ingest(store, body)
        project_actor.send()
        if relay_actor is not None:
            relay_actor.send()

    ingest_actor = dramatiq.actor(
        ingest,
        actor_name=INGEST,
        queue_name=queue_name(prefix, INGEST),
        broker=broker,
        throws=(MalformedMessage,),
        **options,
    )
    return Actors(ingest=ingest_actor, project=project_actor, relay=relay_actor)

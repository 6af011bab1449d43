"""The dramatiq actors: each binds one handler to its own durable queue.

Actors are registered on the broker of the process (queue names carry the configured prefix),
not at import time, so a test or a benchmark can run its own queues beside a deployment.
Every actor acknowledges only after its handler committed; its effects are idempotent, so a
redelivery after a crash does no harm.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dramatiq

from commine.broker.publisher import EventPublisher
from commine.broker.streams import StreamPublisher
from commine.broker.topology import EMBED, INGEST, PROJECT, RELAY, queue_name
from commine.handlers.embedding import embed_new, held_back
from commine.handlers.ingest import MalformedMessage, handle_ingest
from commine.handlers.prediction import predict_new
from commine.handlers.project import project as project_read_models
from commine.handlers.relay import relay_events
from commine.handlers.retrain import request_retraining
from commine.handlers.streams import route_streams
from commine.ml.encoders import minilm_installed
from commine.settings import Settings

if TYPE_CHECKING:
    from commine.persistence.store import EventStore

#: Retry transient failures (a database restart, a lost connection) for about ten minutes.
RETRY_OPTIONS: dict[str, Any] = {"max_retries": 12, "min_backoff": 500, "max_backoff": 60_000}
#: How long follow-up work (read models, relay) waits, in milliseconds, so that one run serves
#: every batch committed meanwhile instead of one confirmed publish and one run per batch.
FOLLOW_UP_DELAY = 1000


class Nudger:
    """Sends an actor's no-argument message, at most one pending per process.

    A nudge is sent with a delay; until half that delay has passed another is not needed: the
    pending one runs after every batch that was committed before this process skipped a nudge.
    """

    def __init__(self, actor: dramatiq.Actor[Any, Any], delay_ms: int) -> None:
        self.actor = actor
        self.delay_ms = delay_ms
        self._pending_until = 0.0
        self._lock = threading.Lock()

    def nudge(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._pending_until:
                return
            self._pending_until = now + self.delay_ms / 2000
        self.actor.send_with_options(delay=self.delay_ms or None)


@dataclass
class Actors:
    ingest: dramatiq.Actor[Any, Any]
    project: dramatiq.Actor[Any, Any]
    relay: dramatiq.Actor[Any, Any] | None
    #: The transformer embedding, when its extra is installed: slow, so on a queue of its own.
    embed: dramatiq.Actor[Any, Any] | None = None

    @property
    def queues(self) -> list[str]:
        actors = [self.ingest, self.project, self.relay, self.embed]
        return [a.queue_name for a in actors if a is not None]


def register_actors(
    broker: dramatiq.Broker,
    store: EventStore,
    settings: Settings,
    request_training: Callable[[str], Any] | None = None,
) -> Actors:
    """Bind the handlers to the broker's queues; ``request_training`` receives datasets to retrain."""
    prefix = settings.queue_prefix
    local = threading.local()
    # In-process, a failure should surface at once in the command that caused it, not be retried.
    options = {"max_retries": 0} if settings.embedded else RETRY_OPTIONS

    # Followers do not queue behind each other: a runner that finds another one at work leaves it
    # the work and looks again a little later, in case that one had read the log before our commit.
    def project() -> None:
        """Bring the read models up to the end of the log, then predict and ask for retraining."""
        busy = not project_read_models(store)
        # Both read the read models (datasets' sources, models), so they come after them.
        if settings.predict:
            predicted = predict_new(store)
            busy |= predicted is None
            if predicted:  # its PredictionsRecorded belong in the read models too
                busy |= not project_read_models(store)
        if request_training is not None:
            busy |= request_retraining(store, request_training) is None
        if not settings.embedded:  # queue-delivered streams: push what just qualified
            if not hasattr(local, "streams"):
                local.streams = StreamPublisher(settings.amqp_url, prefix)
            route_streams(store, local.streams)
        if busy:
            nudgers[PROJECT].nudge()
        elif EMBED in nudgers and held_back(store):
            # The embedder goes no further than the read models: now that they have caught up,
            # it may go on (it may have run before them, and nothing else would tell it).
            nudgers[EMBED].nudge()

    def relay() -> None:
        """Publish newly committed events on the topic exchange."""
        if not hasattr(local, "publisher"):
            local.publisher = EventPublisher(settings.amqp_url, prefix)
        if relay_events(store, local.publisher, wait=False) is None:
            nudgers[RELAY].nudge()

    project_actor = dramatiq.actor(
        project, actor_name=PROJECT, queue_name=queue_name(prefix, PROJECT), broker=broker, **options
    )
    relay_actor = (
        None
        if settings.embedded or not settings.relay_events
        else dramatiq.actor(relay, actor_name=RELAY, queue_name=queue_name(prefix, RELAY), broker=broker, **options)
    )

    def embed() -> None:
        """Compute the transformer embedding of new messages and predict them again with it."""
        embedded = embed_new(store)
        if embedded is None:
            nudgers[EMBED].nudge()
        elif embedded:  # it may have recorded better predictions: the read models follow
            nudgers[PROJECT].nudge()

    embed_actor = (
        dramatiq.actor(embed, actor_name=EMBED, queue_name=queue_name(prefix, EMBED), broker=broker, **options)
        if settings.transformer and minilm_installed()
        else None
    )

    delay = 0 if settings.embedded else FOLLOW_UP_DELAY
    nudgers = {a.actor_name: Nudger(a, delay) for a in (project_actor, relay_actor, embed_actor) if a is not None}

    def ingest(body: Any) -> None:
        """Store one batch of comments, then nudge the read models and the relay."""
        handle_ingest(store, body)
        for nudger in nudgers.values():
            nudger.nudge()

    ingest_actor = dramatiq.actor(
        ingest,
        actor_name=INGEST,
        queue_name=queue_name(prefix, INGEST),
        broker=broker,
        throws=(MalformedMessage,),
        **options,
    )
    return Actors(ingest=ingest_actor, project=project_actor, relay=relay_actor, embed=embed_actor)

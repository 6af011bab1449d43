"""What a purge leaves outside the read models: stream queue messages and older model artifacts.

``SourcePurged`` crypto-shreds a source, and the streams read model drops its entries not yet
delivered (``stream_projection``); fetch and the router skip any that a lagging read model still
holds (their comments open as purge placeholders). What the router had already published onto a
queue-delivered stream's RabbitMQ queue carries the text in clear, though, so this follower of the
log takes those messages off the queues: for each purge, every queue-delivered stream of a dataset
reading the source has its queue and its exceptions queue drained of the source's ready messages
(acknowledged, so they are gone); the others go back where they were (``basic_nack`` with requeue
keeps their order).

Each stream's routing row is locked while its queue is drained, so the router publishes nothing
onto it meanwhile. A broker that is down leaves the follower's position where it was: the drain
runs again on the next look, and draining twice drops nothing more. Messages a robot holds
unacknowledged at that moment are out of reach of ``basic_get``, so before draining, the source
gets its purge mark on the broker (``broker.streams.mark_purged``): one that comes back to the
queue later (the robot died or requeued it) arrives flagged as redelivered, and the robot, asking
``broker.streams.purged_message``, acknowledges it unread.

Model versions trained on the source's messages keep what they learned from them: once the retrain
the purge asks for has registered a version trained after it, ``drop_artifacts_of_purged`` deletes
the older versions' artifacts (training calls it).
"""

from __future__ import annotations

import logging
from typing import Any

import pika
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from commine.broker.streams import exception_queue, mark_purged, source_of, stream_queue
from commine.persistence import mldata
from commine.persistence import schema as t
from commine.persistence.engine import insert
from commine.persistence.store import EventStore
from commine.persistence.tracking import follow

log = logging.getLogger(__name__)

NAME = "stream-purge"
PURGE = "SourcePurged"
#: Log positions per window: the follower reads no events, only looks for purges by type.
WINDOW = 50_000


def drain_purged_sources(store: EventStore, amqp_url: str, prefix: str) -> int:
    """Drain every purge since the last run out of the stream queues; how many messages were dropped."""
    dropped = 0

    def react(conn: Connection, _events: list[Any], start: int, end: int) -> None:
        nonlocal dropped
        for source_id in _purged_sources(conn, start, end):
            queue_streams = _queue_streams(conn, source_id)
            if queue_streams:
                dropped += _drain_source(conn, amqp_url, prefix, source_id, queue_streams)

    follow(store, NAME, react, read_events=False, wait=False, batch_size=WINDOW)
    if dropped:
        log.info("dropped %d stream message(s) of purged sources from their queues", dropped)
    return dropped


def _drain_source(
    conn: Connection, amqp_url: str, prefix: str, source_id: str, queue_streams: list[tuple[str, str, str]]
) -> int:
    """Mark the source purged on the broker, then drain it from each stream's queue and exceptions queue."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        mark_purged(connection.channel(), prefix, source_id)  # first: what a robot gives back later meets it
        dropped = 0
        for stream_id, dataset_id, name in queue_streams:
            _lock_routing(conn, stream_id)
            queue = stream_queue(prefix, dataset_id, name)
            dropped += drain_queue(connection, queue, source_id) + drain_queue(
                connection, exception_queue(queue), source_id
            )
        return dropped
    finally:
        if connection.is_open:
            connection.close()


def _purged_sources(conn: Connection, start: int, end: int) -> list[str]:
    e = t.events
    query = sa.select(e.c.payload["source_id"].as_string()).where(
        e.c.position > start, e.c.position <= end, e.c.type == PURGE
    )
    return list(conn.execute(query.order_by(e.c.position)).scalars())


def _queue_streams(conn: Connection, source_id: str) -> list[tuple[str, str, str]]:
    """(stream id, dataset id, name) of every queue-delivered stream of a dataset reading the source."""
    s, ds = t.streams, t.dataset_sources
    query = (
        sa.select(s.c.stream_id, s.c.dataset_id, s.c.name)
        .join(ds, ds.c.dataset_id == s.c.dataset_id)
        .where(ds.c.source_id == source_id, s.c.delivery == "queue")
        .order_by(s.c.stream_id)
    )
    return [(row.stream_id, row.dataset_id, row.name) for row in conn.execute(query)]


def _lock_routing(conn: Connection, stream_id: str) -> None:
    """Hold the stream's routing row (waiting for a router that has it) until the transaction ends."""
    r = t.stream_routing
    conn.execute(insert(conn, r).values(stream_id=stream_id, pushed_seq=0).on_conflict_do_nothing())
    query = sa.select(r.c.pushed_seq).where(r.c.stream_id == stream_id)
    if conn.dialect.name != "sqlite":
        query = query.with_for_update()
    conn.execute(query)


def drain_queue(connection: pika.BlockingConnection, queue: str, source_id: str) -> int:
    """Take the source's ready messages off ``queue`` for good, put the others back; how many were dropped."""
    channel = connection.channel()  # its own: a queue that does not exist closes it
    try:
        channel.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:  # never routed to: nothing on it
            return 0
        raise
    keep: list[int] = []
    drop: list[int] = []
    while True:
        method, _properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            break
        (drop if of_source(body, source_id) else keep).append(method.delivery_tag)
    for tag in drop:
        channel.basic_ack(tag)
    for tag in keep:
        channel.basic_nack(tag, requeue=True)
    channel.close()
    return len(drop)


def of_source(body: bytes, source_id: str) -> bool:
    """Whether a stream message is a result for a message of ``source_id`` (one that is not a result is kept)."""
    return source_of(body) == source_id


# --- model artifacts -------------------------------------------------------------------------------------------------


def drop_artifacts_of_purged(conn: Connection, dataset_id: str, newest: int) -> int:
    """Delete the artifacts of the dataset's model versions trained before the last purge of one of its
    sources, once version ``newest`` was trained after it; how many were deleted.

    A model holds the vocabulary and weights it learned from its training text, so a version trained
    on a purged source's messages keeps something of them, sealed with the dataset's key, which the
    purge does not destroy. Retraining (``handlers.retrain``) makes a version without them; after
    that the older versions' artifacts go. Their registry entries stay: the log says they existed.
    """
    e = t.events
    sources = sa.select(t.dataset_sources.c.source_id).where(t.dataset_sources.c.dataset_id == dataset_id)
    purged_at = conn.execute(
        sa.select(sa.func.max(e.c.position)).where(e.c.type == PURGE, e.c.payload["source_id"].as_string().in_(sources))
    ).scalar()
    if purged_at is None:
        return 0
    trained = conn.execute(
        sa.select(
            e.c.payload["version"].as_integer(),
            e.c.payload["artifact_hash"].as_string(),
            e.c.payload["trained_on_position"].as_integer(),
        ).where(e.c.type == "ModelTrained", e.c.payload["dataset_id"].as_string() == dataset_id)
    ).all()
    if not any(version == newest and position >= purged_at for version, _, position in trained):
        return 0  # the newest version read its data before the purge: the retrain after it comes next
    keep = {digest for version, digest, _ in trained if version == newest}
    stale = {digest for _, digest, position in trained if position < purged_at} - keep
    return mldata.drop_artifacts(conn, stale, kept_for=dataset_id) if stale else 0

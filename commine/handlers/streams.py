"""The service layer for streams: what the CLI and the HTTP routes call.

Commands load the ``Stream`` aggregate, decide, append (retrying lost races), then bring the
read models up to date before returning, so a robot that advances and fetches again sees its
own advance. Reads (``fetch``, ``get_stream``, ``preview_thresholds``...) come from the streams
read model (``persistence.stream_projection``). ``route_streams`` pushes queue-delivered
streams onto RabbitMQ and ``record_exceptions`` turns what robots rejected into events.

Streams are addressed as the reference addresses them: a dataset ``PROJECT/DATASET`` and a
stream name. Every bad input raises a ``DomainError`` (``NotFound`` for what does not exist)
with a message fit to show a user.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pika
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from commine.broker.streams import (
    REASON_HEADER,
    StreamPublisher,
    parse_stream_queue,
    recorder_queue,
    stream_queue,
)
from commine.domain.comment import format_timestamp
from commine.domain.errors import DomainError, NotFound
from commine.domain.model import ModelVersions, models_aggregate_id
from commine.domain.names import label_name, split_full_name
from commine.domain.stream import (
    Stream,
    StreamRules,
    check_threshold,
    labels_returned,
    parse_sequence_id,
    stream_aggregate_id,
)
from commine.handlers.commands import get_dataset, keep_snapshot, load, new_id, run
from commine.persistence import projections, streamdata
from commine.persistence import schema as t
from commine.persistence.encryption import is_purged
from commine.persistence.engine import autocommit, insert
from commine.persistence.store import ConcurrencyError, EventStore, as_utc

log = logging.getLogger(__name__)

#: Bounds of ``fetch``'s ``size`` and ``max_filtered`` (the reference's swagger).
MAX_FETCH = 1024
#: Qualifying entries the router publishes per transaction: one confirmed publish and one ``StreamAdvanced`` each.
ROUTE_BATCH = 2000
#: Entries read per query while the threshold preview walks the stream.
SCAN_PAGE = 1024
ROUTER_ACTOR = "commine-router"
RECORDER_ACTOR = "commine-exception-recorder"


# --- commands ------------------------------------------------------------------------------------------------------


def create_stream(
    store: EventStore,
    dataset: str,
    name: str,
    *,
    model_version: int | None = None,
    label_thresholds: list[dict[str, Any]] | None = None,
    comment_filter: dict[str, Any] | None = None,
    title: str = "",
    description: str = "",
    deliver_all_filtered: bool = False,
    delivery: str = "fetch",
    actor: str,
) -> dict[str, Any]:
    """Create a stream pinned to ``model_version`` (the dataset's newest when None)."""
    dataset_id = get_dataset(store, dataset).dataset_id
    versions = _model_versions(store, dataset_id)
    if model_version is None:
        if not versions:
            raise DomainError(f"dataset {dataset} has no model yet: train one, then create the stream")
        model_version = max(versions)
    elif model_version not in versions:
        raise NotFound(f"dataset {dataset} has no model version {model_version!r}")
    stream_id = new_id()
    run(
        store,
        Stream,
        stream_aggregate_id(dataset_id, name),
        lambda s: s.create(
            stream_id=stream_id,
            model_version=model_version,
            label_thresholds=label_thresholds or [],
            comment_filter=comment_filter,
            title=title,
            description=description,
            deliver_all_filtered=deliver_all_filtered,
            delivery=delivery,
            actor=actor,
        ),
    )
    projections.catch_up(store)
    return get_stream(store, dataset, name)


def change_threshold(
    store: EventStore, dataset: str, name: str, label: str | list[str], threshold: float, *, actor: str
) -> bool:
    """Set one label's threshold; applies to every message not yet delivered. False if unchanged."""
    changed = _command(store, dataset, name, lambda s: s.change_threshold(label, threshold, actor=actor))
    return bool(changed)


def pin_model(store: EventStore, dataset: str, name: str, version: int, *, actor: str) -> bool:
    """Follow another model version from the cursor on. False if the stream pins it already."""
    dataset_id = get_dataset(store, dataset).dataset_id
    known = _model_versions(store, dataset_id)

    def pin(stream: Stream) -> None:
        stream.change_model_version(version, known_versions=known, actor=actor)

    return bool(_command(store, dataset, name, pin))


def advance(store: EventStore, dataset: str, name: str, sequence_id: str, *, actor: str) -> None:
    """Move the cursor past ``sequence_id`` (one that fetch returned); never backwards.

    Robots call this after every batch, so it reads the dataset and the stream once: an advance
    the read model's cursor is already past records nothing (the aggregate's cursor is never
    behind the read model's), and the aggregate refuses a deleted stream itself.
    """
    number = parse_sequence_id(sequence_id)
    with autocommit(store.engine) as conn:
        row = _row(conn, store, dataset, name)
    if number > row.last_seq:
        raise DomainError(f"sequence_id {sequence_id} was never handed out by this stream")
    if number <= row.cursor:
        return
    run(store, Stream, stream_aggregate_id(row.dataset_id, name), lambda s: s.advance(str(number), actor=actor))
    projections.catch_up(store)


def reset(store: EventStore, dataset: str, name: str, to_comment_created_at: str | datetime, *, actor: str) -> None:
    """Deliver again, from the start, every qualifying message first ingested at or after the time."""
    _command(store, dataset, name, lambda s: s.reset(to_comment_created_at, actor=actor))


def delete_stream(store: EventStore, dataset: str, name: str, *, actor: str) -> dict[str, Any]:
    """Delete the stream; returns what it was (its queue, if any, is for the caller to delete)."""
    before = get_stream(store, dataset, name)
    _command(store, dataset, name, lambda s: s.delete(actor=actor))
    return before


def tag_exceptions(store: EventStore, dataset: str, name: str, exceptions: Sequence[Any], *, actor: str) -> int:
    """Tag comments as exceptions: ``[{"uid": ..., "metadata": {"type": ...}}]``. Returns how many changed."""
    items = []
    for item in exceptions:
        if not isinstance(item, Mapping) or not isinstance(item.get("metadata", {}), Mapping):
            raise DomainError('an exception is {"uid": "<source id>.<comment id>", "metadata": {"type": "..."}}')
        items.append((item.get("uid"), str(item.get("metadata", {}).get("type", ""))))

    def tag(stream: Stream) -> None:
        for uid, kind in items:
            stream.report_exception(uid, kind, actor=actor)

    return _command(store, dataset, name, tag)


def untag_exceptions(store: EventStore, dataset: str, name: str, uids: Sequence[str], *, actor: str) -> int:
    def untag(stream: Stream) -> None:
        for uid in uids:
            stream.clear_exception(uid, actor=actor)

    return _command(store, dataset, name, untag)


def _command(store: EventStore, dataset: str, name: str, command: Any) -> int:
    """Run a command on an existing stream, catch the read models up; how many events it recorded."""
    dataset_id = get_dataset(store, dataset).dataset_id
    aggregate_id = stream_aggregate_id(dataset_id, name)
    before = load(store, Stream, aggregate_id)
    if not before.live:
        raise NotFound(f"stream {name!r} does not exist in dataset {dataset}")
    after = run(store, Stream, aggregate_id, command)
    projections.catch_up(store)
    return after.version - before.version if after.version > before.version else 0


def _model_versions(store: EventStore, dataset_id: str) -> set[int]:
    return set(load(store, ModelVersions, models_aggregate_id(dataset_id)).trained)


# --- reads ---------------------------------------------------------------------------------------------------------


def _row(conn: Connection, store: EventStore, dataset: str, name: str) -> Any:
    """The stream's read-model row, found by names in one query; NotFound names what is missing."""
    project, dataset_name = split_full_name("dataset", dataset)
    row = streamdata.named_stream(conn, project, dataset_name, name)
    if row is None:
        get_dataset(store, dataset, conn)  # raises NotFound if it is the dataset that does not exist
        raise NotFound(f"stream {name!r} does not exist in dataset {dataset}")
    return row


def stream_json(row: Any) -> dict[str, Any]:
    """A stream in the reference's shape, plus commine's own fields (delivery, cursor, backlog)."""
    return {
        "id": row.stream_id,
        "dataset_id": row.dataset_id,
        "name": row.name,
        "title": row.title,
        "description": row.description,
        "created_at": format_timestamp(as_utc(row.created_at)),
        "updated_at": format_timestamp(as_utc(row.updated_at)),
        "comment_filter": row.comment_filter,
        "model": {"version": row.model_version, "label_thresholds": row.label_thresholds},
        "deliver_all_filtered": row.deliver_all_filtered,
        "delivery": row.delivery,
        "cursor": str(row.cursor),
        "backlog": row.backlog,
    }


def get_stream(store: EventStore, dataset: str, name: str) -> dict[str, Any]:
    with store.engine.connect() as conn:
        return stream_json(_row(conn, store, dataset, name))


def list_streams(store: EventStore, dataset: str) -> list[dict[str, Any]]:
    dataset_id = get_dataset(store, dataset).dataset_id
    with store.engine.connect() as conn:
        return [stream_json(row) for row in streamdata.stream_rows(conn, dataset_id)]


def list_exceptions(store: EventStore, dataset: str, name: str) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return streamdata.exceptions(conn, _row(conn, store, dataset, name).stream_id)


def fetch(
    store: EventStore,
    dataset: str,
    name: str,
    *,
    size: int = 16,
    max_filtered: int | None = None,
    hide_sensitive: bool = False,
) -> dict[str, Any]:
    """The next results past the cursor, without moving it (the reference's ``fetch``).

    Scans entries in order: qualifying ones become results (up to ``size``), others count as
    ``filtered`` (scanning stops after ``max_filtered`` of them). ``sequence_id`` is the last
    entry scanned: advancing to it skips a filtered block even when ``results`` is empty.
    ``is_end_sequence`` says nothing lies beyond it yet. ``hide_sensitive`` drops the user
    properties each comment's source marks sensitive (for a caller without the permission to see them).
    """
    _check_bound("size", size)
    if max_filtered is not None:
        _check_bound("max_filtered", max_filtered)
    with autocommit(store.engine) as conn:
        stream = _row(conn, store, dataset, name)
        chosen, filtered, last = _scan(conn, stream, size, max_filtered)
        results = _results(conn, stream, chosen)
        if hide_sensitive:
            _drop_sensitive(conn, results)
        # Nothing lies past the last id handed out as the row was read; anywhere else (below it,
        # or past it when the projection appended after the row was read) only the index can tell.
        end = last == stream.last_seq or not streamdata.has_entries_after(conn, stream.stream_id, last)
    return {"results": results, "filtered": filtered, "sequence_id": str(last), "is_end_sequence": end}


def _check_bound(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_FETCH:
        raise DomainError(f"{name} must be a whole number from 1 to {MAX_FETCH}")


def _scan(conn: Connection, stream: Any, size: int, max_filtered: int | None) -> tuple[list[Any], int, int]:
    """The entries fetch returns, how many it passed as filtered, and the last sequence id scanned.

    As if walking the entries past ``after`` in order and stopping at the first where ``size``
    have qualified or ``max_filtered`` have not (or at the end), but by index: the qualifying
    entries come from the partial index, and the others are only counted, so a stream where few
    messages qualify costs no more to fetch from than one where most do.
    """
    stream_id, after = stream.stream_id, stream.cursor
    chosen = streamdata.qualifying_after(conn, stream_id, after, size)
    stop = chosen[-1].seq if len(chosen) >= size else None
    if max_filtered is not None:
        cut = streamdata.nth_filtered_after(conn, stream_id, after, max_filtered)
        if cut is not None and (stop is None or cut < stop):
            return [entry for entry in chosen if entry.seq < cut], max_filtered, cut
    if stop is None:
        # The last id handed out (the stream row's counter) rather than a query for the last entry:
        # the same range, a gap left by a deleted message included. Entries the projection appended
        # after the row was read may be among those chosen: the scan then ends at the last of them.
        stop = max(after, stream.last_seq, chosen[-1].seq if chosen else 0)
    return chosen, streamdata.count_filtered(conn, stream_id, after, stop), stop


def _results(
    conn: Connection, stream: Any, entries: Sequence[Any], found: Mapping[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Stream results in the reference's shape: the comment, the labels meeting their thresholds, the
    sequence id. ``found``: the comments, when the caller read them already (for several streams)."""
    if found is None:
        found = streamdata.comments(conn, stream.dataset_id, [entry.uid for entry in entries])
    # A purged message the read models have not dropped yet opens as a placeholder: never deliver it.
    return [
        {"comment": found[entry.uid], "labels": entry.labels, "entities": [], "sequence_id": str(entry.seq)}
        for entry in entries
        if entry.uid in found and not is_purged(found[entry.uid])
    ]


def _drop_sensitive(conn: Connection, results: list[dict[str, Any]]) -> None:
    """Drop the user properties their sources mark sensitive from the results' comments."""
    source_ids = {r["comment"]["uid"].partition(".")[0] for r in results}
    if not source_ids:
        return
    s = t.sources
    rows = conn.execute(sa.select(s.c.source_id, s.c.sensitive_properties).where(s.c.source_id.in_(source_ids)))
    hidden = {source_id: set(props or []) for source_id, props in rows}
    for result in results:
        comment = result["comment"]
        drop = hidden.get(comment["uid"].partition(".")[0])
        if drop and comment.get("user_properties"):
            comment["user_properties"] = {k: v for k, v in comment["user_properties"].items() if k not in drop}


def preview_thresholds(
    store: EventStore, dataset: str, name: str, changes: Mapping[str, float] | Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """How many messages not yet delivered would enter or leave the stream under proposed thresholds.

    ``changes`` maps label names to thresholds (or is a list of ``{"name", "threshold"}``); the
    stream's other thresholds stay. Nothing is recorded.
    """
    pairs = changes.items() if isinstance(changes, Mapping) else [(c["name"], c["threshold"]) for c in changes]
    with store.engine.connect() as conn:
        stream = _row(conn, store, dataset, name)
        current = StreamRules.of(stream.label_thresholds, stream.comment_filter, stream.deliver_all_filtered)
        thresholds = dict(current.thresholds)
        for label, threshold in pairs:
            parts, value = check_threshold(label, threshold)
            thresholds[label_name(parts)] = value
        proposed = StreamRules(thresholds, current.comment_filter, current.deliver_all_filtered)
        enter: list[str] = []
        leave: list[str] = []
        after = stream.cursor
        while page := streamdata.entries_after(conn, stream.stream_id, after, SCAN_PAGE):
            for entry in page:
                now = entry.passes_filter and (
                    proposed.deliver_all_filtered
                    or bool(labels_returned(entry.probabilities or {}, proposed.thresholds))
                )
                if now and not entry.qualifies:
                    enter.append(entry.uid)
                elif entry.qualifies and not now:
                    leave.append(entry.uid)
            after = page[-1].seq
    return {
        "enter": len(enter),
        "leave": len(leave),
        "backlog": stream.backlog,
        "backlog_after": stream.backlog + len(enter) - len(leave),
        "examples": {"enter": enter[:10], "leave": leave[:10]},
    }


def suggested_thresholds(store: EventStore, dataset: str, name: str) -> dict[str, dict[str, float | None]]:
    """Per label of the stream's pinned model: the validation presets (high_precision, balanced,
    high_recall) as thresholds; None where validation had too few examples to say."""
    with store.engine.connect() as conn:
        stream = _row(conn, store, dataset, name)
        metrics = conn.execute(
            sa.select(t.models.c.metrics).where(
                t.models.c.dataset_id == stream.dataset_id, t.models.c.version == stream.model_version
            )
        ).scalar()
    validation = (metrics or {}).get("validation") or {}
    return {report["name"]: dict(report.get("presets", {})) for report in validation.get("labels", [])}


# --- RabbitMQ: the router and the exception recorder ---------------------------------------------------------------


def route_streams(store: EventStore, publisher: StreamPublisher, *, batch_size: int = ROUTE_BATCH) -> int:
    """Push every queue-delivered stream's new qualifying messages onto its queue; how many were pushed.

    Rounds of ``route_round`` until no stream is left with a full batch behind it.
    """
    with store.engine.connect() as conn:
        waiting = [row.stream_id for row in streamdata.stream_rows(conn, delivery="queue")]
    pushed = moved = 0
    while waiting:
        scanned, published, waiting = route_round(store, publisher, waiting, batch_size=batch_size)
        pushed += published
        moved += scanned
    if moved:  # the router's advances belong in the read models (cursor, backlog)
        projections.catch_up(store, wait=False)
    return pushed


@dataclass(frozen=True)
class _Batch:
    """What one round routes of one stream: its qualifying entries in ``(start, last]``."""

    stream: Any
    start: int
    last: int
    chosen: list[Any]


def route_round(
    store: EventStore, publisher: StreamPublisher, stream_ids: Sequence[str], *, batch_size: int = ROUTE_BATCH
) -> tuple[int, int, list[str]]:
    """The next batch of each of these streams in one transaction: publish them all (confirmed),
    then record every ``StreamAdvanced`` and routing position. Returns how many sequence ids were
    passed, how many messages published (those that qualify) and the streams whose batch was full
    (more may lie behind it). A stream another router holds, or with nothing past its position, is
    left out.

    Only qualifying entries are read (the partial index): a batch is the next ``batch_size`` of
    them, and the position moves past every entry before the next one, up to the stream's last
    sequence id (the projection writes it with the entries, in one transaction). All the streams'
    messages go out before one wait for the broker's confirms, and their advances in one append:
    a round trip to a quorum queue's confirm per stream was most of what routing a window cost.

    A crash between the confirm and the commit publishes the round again: delivery is at least
    once, robots deduplicate by ``message_id`` (``<stream id>:<sequence id>``).
    """
    with store.transaction() as conn:
        batches = []
        for stream_id in sorted(stream_ids):  # one order for every router: their inserts never wait in a cycle
            batch = _next_batch(conn, stream_id, batch_size)
            if batch is not None:
                batches.append(batch)
        if not batches:
            return 0, 0, []
        found = _comments_of(conn, batches)
        publisher.publish_many(
            [
                (stream_queue(publisher.prefix, b.stream.dataset_id, b.stream.name), b.stream.stream_id, results)
                for b in batches
                if (results := _results(conn, b.stream, b.chosen, found[b.stream.dataset_id]))
            ]
        )
        _record_advances(store, conn, [(b.stream, b.last) for b in batches])
        r = t.stream_routing
        conn.execute(
            r.update().where(r.c.stream_id == sa.bindparam("k_id")).values(pushed_seq=sa.bindparam("k_seq")),
            [{"k_id": b.stream.stream_id, "k_seq": b.last} for b in batches],
        )
    full = [b.stream.stream_id for b in batches if len(b.chosen) >= batch_size]
    return sum(b.last - b.start for b in batches), sum(len(b.chosen) for b in batches), full


def _next_batch(conn: Connection, stream_id: str, batch_size: int) -> _Batch | None:
    """The stream's next batch, its routing position row-locked; None when there is nothing past
    the position or another router holds the stream."""
    stream = conn.execute(sa.select(t.streams).where(t.streams.c.stream_id == stream_id)).first()
    pushed_seq = _lock_routing(conn, stream_id)
    if stream is None or pushed_seq is None:
        return None
    start = max(pushed_seq, stream.cursor)
    if stream.last_seq <= start:
        return None
    chosen = streamdata.qualifying_after(conn, stream_id, start, batch_size)
    last = chosen[-1].seq if len(chosen) >= batch_size else stream.last_seq
    return _Batch(stream, start, last, chosen)


def _comments_of(conn: Connection, batches: Sequence[_Batch]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per dataset, the comments of every entry of these batches: one read for all their streams."""
    uids: dict[str, set[str]] = {}
    for b in batches:
        uids.setdefault(b.stream.dataset_id, set()).update(entry.uid for entry in b.chosen)
    return {dataset_id: streamdata.comments(conn, dataset_id, sorted(wanted)) for dataset_id, wanted in uids.items()}


def _lock_routing(conn: Connection, stream_id: str) -> int | None:
    """The stream's routing position, row-locked; None when another router holds it."""
    r = t.stream_routing
    conn.execute(insert(conn, r).values(stream_id=stream_id, pushed_seq=0).on_conflict_do_nothing())
    query = sa.select(r.c.pushed_seq).where(r.c.stream_id == stream_id)
    if conn.dialect.name != "sqlite":
        query = query.with_for_update(skip_locked=True)
    value = conn.execute(query).scalar()
    return None if value is None else int(value)


def _record_advances(store: EventStore, conn: Connection, moves: Sequence[tuple[Any, int]]) -> None:
    """``StreamAdvanced`` by the router for each (stream, sequence id), in one append in the
    routing transaction; all retried if a command raced one of them."""
    for _ in range(5):
        advanced = []
        for stream, seq in moves:
            aggregate = load(store, Stream, stream_aggregate_id(stream.dataset_id, stream.name), conn)
            loaded_at = aggregate.version
            if aggregate.live and aggregate.advance(str(seq), actor=ROUTER_ACTOR):
                advanced.append((aggregate, loaded_at))
        try:
            store.append([event for aggregate, _ in advanced for event in aggregate.collect()], conn=conn)
        except ConcurrencyError:
            continue
        for aggregate, loaded_at in advanced:
            keep_snapshot(store, aggregate, loaded_at, conn)
        return
    raise ConcurrencyError(f"could not record the router's advances of {len(moves)} stream(s)")


def record_exceptions(store: EventStore, amqp_url: str, prefix: str, *, limit: int = 1000) -> int:
    """Drain the recorder queue: each rejected or reported stream message becomes ``ExceptionReported``.

    The reason is the robot's ``x-commine-reason`` header, or RabbitMQ's dead-letter reason
    (``rejected``) for a plain reject. Acknowledged after the event is stored; a message for a
    stream that no longer exists is dropped. Returns how many messages were handled.
    """
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    handled = 0
    try:
        channel = connection.channel()
        channel.queue_declare(recorder_queue(prefix), passive=True)
        while handled < limit:
            method, properties, body = channel.basic_get(recorder_queue(prefix), auto_ack=False)
            if method is None:
                break
            _record_one(store, prefix, method.routing_key, properties, body)
            channel.basic_ack(method.delivery_tag)
            handled += 1
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:  # no stream queue declared yet: nothing to record
            raise
    finally:
        if connection.is_open:
            connection.close()
    if handled:
        projections.catch_up(store, wait=False)
    return handled


def exception_reason(properties: Any) -> str:
    headers = properties.headers or {}
    reason = headers.get(REASON_HEADER)
    if reason is None:
        deaths = headers.get("x-death") or [{}]
        reason = deaths[0].get("reason", "rejected")
    return reason.decode() if isinstance(reason, bytes) else str(reason)


def _record_one(store: EventStore, prefix: str, routing_key: str, properties: Any, body: bytes) -> None:
    where = parse_stream_queue(prefix, routing_key)
    try:
        uid = json.loads(body)["comment"]["uid"]
    except (ValueError, KeyError, TypeError):
        log.warning("dropping an exception report that is not a stream result (%s)", routing_key)
        return
    if where is None:
        log.warning("dropping an exception report for %s: not a stream queue", routing_key)
        return
    dataset_id, name = where
    aggregate_id = stream_aggregate_id(dataset_id, name)
    if not load(store, Stream, aggregate_id).live:
        return
    reason = exception_reason(properties)
    run(store, Stream, aggregate_id, lambda s: s.report_exception(uid, reason, actor=RECORDER_ACTOR))

"""Read models built from the log, with their checkpoint kept in the same transaction as their rows.

A projection never decides anything: it folds events into tables. ``catch_up`` reads the log
after the checkpoint, applies a batch and moves the checkpoint in one transaction, so a crash
between the two is impossible and a second runner waits on the checkpoint row instead of
applying the same events twice. Replay runs the very same code into a fresh schema.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from commine.domain.annotation import follow_change
from commine.domain.comment import parse_timestamp
from commine.domain.taxonomy import TaxonomyChange, relabel
from commine.events import (
    DatasetCreated,
    DatasetDeleted,
    DatasetUpdated,
    LabelApplied,
    LabelDefined,
    LabelDeleted,
    LabelRemoved,
    LabelRenamed,
    LabelsMerged,
    MessageDeleted,
    MessageIngested,
    ModelTrained,
    PermissionsGranted,
    PermissionsRevoked,
    PredictionsRecorded,
    ProjectCreated,
    SourceAddedToDataset,
    SourceCreated,
    SourcePurged,
    SourceUpdated,
    TokenIssued,
    TokenRevoked,
    UserAdded,
)
from commine.persistence import schema as t
from commine.persistence.engine import insert, json_dumps
from commine.persistence.store import EventStore, StoredEvent, as_utc
from commine.persistence.stream_projection import REBASING, project_streams
from commine.persistence.tracking import follow, position_of

#: Name of the checkpoint row shared by the projections below.
CHECKPOINT = "projections"


def upsert(
    conn: Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str], *, newer: str | None = None
) -> None:
    """Insert rows, or update every non-key column of those whose keys exist already.

    With ``newer`` (a column name), an existing row is only updated by a row whose value in that
    column is greater: the projection then does not depend on the order it sees events in.
    """
    if not rows:
        return
    statement = insert(conn, table)
    updates = {c: statement.excluded[c] for c in rows[0] if c not in keys and c != "created_at"}
    if updates:
        where = table.c[newer] < statement.excluded[newer] if newer else None
        conn.execute(statement.on_conflict_do_update(index_elements=keys, set_=updates, where=where), rows)
    else:
        conn.execute(statement.on_conflict_do_nothing(index_elements=keys), rows)


def _messages(conn: Connection, batch: list[StoredEvent]) -> None:
    """Messages in bulk: ingestion is the high-volume path, so one statement per batch.

    Every change is guarded by the log position of the event that makes it, so a row never moves
    back to an older state, whatever order (or how often) the events are applied in.
    """
    pending: dict[tuple[str, str], dict[str, Any]] = {}
    for stored in batch:
        event = stored.event
        if isinstance(event, MessageIngested | _Ingested):
            key = (event.source_id, event.comment_id)
            previous = pending.get(key)
            comment = event.comment
            pending[key] = {
                "source_id": event.source_id,
                "comment_id": event.comment_id,
                "timestamp": parse_timestamp(comment["timestamp"], "timestamp"),
                "thread_id": comment.get("thread_id"),
                "content_hash": event.content_hash,
                "version": event.aggregate_version,
                "position": stored.position,
                "deleted": False,
                "created_at": previous["created_at"] if previous else event.occurred_at,
                "updated_at": event.occurred_at,
            }
        elif isinstance(event, MessageDeleted):
            _flush_messages(conn, pending)
            conn.execute(
                t.messages.update()
                .where(
                    t.messages.c.source_id == event.source_id,
                    t.messages.c.comment_id == event.comment_id,
                    t.messages.c.position < stored.position,
                )
                .values(deleted=True, version=event.aggregate_version, updated_at=event.occurred_at)
            )
        elif isinstance(event, SourcePurged):
            _flush_messages(conn, pending)
            conn.execute(
                t.messages.delete().where(
                    t.messages.c.source_id == event.source_id, t.messages.c.position < stored.position
                )
            )
    _flush_messages(conn, pending)


def _flush_messages(conn: Connection, pending: dict[tuple[str, str], dict[str, Any]]) -> None:
    upsert(conn, t.messages, list(pending.values()), ["source_id", "comment_id"], newer="position")
    pending.clear()


def _catalogue(conn: Connection, batch: list[StoredEvent]) -> None:
    """Projects, sources, datasets, labels, models and streams: low volume, one event at a time."""
    for stored in batch:
        event = stored.event
        handler = _CATALOGUE_HANDLERS.get(type(event))
        if handler is not None:
            handler(conn, event)


def _project_created(conn: Connection, e: ProjectCreated) -> None:
    row = {"name": e.name, "title": e.title, "description": e.description, "created_at": e.occurred_at}
    upsert(conn, t.projects, [row], ["name"])


def _source_created(conn: Connection, e: SourceCreated) -> None:
    row = {
        "source_id": e.source_id,
        "project": e.project,
        "name": e.name,
        "title": e.title,
        "description": e.description,
        "language": e.language,
        "kind": e.kind,
        "should_translate": e.should_translate,
        "sensitive_properties": list(e.sensitive_properties),
        "purged": False,
        "created_at": e.occurred_at,
        "updated_at": e.occurred_at,
    }
    upsert(conn, t.sources, [row], ["source_id"])


def _source_purged(conn: Connection, e: SourcePurged) -> None:
    """The source is marked purged, and its messages' annotations go: derived from text no one can read again."""
    conn.execute(
        t.sources.update().where(t.sources.c.source_id == e.source_id).values(purged=True, updated_at=e.occurred_at)
    )
    conn.execute(t.annotations.delete().where(t.annotations.c.uid.startswith(f"{e.source_id}.", autoescape=True)))


def _source_updated(conn: Connection, e: SourceUpdated) -> None:
    values = {
        "title": e.title,
        "description": e.description,
        "should_translate": e.should_translate,
        "sensitive_properties": list(e.sensitive_properties),
        "updated_at": e.occurred_at,
    }
    conn.execute(t.sources.update().where(t.sources.c.source_id == e.source_id).values(**values))


def _dataset_updated(conn: Connection, e: DatasetUpdated) -> None:
    conn.execute(
        t.datasets.update()
        .where(t.datasets.c.dataset_id == e.dataset_id)
        .values(title=e.title, description=e.description, last_modified=e.occurred_at)
    )


def _user_added(conn: Connection, e: UserAdded) -> None:
    row = {
        "username": e.username,
        "user_id": e.user_id,
        "email": e.email,
        "admin": e.admin,
        "created_at": e.occurred_at,
    }
    upsert(conn, t.users, [row], ["username"])


def _token_issued(conn: Connection, e: TokenIssued) -> None:
    row = {
        "token_id": e.token_id,
        "username": e.username,
        "token_hash": e.token_hash,
        "description": e.description,
        "revoked": False,
        "created_at": e.occurred_at,
    }
    upsert(conn, t.api_tokens, [row], ["token_id"])


def _token_revoked(conn: Connection, e: TokenRevoked) -> None:
    conn.execute(t.api_tokens.update().where(t.api_tokens.c.token_id == e.token_id).values(revoked=True))


def _permissions_granted(conn: Connection, e: PermissionsGranted) -> None:
    rows = [{"username": e.username, "project": e.project, "permission": p} for p in e.permissions]
    upsert(conn, t.permissions, rows, ["username", "project", "permission"])


def _permissions_revoked(conn: Connection, e: PermissionsRevoked) -> None:
    table = t.permissions
    conn.execute(
        table.delete().where(
            table.c.username == e.username, table.c.project == e.project, table.c.permission.in_(e.permissions)
        )
    )


def _dataset_created(conn: Connection, e: DatasetCreated) -> None:
    row = {
        "dataset_id": e.dataset_id,
        "project": e.project,
        "name": e.name,
        "title": e.title,
        "description": e.description,
        "has_sentiment": e.has_sentiment,
        "created": e.occurred_at,
        "last_modified": e.occurred_at,
    }
    upsert(conn, t.datasets, [row], ["dataset_id"])


def _touch_dataset(conn: Connection, dataset_id: str, at: datetime) -> None:
    conn.execute(t.datasets.update().where(t.datasets.c.dataset_id == dataset_id).values(last_modified=at))


def _dataset_deleted(conn: Connection, e: DatasetDeleted) -> None:
    """Everything of the dataset leaves the read models; its sources, messages and embeddings stay.

    Model artifacts are not read models (a replay must never touch them): ``handlers.commands.delete_dataset``
    drops those of the dataset's models. Its streams go in the streams projection, in log order.
    """
    for table in (t.predictions, t.models, t.annotations, t.labels, t.dataset_sources, t.datasets):
        conn.execute(table.delete().where(_of(table, e)))


def _of(table: sa.Table, e: DatasetDeleted) -> sa.ColumnElement[bool]:
    return table.c.dataset_id == e.dataset_id


def _exists(conn: Connection, dataset_id: str) -> bool:
    query = sa.select(t.datasets.c.dataset_id).where(t.datasets.c.dataset_id == dataset_id)
    return conn.execute(query).first() is not None


def _source_added(conn: Connection, e: SourceAddedToDataset) -> None:
    upsert(
        conn, t.dataset_sources, [{"dataset_id": e.dataset_id, "source_id": e.source_id}], ["dataset_id", "source_id"]
    )
    _touch_dataset(conn, e.dataset_id, e.occurred_at)


def _label_defined(conn: Connection, e: LabelDefined) -> None:
    row = {"dataset_id": e.dataset_id, "name": e.name, "description": e.description}
    upsert(conn, t.labels, [row], ["dataset_id", "name"])
    _touch_dataset(conn, e.dataset_id, e.occurred_at)


def _taxonomy_changed(conn: Connection, e: TaxonomyChange) -> None:
    """A rename, merge or deletion of labels: the taxonomy and every annotation of the dataset follow."""
    _relabel_labels(conn, e)
    _relabel_annotations(conn, e)
    _touch_dataset(conn, e.dataset_id, e.occurred_at)


def _relabel_labels(conn: Connection, e: TaxonomyChange) -> None:
    """Move the labels rows as ``domain.taxonomy`` says; a moved label that meets an existing one merges into it.

    The moved rows go first, then come back under their new names, so the outcome does not
    depend on the order rows are visited in (a child folded into its parent can take the name
    its parent vacates). Of several rows meeting in one name, the first by old name gives the
    description.
    """
    table = t.labels
    query = sa.select(table.c.name, table.c.description).where(table.c.dataset_id == e.dataset_id)
    rows: dict[str, str] = {row.name: row.description for row in conn.execute(query)}
    moved = {name: relabel(name, e) for name in rows}
    moved = {name: new for name, new in moved.items() if new != name}
    if not moved:
        return
    conn.execute(table.delete().where(table.c.dataset_id == e.dataset_id, table.c.name.in_(list(moved))))
    kept = set(rows) - set(moved)
    for old in sorted(moved):
        new = moved[old]
        if new is not None and new not in kept:
            conn.execute(table.insert().values(dataset_id=e.dataset_id, name=new, description=rows[old]))
            kept.add(new)


def _relabel_annotations(conn: Connection, e: TaxonomyChange) -> None:
    """Every annotation of the dataset carrying a moved name, assigned or dismissed, in today's names.

    ``updated_at`` stays: it says when a trainer last annotated the message, and nobody did.
    """
    table = t.annotations
    query = sa.select(table.c.uid, table.c.assigned, table.c.dismissed).where(table.c.dataset_id == e.dataset_id)
    for row in conn.execute(query).all():
        assigned, dismissed = follow_change(row.assigned, row.dismissed, e)
        if assigned != row.assigned or dismissed != row.dismissed:
            conn.execute(
                table.update()
                .where(table.c.dataset_id == e.dataset_id, table.c.uid == row.uid)
                .values(assigned=assigned, dismissed=dismissed)
            )


def _label_applied(conn: Connection, e: LabelApplied) -> None:
    """The labelling replaces the row's; the queue is the first one a review came from, kept after."""
    a = t.annotations
    row = {
        "dataset_id": e.dataset_id,
        "uid": e.uid,
        "assigned": e.assigned,
        "dismissed": e.dismissed,
        "updated_at": e.occurred_at,
        "queue": e.queue,
    }
    statement = insert(conn, a).values(row)
    queue = sa.case((a.c.queue == "", statement.excluded.queue), else_=a.c.queue)
    updates = {"assigned": e.assigned, "dismissed": e.dismissed, "updated_at": e.occurred_at, "queue": queue}
    conn.execute(statement.on_conflict_do_update(index_elements=["dataset_id", "uid"], set_=updates))


def _label_removed(conn: Connection, e: LabelRemoved) -> None:
    current = conn.execute(
        sa.select(t.annotations).where(t.annotations.c.dataset_id == e.dataset_id, t.annotations.c.uid == e.uid)
    ).first()
    if current is None:
        return
    assigned = [a for a in current.assigned if a["name"] not in e.labels]
    dismissed = [d for d in current.dismissed if d not in e.labels]
    conn.execute(
        t.annotations.update()
        .where(t.annotations.c.dataset_id == e.dataset_id, t.annotations.c.uid == e.uid)
        .values(assigned=assigned, dismissed=dismissed, updated_at=e.occurred_at)
    )


def _model_trained(conn: Connection, e: ModelTrained) -> None:
    if not _exists(conn, e.dataset_id):
        return  # trained while its dataset was being deleted
    row = {
        "dataset_id": e.dataset_id,
        "version": e.version,
        "labels": e.labels,
        "training_size": e.training_size,
        "metrics": e.metrics,
        "artifact_hash": e.artifact_hash,
        "trained_at": e.occurred_at,
    }
    upsert(conn, t.models, [row], ["dataset_id", "version"])


_CATALOGUE_HANDLERS: dict[type, Callable[[Connection, Any], None]] = {
    ProjectCreated: _project_created,
    SourceCreated: _source_created,
    SourcePurged: _source_purged,
    SourceUpdated: _source_updated,
    DatasetUpdated: _dataset_updated,
    UserAdded: _user_added,
    TokenIssued: _token_issued,
    TokenRevoked: _token_revoked,
    PermissionsGranted: _permissions_granted,
    PermissionsRevoked: _permissions_revoked,
    DatasetCreated: _dataset_created,
    DatasetDeleted: _dataset_deleted,
    SourceAddedToDataset: _source_added,
    LabelDefined: _label_defined,
    LabelRenamed: _taxonomy_changed,
    LabelsMerged: _taxonomy_changed,
    LabelDeleted: _taxonomy_changed,
    LabelApplied: _label_applied,
    LabelRemoved: _label_removed,
    ModelTrained: _model_trained,
}


def _predictions(conn: Connection, batch: list[StoredEvent]) -> None:
    """The newest probabilities per (dataset, model version, message)."""
    rows: dict[tuple[str, int, str], dict[str, Any]] = {}
    for stored in batch:
        event = stored.event
        if isinstance(event, PredictionsRecorded):
            for item in event.predictions:
                key = (event.dataset_id, event.model_version, item["uid"])
                rows[key] = {
                    "dataset_id": event.dataset_id,
                    "model_version": event.model_version,
                    "uid": item["uid"],
                    "labels": item["labels"],
                    "position": stored.position,
                }
        elif isinstance(event, SourcePurged):  # in log order: earlier predictions of the source go too
            prefix = f"{event.source_id}."
            rows = {key: row for key, row in rows.items() if not key[2].startswith(prefix)}
            conn.execute(t.predictions.delete().where(t.predictions.c.uid.startswith(prefix, autoescape=True)))
    # A dataset deleted by now (later in the batch, or while its model was predicting) keeps no predictions.
    # Asked once per dataset, not once per prediction (a window holds thousands of one dataset's).
    alive = {dataset_id for dataset_id in {key[0] for key in rows} if _exists(conn, dataset_id)}
    kept = [row for key, row in rows.items() if key[0] in alive]
    if conn.dialect.name == "postgresql":
        for chunk in _chunks(kept, 5000):
            conn.execute(_PREDICTIONS_UPSERT, {"rows": json_dumps(chunk)})
        return
    for chunk in _chunks(kept, 1000):
        upsert(conn, t.predictions, chunk, ["dataset_id", "model_version", "uid"], newer="position")


def _predictions_upsert() -> Any:
    """``upsert`` of prediction rows for PostgreSQL, the rows sent as one JSON document.

    Each prediction carries a map of label probabilities: as executemany parameters, psycopg
    adapted them row by row (84 µs a prediction under the profiler, a fifth of a routing window),
    while PostgreSQL reads the same rows out of one JSON text (``json_to_recordset``) in a few ms.
    """
    p = t.predictions
    keys = [c.name for c in p.primary_key]
    rows = sa.func.json_to_recordset(sa.cast(sa.bindparam("rows", type_=sa.Text), postgresql.JSON)).table_valued(
        *(sa.column(c.name, c.type) for c in p.columns)
    )
    given = rows.render_derived(name="given", with_types=True)
    statement = postgresql.insert(p).from_select([c.name for c in p.columns], sa.select(given))
    return statement.on_conflict_do_update(
        index_elements=keys,
        set_={c.name: statement.excluded[c.name] for c in p.columns if c.name not in keys},
        where=p.c.position < statement.excluded.position,
    )


_PREDICTIONS_UPSERT = _predictions_upsert()


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


#: Every projection, applied in this order to each batch of the log.
PROJECTORS: list[Callable[[Connection, list[StoredEvent]], None]] = [_catalogue, _messages, _predictions]


def apply(conn: Connection, batch: list[StoredEvent], log: Connection | None = None) -> None:
    """Fold a batch into every projection; ``log`` reads the event log (``conn`` when None).

    The streams projection comes last and reads facts about messages from the log as of each
    event (a replay writes into a fresh schema, so it passes its log connection). The batch is
    cut right after each event that makes it read the predictions table (creating, re-pinning
    or resetting a stream), so that table then holds what was predicted before that event and
    nothing later: live windows and replay batches are cut at different places, and the rows
    must not depend on where.
    """
    for part in _cut_after(batch, REBASING):
        for projector in PROJECTORS:
            projector(conn, part)
        project_streams(conn, part, log if log is not None else conn)


def _cut_after(batch: list[StoredEvent], kinds: tuple[type, ...]) -> Iterator[list[StoredEvent]]:
    start = 0
    for i, stored in enumerate(batch):
        if isinstance(stored.event, kinds):
            yield batch[start : i + 1]
            start = i + 1
    if start < len(batch):
        yield batch[start:]


def catch_up(store: EventStore, *, batch_size: int = 2000, wait: bool = True) -> int | None:
    """Apply every event after the checkpoint; returns how many positions this call moved it.

    With ``wait=False`` it returns None at once if another runner is catching up. With ``wait=True``
    a call joins the next pass of its process (``SharedPasses``) and returns 0 when another
    thread ran that pass.

    ``MessageIngested`` is the volume, and its projection needs a few fields of a payload that
    carries the whole comment, so those fields are read straight out of the stored JSON rather
    than decoding every comment. Replay folds fully decoded events instead, so comparing the two
    (``commine replay``) checks this shortcut.
    """

    def react(conn: Connection, events: list[StoredEvent], start: int, end: int) -> None:
        # Messages first: a delete or purge in the same window must find the rows it acts on.
        # Positions have no gaps, so a window whose other events fill it holds no ingestion:
        # the look-up is skipped then (a robot's advance is a window of one ``StreamAdvanced``).
        if len(events) < end - start:
            if conn.dialect.name == "postgresql" and not _older_ingestions(conn, start, end):
                _messages_in_sql(conn, start, end)
            else:
                _messages(conn, _ingested(store, conn, start, end))
        apply(conn, events)

    skip = [MessageIngested.type_name()]

    def one_pass() -> int | None:
        return follow(store, CHECKPOINT, react, table=t.checkpoints, skip_types=skip, batch_size=batch_size, wait=wait)

    if not wait:
        return one_pass()
    return _passes_of(store).join(one_pass)


def checkpoint(conn: Connection) -> int:
    """How far the read models have caught up with the log: a follower that reads them (the
    datasets' sources, say) may not go past it, or it would read a window against read models
    that do not hold it yet."""
    return position_of(conn, CHECKPOINT, t.checkpoints)


class SharedPasses:
    """Catch-up passes shared by the threads of one process.

    A thread that needs the read models to hold everything committed so far (a server's write
    route, before it answers) joins the next pass that starts, instead of queueing on the
    checkpoint's row lock for a pass of its own that would find nothing left to do: eight robots
    advancing at once made eight passes in a row, each a transaction on the lock. A pass that
    starts after the caller arrived reads the log after the caller's commit, so it covers it; one
    already running may not, so the caller waits for the next. The thread that runs a pass returns
    what it moved; the others return 0. A failed pass counts for nobody: a waiter runs the next.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._started = 0
        self._finished = 0
        self._running = False
        self._inside = threading.local()

    def join(self, run: Callable[[], int | None]) -> int | None:
        if getattr(self._inside, "running", False):
            return run()  # called from within this thread's own pass: waiting for it would hang
        with self._changed:
            needed = self._started + 1
            while self._finished < needed:
                if self._running:
                    self._changed.wait()
                    continue
                self._running = True
                self._started += 1
                number, done = self._started, False
                self._changed.release()
                self._inside.running = True
                try:
                    moved = run()
                    done = True
                finally:
                    self._inside.running = False
                    self._changed.acquire()
                    self._running = False
                    if done:
                        self._finished = number
                    self._changed.notify_all()
                return moved
            return 0


_PASSES: weakref.WeakKeyDictionary[EventStore, SharedPasses] = weakref.WeakKeyDictionary()
_PASSES_LOCK = threading.Lock()


def _passes_of(store: EventStore) -> SharedPasses:
    with _PASSES_LOCK:
        found = _PASSES.get(store)
        if found is None:
            found = _PASSES[store] = SharedPasses()
        return found


@dataclass(frozen=True)
class _Ingested:
    """The fields of a ``MessageIngested`` the messages projection reads, and no more."""

    source_id: str
    comment_id: str
    comment: dict[str, Any]
    content_hash: str
    aggregate_version: int
    occurred_at: datetime


def _ingested(store: EventStore, conn: Connection, start: int, end: int) -> list[StoredEvent]:
    """The window's ``MessageIngested`` events with only the fields the projection needs."""
    e, payload = t.events, t.events.c.payload
    query = (
        sa.select(
            e.c.position,
            e.c.recorded_at,
            e.c.schema_version,
            e.c.aggregate_version,
            e.c.occurred_at,
            payload["source_id"].as_string(),
            payload["comment_id"].as_string(),
            payload["content_hash"].as_string(),
            payload[("comment", "timestamp")].as_string(),
            payload[("comment", "thread_id")].as_string(),
        )
        .where(ingestions_in(start, end))
        .order_by(e.c.position)
    )
    out: list[StoredEvent] = []
    for row in conn.execute(query):
        if row.schema_version != MessageIngested.schema_version:
            # An older shape: decode it properly, upcasters and all.
            out.extend(store.read_all(row.position - 1, limit=1, conn=conn))
            continue
        source_id, comment_id, digest, timestamp, thread_id = row[5:]
        comment = {"timestamp": timestamp} | ({"thread_id": thread_id} if thread_id is not None else {})
        lean = _Ingested(source_id, comment_id, comment, digest, row.aggregate_version, as_utc(row.occurred_at))
        out.append(StoredEvent(row.position, as_utc(row.recorded_at), lean))  # type: ignore[arg-type]
    return out


def ingestions_in(start: int, end: int) -> sa.ColumnElement[bool]:
    """The ``MessageIngested`` events of the window (``start``, ``end``] of the log."""
    e = t.events
    return sa.and_(e.c.position > start, e.c.position <= end, e.c.type == MessageIngested.type_name())


def _current_shape() -> sa.ColumnElement[bool]:
    return t.events.c.schema_version == MessageIngested.schema_version


def _older_ingestions(conn: Connection, start: int, end: int) -> bool:
    """Whether the window holds an ingestion of an older shape, which only upcasting can read."""
    older = sa.select(sa.literal(1)).where(ingestions_in(start, end), ~_current_shape()).limit(1)
    return conn.execute(older).first() is not None


def _messages_in_sql(conn: Connection, start: int, end: int) -> None:
    """What ``_messages(conn, _ingested(...))`` does, as one ``INSERT ... SELECT`` on PostgreSQL.

    The rows go from the log to the read model without a trip through Python: reading 2,000
    payload fields into Python and writing them back as as many pipelined upserts was a fifth of
    an ingest worker's time. The same rules: the last ingestion of a comment in the window wins,
    ``created_at`` is its first one's time, and a row holding a later position is left alone.
    Replay folds decoded events through ``_messages`` instead, so ``commine replay`` checks that
    both agree.
    """
    e, payload = t.events, t.events.c.payload
    # The fields come out of the payload in the scan, under an OFFSET 0 that keeps the planner
    # from moving them above the sort: otherwise the sort carried every whole payload (1.7 KB a
    # row). One window gives both the first ingestion's time and the newest position.
    fields = (
        sa.select(
            payload["source_id"].as_string().label("source_id"),
            payload["comment_id"].as_string().label("comment_id"),
            sa.cast(payload[("comment", "timestamp")].as_string(), t.Timestamp).label("timestamp"),
            payload[("comment", "thread_id")].as_string().label("thread_id"),
            payload["content_hash"].as_string().label("content_hash"),
            e.c.aggregate_version.label("version"),
            e.c.position,
            e.c.occurred_at,
        )
        .where(ingestions_in(start, end), _current_shape())
        .offset(0)
        .subquery()
    )
    each = {
        "partition_by": (fields.c.source_id, fields.c.comment_id),
        "order_by": fields.c.position,
        "rows": (None, None),
    }
    ingestions = sa.select(
        *(fields.c[name] for name in ("source_id", "comment_id", "timestamp", "thread_id", "content_hash", "version")),
        fields.c.position,
        sa.false().label("deleted"),
        sa.func.first_value(fields.c.occurred_at).over(**each).label("created_at"),
        fields.c.occurred_at.label("updated_at"),
        sa.func.last_value(fields.c.position).over(**each).label("newest"),
    ).subquery()
    columns = [c.name for c in t.messages.columns]
    rows = sa.select(*(ingestions.c[name] for name in columns)).where(ingestions.c.position == ingestions.c.newest)
    statement = postgresql.insert(t.messages).from_select(columns, rows)
    excluded = statement.excluded
    updates = {c: excluded[c] for c in columns if c not in ("source_id", "comment_id", "created_at")}
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["source_id", "comment_id"],
            set_=updates,
            where=t.messages.c.position < excluded.position,
        )
    )


def rebuild(
    store: EventStore,
    target: Engine,
    *,
    until: datetime | None = None,
    to_position: int | None = None,
    progress: Callable[[int], None] | None = None,
    batch_size: int = 2000,
) -> int:
    """Fold the log (up to ``until`` or ``to_position``) into empty projection tables on ``target``."""
    position = 0
    with store.engine.connect() as source:
        events = store.read_all(0, until=until, to_position=to_position, conn=source, batch_size=batch_size)
        for batch in _batched(events, batch_size):
            with target.begin() as conn:
                apply(conn, batch, source)
            position = batch[-1].position
            if progress:
                progress(len(batch))
    with target.begin() as conn:
        upsert(conn, t.checkpoints, [{"name": CHECKPOINT, "position": position}], ["name"])
    return position


def _batched(events: Iterable[StoredEvent], size: int) -> Iterator[list[StoredEvent]]:
    batch: list[StoredEvent] = []
    for stored in events:
        batch.append(stored)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

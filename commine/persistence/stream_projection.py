"""The streams read model: each stream's ordered entries, its cursor, backlog and exceptions.

A stream's content is a fold of the log, in log order:

* when a stream is created, re-pinned or reset, every message of its dataset predicted under the
  pinned version (and, after a reset, first ingested at or after the reset time) gets an entry,
  in ingestion order (the position of the message's first ``MessageIngested``);
* each later ``PredictionsRecorded`` under the pinned version adds the messages it predicts for the
  first time, in ingestion order, and refreshes those already there but not yet delivered;
* an entry's sequence id comes from a per-stream counter that only grows, so an id is never
  reused, an entry appended later always comes after the cursor, and nothing is skipped;
* ``ThresholdChanged`` re-evaluates every entry past the cursor; ``StreamAdvanced`` moves the
  cursor forward; ``StreamReset`` starts the entries again from the reset time;
  ``StreamModelChanged`` replaces the entries past the cursor with the new version's.

Whether an entry qualifies, and which labels it returns, is decided by the pure functions of
``domain.stream``. The facts about a message that decide its place (first ingestion position and
time, its content for the filter) are read from the log as of the event being applied, never from
a read model that may be ahead of it, so a replay in any batch size gives the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from commine.domain.comment import parse_timestamp
from commine.domain.message import message_aggregate_id
from commine.domain.names import label_name, label_parts
from commine.domain.stream import StreamRules, passes_filter
from commine.events import (
    DatasetDeleted,
    ExceptionCleared,
    ExceptionReported,
    MessageDeleted,
    MessageIngested,
    PredictionsRecorded,
    SourcePurged,
    StreamAdvanced,
    StreamCreated,
    StreamDeleted,
    StreamModelChanged,
    StreamReset,
    ThresholdChanged,
)
from commine.persistence import schema as t
from commine.persistence import streamdata
from commine.persistence.encryption import open_comments
from commine.persistence.engine import json_dumps, matches_any, probe_each, text_array
from commine.persistence.store import StoredEvent, as_utc

#: Stream events after which the projection reads the predictions table (a threshold change
#: re-evaluates from it): a batch of the log is cut right after each, so the table holds exactly
#: the predictions recorded before the event.
REBASING = (StreamCreated, StreamModelChanged, StreamReset, ThresholdChanged)
#: Keys per ``IN (...)`` clause.
CHUNK = 500
#: Messages a stream's creation (or re-pin, or reset) evaluates and appends at a time.
ADD_CHUNK = 5000


@dataclass(frozen=True)
class MessageFacts:
    """What places a message in a stream, as of one log position."""

    uid: str
    source_id: str
    first_position: int
    created_at: datetime
    comment: dict[str, Any]


def project_streams(conn: Connection, batch: list[StoredEvent], log: Connection) -> None:
    """Fold a batch of the log into the streams tables, event by event, in log order.

    ``conn`` holds the read models, ``log`` reads the event log (the same connection, except
    when a replay builds the read models in a fresh schema).
    """
    touched: set[str] = set()
    for stored in batch:
        handler = _HANDLERS.get(type(stored.event))
        if handler is not None:
            touched |= handler(Target(conn, log), stored)
    _update_backlogs(conn, touched)


@dataclass(frozen=True)
class Target:
    """The read-model connection, and where the log is read."""

    conn: Connection
    log: Connection

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self.conn.execute(*args, **kwargs)


# --- stream lifecycle -----------------------------------------------------------------------------------------------


def _created(conn: Target, stored: StoredEvent) -> set[str]:
    e: StreamCreated = stored.event  # type: ignore[assignment]
    conn.execute(t.stream_entries.delete().where(t.stream_entries.c.stream_id == e.stream_id))
    row = {
        "stream_id": e.stream_id,
        "dataset_id": e.dataset_id,
        "name": e.name,
        "title": e.title,
        "description": e.description,
        "model_version": e.model_version,
        "label_thresholds": e.label_thresholds,
        "comment_filter": e.comment_filter,
        "deliver_all_filtered": e.deliver_all_filtered,
        "delivery": e.delivery,
        "backlog": 0,
        "cursor": 0,
        "last_seq": 0,
        "reset_from": None,
        "created_at": e.occurred_at,
        "updated_at": e.occurred_at,
    }
    conn.execute(t.streams.delete().where(t.streams.c.stream_id == e.stream_id))
    conn.execute(t.streams.insert().values(row))
    _add_predicted(conn, _stream(conn, e.stream_id), stored.position)
    return {e.stream_id}


def _threshold_changed(conn: Target, stored: StoredEvent) -> set[str]:
    e: ThresholdChanged = stored.event  # type: ignore[assignment]
    stream = _stream(conn, e.stream_id)
    if stream is None:
        return set()
    name = label_name(e.label)
    thresholds = [item for item in stream.label_thresholds if label_name(item["name"]) != name]
    thresholds.append({"name": list(e.label), "threshold": e.threshold})
    _update_stream(conn, e.stream_id, e.occurred_at, label_thresholds=thresholds)
    _reevaluate(conn, _stream(conn, e.stream_id))
    return {e.stream_id}


def _model_changed(conn: Target, stored: StoredEvent) -> set[str]:
    e: StreamModelChanged = stored.event  # type: ignore[assignment]
    stream = _stream(conn, e.stream_id)
    if stream is None:
        return set()
    _update_stream(conn, e.stream_id, e.occurred_at, model_version=e.model_version)
    entries = t.stream_entries
    conn.execute(entries.delete().where(entries.c.stream_id == e.stream_id, entries.c.seq > stream.cursor))
    _add_predicted(conn, _stream(conn, e.stream_id), stored.position)
    return {e.stream_id}


def _advanced(conn: Target, stored: StoredEvent) -> set[str]:
    e: StreamAdvanced = stored.event  # type: ignore[assignment]
    stream = _stream(conn, e.stream_id)
    if stream is None:
        return set()
    # Forward only, and never past the last id handed out (the service refuses that anyway).
    cursor = min(int(e.sequence_id), stream.last_seq)
    if cursor <= stream.cursor:
        return set()
    # The backlog loses what the advance passed: counting those few beats recounting the whole
    # rest of the stream on every advance of every robot. Should another event of this batch have
    # touched the stream, its recount at the end of the batch overrides this, rightly.
    passed = streamdata.count_qualifying(conn.conn, e.stream_id, stream.cursor, cursor)
    _update_stream(conn, e.stream_id, e.occurred_at, cursor=cursor, backlog=max(0, stream.backlog - passed))
    return set()


def _reset(conn: Target, stored: StoredEvent) -> set[str]:
    e: StreamReset = stored.event  # type: ignore[assignment]
    stream = _stream(conn, e.stream_id)
    if stream is None:
        return set()
    moment = parse_timestamp(e.to_comment_created_at, "to_comment_created_at")
    conn.execute(t.stream_entries.delete().where(t.stream_entries.c.stream_id == e.stream_id))
    # Every id handed out so far is now behind the cursor: what follows is delivered afresh.
    _update_stream(conn, e.stream_id, e.occurred_at, cursor=stream.last_seq, reset_from=moment)
    _add_predicted(conn, _stream(conn, e.stream_id), stored.position)
    return {e.stream_id}


def _deleted(conn: Target, stored: StoredEvent) -> set[str]:
    e: StreamDeleted = stored.event  # type: ignore[assignment]
    for table in (t.stream_entries, t.stream_exceptions, t.streams):
        conn.execute(table.delete().where(table.c.stream_id == e.stream_id))
    return set()


def _dataset_deleted(conn: Target, stored: StoredEvent) -> set[str]:
    """The dataset's streams go with it, in log order: an exception reported earlier in the batch is gone too."""
    e: DatasetDeleted = stored.event  # type: ignore[assignment]
    streams = sa.select(t.streams.c.stream_id).where(t.streams.c.dataset_id == e.dataset_id).scalar_subquery()
    for table in (t.stream_entries, t.stream_exceptions):
        conn.execute(table.delete().where(table.c.stream_id.in_(streams)))
    conn.execute(t.streams.delete().where(t.streams.c.dataset_id == e.dataset_id))
    return set()


def _exception_reported(conn: Target, stored: StoredEvent) -> set[str]:
    e: ExceptionReported = stored.event  # type: ignore[assignment]
    x = t.stream_exceptions
    conn.execute(x.delete().where(x.c.stream_id == e.stream_id, x.c.uid == e.uid))
    conn.execute(
        x.insert().values(
            stream_id=e.stream_id, uid=e.uid, exception_type=e.exception_type, reported_at=e.occurred_at, actor=e.actor
        )
    )
    return set()


def _exception_cleared(conn: Target, stored: StoredEvent) -> set[str]:
    e: ExceptionCleared = stored.event  # type: ignore[assignment]
    x = t.stream_exceptions
    conn.execute(x.delete().where(x.c.stream_id == e.stream_id, x.c.uid == e.uid))
    return set()


# --- messages arriving, changing, leaving ----------------------------------------------------------------------------


def _predictions_recorded(conn: Target, stored: StoredEvent) -> set[str]:
    """New predictions under a version some streams pin: refresh their entries, append the new ones.

    The whole event is evaluated against all those streams at once, and the new entries of all
    of them go into the table in one COPY.
    """
    e: PredictionsRecorded = stored.event  # type: ignore[assignment]
    s = t.streams
    streams = conn.execute(
        sa.select(s).where(s.c.dataset_id == e.dataset_id, s.c.model_version == e.model_version).order_by(s.c.stream_id)
    ).all()
    if not streams:
        return set()
    probabilities = {item["uid"]: item["labels"] for item in e.predictions}
    rules = [_rules(stream) for stream in streams]
    facts = _facts(conn.log, list(probabilities), stored.position, content=any(map(needs_content, rules)))
    items = [(facts[uid], probabilities[uid]) for uid in probabilities if uid in facts]
    items.sort(key=lambda item: (item[0].first_position, item[0].uid))  # the order entries are appended in
    existing = _existing(conn, [stream.stream_id for stream in streams], [f.uid for f, _ in items])
    rows: list[Entry] = []
    for stream, verdicts in zip(streams, evaluate_window(rules, items), strict=True):
        rows += _merge(conn, stream, items, verdicts, existing.get(stream.stream_id, {}))
    _append_rows(conn, rows)
    return {stream.stream_id for stream in streams}


def _facts(log: Connection, uids: list[str], before: int, *, content: bool) -> dict[str, MessageFacts]:
    """``message_facts``, or only the first ingestions (an empty comment) when no filter looks inside:
    reading and opening every comment is most of the cost of a prediction otherwise."""
    if content:
        return message_facts(log, uids, before=before)
    return {
        uid: MessageFacts(uid, uid.partition(".")[0], position, created_at, {})
        for uid, (position, created_at) in first_ingestions(log, uids, before=before).items()
    }


def _existing(conn: Target, stream_ids: list[str], uids: list[str]) -> dict[str, dict[str, int]]:
    """Per stream, the sequence id of each of these messages it has an entry for: a probe of the
    ``(uid, stream_id)`` index per message, for all the streams at once.

    On PostgreSQL the uids go as one array, each probed on its own (``engine.probe_each``): as a
    join with the array, planned on entries analyzed when they were few, it was a sequential scan
    of every entry hashed against the 500 uids (46 ms at 150,000 entries, and growing with them).
    """
    entries = t.stream_entries
    columns = (entries.c.stream_id, entries.c.uid, entries.c.seq)
    if conn.conn.dialect.name == "postgresql":
        given = sa.select(sa.func.unnest(text_array("uids", uids)).label("uid")).subquery()
        queries = [probe_each(given, sa.select(*columns).where(entries.c.uid == given.c.uid), "found")]
    else:
        queries = [
            sa.select(*columns).where(entries.c.uid.in_(chunk), entries.c.stream_id.in_(stream_ids))
            for chunk in _chunks(uids)
        ]
    wanted = set(stream_ids)
    out: dict[str, dict[str, int]] = {}
    for query in queries:
        for stream_id, uid, seq in conn.execute(query):
            if stream_id in wanted:
                out.setdefault(stream_id, {})[uid] = seq
    return out


def _message_deleted(conn: Target, stored: StoredEvent) -> set[str]:
    e: MessageDeleted = stored.event  # type: ignore[assignment]
    return _drop_undelivered(conn, t.stream_entries.c.uid == f"{e.source_id}.{e.comment_id}")


def _source_purged(conn: Target, stored: StoredEvent) -> set[str]:
    e: SourcePurged = stored.event  # type: ignore[assignment]
    return _drop_undelivered(conn, t.stream_entries.c.source_id == e.source_id)


def _drop_undelivered(conn: Target, which: Any) -> set[str]:
    """Take matching entries that are not yet delivered out of every stream."""
    entries, s = t.stream_entries, t.streams
    cursor = sa.select(s.c.cursor).where(s.c.stream_id == entries.c.stream_id).scalar_subquery()
    doomed = conn.execute(sa.select(entries.c.stream_id, entries.c.seq).where(which, entries.c.seq > cursor)).all()
    for stream_id, seq in doomed:
        conn.execute(entries.delete().where(entries.c.stream_id == stream_id, entries.c.seq == seq))
    return {stream_id for stream_id, _ in doomed}


# --- the entries ----------------------------------------------------------------------------------------------------


def _rules(stream: Any) -> StreamRules:
    return StreamRules.of(stream.label_thresholds, stream.comment_filter, stream.deliver_all_filtered)


def needs_content(rules: StreamRules) -> bool:
    """Whether the stream's filter looks inside comments (time, user properties), not just at sources."""
    return bool(rules.comment_filter.get("timestamp") or rules.comment_filter.get("user_properties"))


class Verdict(NamedTuple):
    """A message's columns in one stream's entry: what its rules make of the message (a tuple:
    one is made per message per stream)."""

    passes_filter: bool
    qualifies: bool
    labels: list[dict[str, Any]]


NOTHING: list[dict[str, Any]] = []


def evaluate(facts: MessageFacts, probabilities: dict[str, float], rules: StreamRules) -> Verdict:
    """One message against one stream's rules (``domain.stream.qualifies``, with the labels kept)."""
    return evaluate_window([rules], [(facts, probabilities)])[0][0]


def evaluate_window(
    rules: Sequence[StreamRules], items: Sequence[tuple[MessageFacts, Mapping[str, float]]]
) -> list[list[Verdict]]:
    """Every message of a window against every stream's rules at once: per stream, one verdict per item.

    The probabilities go into one dense matrix (messages x the streams' labels) and each stream's
    thresholds are compared with its columns in one numpy operation, instead of walking
    ``labels_returned`` once per message per stream; only the labels of the messages that meet a
    threshold are built in Python. Same result as ``domain.stream``: a label a prediction leaves
    out has probability 0, which meets only a threshold of 0; labels most probable first, ties by name.
    """
    columns: dict[str, int] = {}
    for r in rules:
        for name in r.thresholds:
            columns.setdefault(name, len(columns))
    matrix = np.zeros((len(items), max(1, len(columns))))
    for row, (_, probabilities) in enumerate(items):
        for name, probability in probabilities.items():
            column = columns.get(name)
            if column is not None:
                matrix[row, column] = probability
    names = list(columns)
    parts = {name: label_parts(name) for name in names}
    return [_verdicts(r, items, matrix, columns, names, parts) for r in rules]


def _verdicts(
    rules: StreamRules,
    items: Sequence[tuple[MessageFacts, Mapping[str, float]]],
    matrix: np.ndarray,
    columns: dict[str, int],
    names: list[str],
    parts: dict[str, list[str]],
) -> list[Verdict]:
    """One stream's verdicts over the window's probability matrix."""
    mine = np.array([columns[name] for name in rules.thresholds], dtype=np.intp)
    limits = np.array(list(rules.thresholds.values()), dtype=np.float64)
    met = matrix[:, mine] >= limits if len(mine) else np.zeros((len(items), 0), dtype=bool)
    hits = met.any(axis=1) if len(mine) else np.zeros(len(items), dtype=bool)
    if rules.comment_filter:
        passes = [passes_filter(f.comment, f.source_id, rules.comment_filter) for f, _ in items]
        out = [Verdict(ok, ok and rules.deliver_all_filtered, NOTHING) for ok in passes]
    else:
        # Most messages meet none of a stream's thresholds: they share one (immutable) verdict.
        passes = [True] * len(items)
        out = [Verdict(True, rules.deliver_all_filtered, NOTHING)] * len(items)
    for row in np.flatnonzero(hits).tolist():
        chosen = mine[met[row]]
        found = sorted(((float(matrix[row, c]), names[c]) for c in chosen), key=lambda x: (-x[0], x[1]))
        ok = passes[row]
        out[row] = Verdict(ok, ok, [{"name": parts[name], "probability": p} for p, name in found])
    return out


def _merge(
    conn: Target,
    stream: Any,
    items: Sequence[tuple[MessageFacts, dict[str, float]]],
    verdicts: list[Verdict],
    existing: dict[str, int],
) -> list[Entry]:
    """Refresh the undelivered entries of these messages (``existing``: their sequence ids in this
    stream); return the rows of those the stream has not seen, for the caller to insert."""
    if not existing and stream.reset_from is None:  # the usual case: messages predicted for the first time
        return _rows(stream, zip((facts for facts, _ in items), verdicts, strict=True))
    fresh, refresh = [], []
    for (facts, _), verdict in zip(items, verdicts, strict=True):
        seq = existing.get(facts.uid)
        if seq is None:
            if stream.reset_from is None or facts.created_at >= as_utc(stream.reset_from):
                fresh.append((facts, verdict))
        elif seq > stream.cursor:
            refresh.append({"k_seq": seq, **_verdict_columns(verdict)})
    _update_entries(conn, stream.stream_id, refresh)
    return _rows(stream, fresh)


def _verdict_columns(verdict: Verdict) -> dict[str, Any]:
    return {"passes_filter": verdict.passes_filter, "qualifies": verdict.qualifies, "labels": verdict.labels}


def _update_entries(conn: Target, stream_id: str, changes: list[dict[str, Any]]) -> None:
    """Set the verdict columns of entries (``k_seq`` each) in one executemany."""
    if not changes:
        return
    entries = t.stream_entries
    statement = (
        entries.update()
        .where(entries.c.stream_id == stream_id, entries.c.seq == sa.bindparam("k_seq"))
        .values(
            passes_filter=sa.bindparam("passes_filter"),
            qualifies=sa.bindparam("qualifies"),
            labels=sa.bindparam("labels", type_=entries.c.labels.type),
        )
    )
    conn.execute(statement, changes)


#: A new entry: stream id, sequence id, the message, and its verdict in that stream.
Entry = tuple[str, int, MessageFacts, Verdict]


def _rows(stream: Any, items: Iterable[tuple[MessageFacts, Verdict]]) -> list[Entry]:
    """New entries at the end of the stream, in the order given (ingestion order, which the callers sort by)."""
    stream_id = stream.stream_id
    return [(stream_id, seq, facts, verdict) for seq, (facts, verdict) in enumerate(items, stream.last_seq + 1)]


def _append_rows(conn: Target, rows: list[Entry]) -> None:
    """Insert new entries of one or more streams and move each stream's ``last_seq`` to its last."""
    if not rows:
        return
    _insert_entries(conn.conn, rows)
    last: dict[str, int] = {}
    for row in rows:
        last[row[0]] = max(last.get(row[0], 0), row[1])
    s = t.streams
    statement = s.update().where(s.c.stream_id == sa.bindparam("k_id")).values(last_seq=sa.bindparam("k_last"))
    conn.execute(statement, [{"k_id": k, "k_last": v} for k, v in sorted(last.items())])


#: The columns of ``stream_entries`` in the order ``_insert_entries`` copies them.
ENTRY_COLUMNS = [column.name for column in t.stream_entries.columns]
_EMPTY_JSON = json_dumps(NOTHING)


def entry_columns(entry: Entry) -> dict[str, Any]:
    """An entry as the row of ``stream_entries`` it becomes."""
    stream_id, seq, facts, verdict = entry
    return {
        "stream_id": stream_id,
        "seq": seq,
        "uid": facts.uid,
        "source_id": facts.source_id,
        "first_position": facts.first_position,
        "created_at": facts.created_at,
        "passes_filter": verdict.passes_filter,
        "probabilities": None,
        "qualifies": verdict.qualifies,
        "labels": verdict.labels,
    }


def _insert_entries(conn: Connection, rows: list[Entry]) -> None:
    """Insert entries: with COPY on PostgreSQL (a stream of a million messages gets a million
    entries, several times faster than a batched INSERT), the labels encoded once here as JSON
    text; a batched INSERT on SQLite."""
    if conn.dialect.name != "postgresql":
        for chunk in _chunks(rows):
            conn.execute(t.stream_entries.insert(), [entry_columns(entry) for entry in chunk])
        return
    # A replay builds the read models in another schema through SQLAlchemy's schema translation,
    # which a hand-written COPY must follow too.
    schema = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
    table = f'"{schema}".stream_entries' if schema else "stream_entries"
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {table} ({', '.join(ENTRY_COLUMNS)}) FROM STDIN") as copy:
        for start in range(0, len(rows), ADD_CHUNK):
            copy.write(_copy_lines(rows[start : start + ADD_CHUNK]))


_BOOL = {True: "t", False: "f"}


def _copy_text(value: str) -> str:
    """A value in COPY's text format: backslash, tab, newline and carriage return escaped
    (``str.replace`` finds nothing to do in almost every value, and costs next to nothing then)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_lines(rows: Sequence[Entry]) -> str:
    """Entries as lines of COPY text (``ENTRY_COLUMNS`` order, probabilities NULL): building them
    here costs a fraction of psycopg's per-value adaptation, on the hottest write of routing. A
    message gets an entry in every stream: its part of the line is escaped and formatted once."""
    messages: dict[str, str] = {}
    streams: dict[str, str] = {}
    lines = []
    for stream_id, seq, facts, (passes, qualifies, labels) in rows:
        message = messages.get(facts.uid)
        if message is None:
            message = messages[facts.uid] = (
                f"{_copy_text(facts.uid)}\t{_copy_text(facts.source_id)}\t{facts.first_position}\t"
                f"{facts.created_at.isoformat()}\t"
            )
        stream = streams.get(stream_id)
        if stream is None:
            stream = streams[stream_id] = _copy_text(stream_id)
        text = _copy_text(json_dumps(labels)) if labels else _EMPTY_JSON
        lines.append(f"{stream}\t{seq}\t{message}{_BOOL[bool(passes)]}\t\\N\t{_BOOL[bool(qualifies)]}\t{text}\n")
    return "".join(lines)


def _add_predicted(conn: Target, stream: Any, position: int) -> None:
    """Append every live message of the dataset predicted under the pinned version that the stream
    has no entry for (and, after a reset, first ingested at or after the reset time).

    A stream created over a large dataset meets a million predictions here, so they are taken in
    two passes that never hold them all: first every such message's first ingestion (position
    and time, no content) to put them in ingestion order, then ``ADD_CHUNK`` messages at a time
    with their probabilities (and content, if the filter needs it), appended in that order.
    """
    if stream is None or stream.model_version is None:
        return
    p, m, entries = t.predictions, t.messages, t.stream_entries
    uid = m.c.source_id + sa.literal(".") + m.c.comment_id
    # NOT EXISTS, an anti-join: NOT IN (subquery) is hashed only while the stream's uids fit in
    # work_mem, and past that PostgreSQL scans them again for every prediction.
    seen = sa.exists().where(entries.c.stream_id == stream.stream_id, entries.c.uid == p.c.uid)
    query = (
        sa.select(p.c.uid)
        .join(m, uid == p.c.uid)
        .where(
            p.c.dataset_id == stream.dataset_id,
            p.c.model_version == stream.model_version,
            m.c.deleted.is_(False),
            ~seen,
        )
    )
    first = first_ingestions(conn.log, list(conn.execute(query).scalars()), before=position)
    if stream.reset_from is not None:
        first = {u: f for u, f in first.items() if f[1] >= as_utc(stream.reset_from)}
    ordered = sorted(first, key=lambda u: (first[u][0], u))
    rules = _rules(stream)
    content = needs_content(rules)
    for chunk in _chunks(ordered, ADD_CHUNK):
        predicted = _probabilities(conn, stream, chunk)
        if content:
            facts = message_facts(conn.log, chunk, before=position)
        else:
            facts = {u: MessageFacts(u, u.partition(".")[0], *first[u], {}) for u in chunk}
        items = [(facts[u], predicted[u]) for u in chunk if u in facts and u in predicted]
        verdicts = evaluate_window([rules], items)[0]
        current = _stream(conn, stream.stream_id)
        _append_rows(conn, _rows(current, zip((f for f, _ in items), verdicts, strict=True)))


def _probabilities(conn: Target, stream: Any, uids: list[str]) -> dict[str, dict[str, float]]:
    """The pinned version's probabilities of these messages, from the predictions table."""
    p = t.predictions
    out: dict[str, dict[str, float]] = {}
    for chunk in _chunks(uids):
        query = sa.select(p.c.uid, p.c.labels).where(
            p.c.dataset_id == stream.dataset_id, p.c.model_version == stream.model_version, p.c.uid.in_(chunk)
        )
        out.update((row[0], row[1]) for row in conn.execute(query))
    return out


def _reevaluate(conn: Target, stream: Any) -> None:
    """Apply the stream's current rules to every entry past its cursor; write only what changed.

    The probabilities come from the ``predictions`` table: an entry past the cursor holds its
    message's newest prediction under the pinned version, and the batch is cut right after a
    ``ThresholdChanged`` (``REBASING``), so the table then holds exactly what the log recorded before it.
    """
    entries, p = t.stream_entries, t.predictions
    rules = _rules(stream)
    joined = entries.outerjoin(
        p,
        sa.and_(
            p.c.dataset_id == stream.dataset_id, p.c.model_version == stream.model_version, p.c.uid == entries.c.uid
        ),
    )
    after = stream.cursor
    while True:
        query = (
            sa.select(
                entries.c.seq,
                entries.c.uid,
                entries.c.passes_filter,
                entries.c.qualifies,
                entries.c.labels,
                p.c.labels.label("probabilities"),
            )
            .select_from(joined)
            .where(entries.c.stream_id == stream.stream_id, entries.c.seq > after)
            .order_by(entries.c.seq)
            .limit(ADD_CHUNK)
        )
        page = conn.execute(query).all()
        if not page:
            return
        items = [(MessageFacts(row.uid, "", 0, datetime.min, {}), row.probabilities or {}) for row in page]
        verdicts = evaluate_window([StreamRules(rules.thresholds, {}, rules.deliver_all_filtered)], items)[0]
        changes = []
        for row, verdict in zip(page, verdicts, strict=True):
            now = row.passes_filter and verdict.qualifies
            if (now, verdict.labels) != (row.qualifies, row.labels):
                changes.append({"k_seq": row.seq, **_verdict_columns(Verdict(row.passes_filter, now, verdict.labels))})
        _update_entries(conn, stream.stream_id, changes)
        after = page[-1].seq


def first_ingestions(conn: Connection, uids: Iterable[str], *, before: int) -> dict[str, tuple[int, datetime]]:
    """Per uid: the position and time of its first ``MessageIngested`` before log position ``before``
    (what ``message_facts`` gives as ``first_position`` and ``created_at``), without the content."""
    e = t.events
    by_aggregate = {}
    for uid in uids:
        source_id, _, comment_id = uid.partition(".")
        by_aggregate[message_aggregate_id(source_id, comment_id)] = uid
    out: dict[str, tuple[int, datetime]] = {}
    for chunk in _chunks(list(by_aggregate)):
        # One query a chunk: a message is ingested once or a few times, the first row of each wins.
        query = (
            sa.select(e.c.aggregate_id, e.c.position, e.c.occurred_at)
            .where(
                matches_any(conn, e.c.aggregate_id, chunk, "aggregates"),
                e.c.type == MessageIngested.type_name(),
                e.c.position < before,
            )
            .order_by(e.c.position.desc())
        )
        for aggregate_id, position, occurred_at in conn.execute(query):
            out[by_aggregate[aggregate_id]] = (position, occurred_at)
    return {uid: (position, as_utc(occurred_at)) for uid, (position, occurred_at) in out.items()}


def message_facts(conn: Connection, uids: Iterable[str], *, before: int) -> dict[str, MessageFacts]:
    """Per uid: its first ingestion (position and time) and its content as of log position ``before``."""
    e = t.events
    by_aggregate = {}
    for uid in uids:
        source_id, _, comment_id = uid.partition(".")
        by_aggregate[message_aggregate_id(source_id, comment_id)] = (uid, source_id)
    out: dict[str, MessageFacts] = {}
    for chunk in _chunks(list(by_aggregate)):
        query = (
            sa.select(e.c.aggregate_id, e.c.position, e.c.occurred_at, e.c.event_id, e.c.payload)
            .where(
                matches_any(conn, e.c.aggregate_id, chunk, "aggregates"),
                e.c.type == MessageIngested.type_name(),
                e.c.position < before,
            )
            .order_by(e.c.position)
        )
        found = conn.execute(query).all()
        comments = open_comments(conn, [(row.event_id, row.payload) for row in found])
        for (aggregate_id, position, occurred_at, _, _), comment in zip(found, comments, strict=True):
            uid, source_id = by_aggregate[aggregate_id]
            first = out.get(uid)
            out[uid] = MessageFacts(
                uid,
                source_id,
                first.first_position if first else position,
                first.created_at if first else as_utc(occurred_at),
                comment,
            )
    return out


# --- the stream row -------------------------------------------------------------------------------------------------


def _stream(conn: Target, stream_id: str) -> Any:
    return conn.execute(sa.select(t.streams).where(t.streams.c.stream_id == stream_id)).first()


def _update_stream(conn: Target, stream_id: str, at: datetime, **values: Any) -> None:
    conn.execute(t.streams.update().where(t.streams.c.stream_id == stream_id).values(updated_at=at, **values))


def _update_backlogs(conn: Connection, stream_ids: set[str]) -> None:
    """Backlog = qualifying entries past the cursor, counted again for each stream that changed."""
    s, entries = t.streams, t.stream_entries
    for stream_id in sorted(stream_ids):
        cursor = sa.select(s.c.cursor).where(s.c.stream_id == stream_id).scalar_subquery()
        count = (
            sa.select(sa.func.count())
            .select_from(entries)
            .where(entries.c.stream_id == stream_id, entries.c.qualifies, entries.c.seq > cursor)
            .scalar_subquery()
        )
        conn.execute(s.update().where(s.c.stream_id == stream_id).values(backlog=count))


def _chunks(items: list[Any], size: int = CHUNK) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


_HANDLERS = {
    StreamCreated: _created,
    ThresholdChanged: _threshold_changed,
    StreamModelChanged: _model_changed,
    StreamAdvanced: _advanced,
    StreamReset: _reset,
    StreamDeleted: _deleted,
    DatasetDeleted: _dataset_deleted,
    ExceptionReported: _exception_reported,
    ExceptionCleared: _exception_cleared,
    PredictionsRecorded: _predictions_recorded,
    MessageDeleted: _message_deleted,
    SourcePurged: _source_purged,
}

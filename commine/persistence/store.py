"""The event store: an append-only log with optimistic concurrency and a gapless global order.

One code path for PostgreSQL and SQLite (SQLAlchemy Core). Every append takes the log's write
lock (``LOCK TABLE ... IN EXCLUSIVE MODE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) so
that positions are handed out in commit order with no gaps: a reader that has seen position
*n* has seen everything before it. Batches are carried so the lock is taken once per batch,
not once per event (see ``../shared/reference/infra-notes.md``).

Customer text is sealed on the way in and opened on the way out by the store's ``Cipher``
(``persistence.encryption``): the stored ``MessageIngested`` keeps ids, timestamps and hashes in
clear and its comment's text as AES-GCM ciphertext under the source's data key. ``read_raw`` hands
the stored (sealed) payload on as it is, so events relayed onto the broker carry ciphertext too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa
from psycopg.rows import namedtuple_row
from sqlalchemy.engine import Connection, Engine

from commine.events import DomainEvent, EventRegistry, from_record, to_record
from commine.events import registry as default_registry
from commine.events.codec import EventRecord
from commine.persistence.encryption import INGESTED, Cipher, Keys, attach, default_cipher, is_sealed
from commine.persistence.engine import insert, is_sqlite
from commine.persistence.schema import events as events_table
from commine.persistence.schema import snapshots as snapshots_table

#: Column order of the COPY text: what is only known under the lock first.
COPY_COLUMNS = [
    "position",
    "recorded_at",
    "event_id",
    "aggregate_id",
    "aggregate_version",
    "type",
    "schema_version",
    "occurred_at",
    "actor",
    "payload",
]
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _escaped(text: str) -> str:
    """``text`` for a COPY text field; looking first is ten times quicker than translate() when,
    as nearly always, there is nothing to escape."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.translate(_COPY_ESCAPES)
    return text


def _copy_text(row: dict[str, Any]) -> str:
    """A row's COPY text format fields after position and recorded_at, escaped."""
    # Ids, numbers, type names and ISO times never hold a tab, newline or backslash; only the
    # free-form fields need escaping.
    return "\t".join(
        (
            str(row["event_id"]),
            _escaped(row["aggregate_id"]),
            str(row["aggregate_version"]),
            row["type"],
            str(row["schema_version"]),
            row["occurred_at"].isoformat(),
            _escaped(row["actor"]),
            _copy_json(row["payload"]),
        )
    )


def _copy_json(payload: Any) -> str:
    """A JSON payload for a COPY text field.

    JSON escapes every control character inside its strings, so a backslash is all that is left
    to double. On orjson's bytes, replace() takes a tenth of what it takes on the decoded text.
    """
    return orjson.dumps(payload).replace(b"\\", b"\\\\").decode()


#: The log's last row: the position new rows follow, and the time they may not precede.
_LAST_ROW = "SELECT position, recorded_at FROM events ORDER BY position DESC LIMIT 1"

#: Batches up to this many events appended in their own transaction go through the pipelined path.
PIPELINED = 64

#: The pipelined append's insert: rows numbered after the log's last position, in order, stamped
#: no earlier than the last row (like ``_insert``); run right after the table lock is granted.
_PIPELINED_INSERT = """
INSERT INTO events (position, recorded_at, event_id, aggregate_id, aggregate_version, type,
                    schema_version, occurred_at, actor, payload)
SELECT coalesce(last.position, 0) + v.n, greatest(%(now)s, coalesce(last.recorded_at, %(now)s)),
       v.event_id, v.aggregate_id, v.aggregate_version, v.type, v.schema_version, v.occurred_at,
       v.actor, v.payload::jsonb
FROM unnest(%(event_ids)s::uuid[], %(aggregate_ids)s::text[], %(versions)s::int[], %(types)s::text[],
            %(schema_versions)s::int[], %(occurred)s::timestamptz[], %(actors)s::text[],
            %(payloads)s::text[])
     WITH ORDINALITY AS v(event_id, aggregate_id, aggregate_version, type, schema_version, occurred_at,
                          actor, payload, n)
LEFT JOIN (SELECT position, recorded_at FROM events ORDER BY position DESC LIMIT 1) AS last ON true
RETURNING position
"""


def _pipelined_parameters(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "now": datetime.now(UTC),
        "event_ids": [row["event_id"] for row in rows],
        "aggregate_ids": [row["aggregate_id"] for row in rows],
        "versions": [row["aggregate_version"] for row in rows],
        "types": [row["type"] for row in rows],
        "schema_versions": [row["schema_version"] for row in rows],
        "occurred": [row["occurred_at"] for row in rows],
        "actors": [row["actor"] for row in rows],
        "payloads": [orjson.dumps(row["payload"]).decode() for row in rows],
    }


#: The relay's wire form of each event of a window (``read_wire``), built by PostgreSQL. Strings go
#: through ``to_json`` for their escaping; ``occurred_at`` is written as Python's ``isoformat()``
#: of a UTC time writes it (microseconds only when there are some).
_WIRE_QUERY = """
SELECT aggregate_id, type,
       convert_to('{"event_id":"' || event_id || '","type":' || to_json(type)
           || ',"schema_version":' || schema_version || ',"aggregate_id":' || to_json(aggregate_id)
           || ',"aggregate_version":' || aggregate_version || ',"occurred_at":"'
           || to_char(occurred_at AT TIME ZONE 'UTC',
                      CASE WHEN date_trunc('second', occurred_at) = occurred_at
                           THEN 'YYYY-MM-DD"T"HH24:MI:SS' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US' END)
           || '+00:00","actor":' || to_json(actor) || ',"position":' || position
           || ',"payload":' || payload || '}', 'UTF8')
FROM events WHERE position > %s AND position <= %s ORDER BY position
"""

#: The events of some aggregates after a version (``read_aggregates`` on PostgreSQL).
_AGGREGATES_QUERY = f"""
SELECT {", ".join(c.name for c in events_table.c)} FROM events
WHERE aggregate_id = ANY(%b) AND aggregate_version > %s ORDER BY aggregate_id, aggregate_version
"""

#: Ids per ``IN (...)`` clause; SQLite allows 32,766 bound parameters, PostgreSQL 65,535.
CHUNK = 1000
#: Events in a log that PostgreSQL has no statistics of yet before ``ensure_statistics`` analyzes it.
ANALYZE_AFTER = 1000


class _CarefulPath(Exception):
    """The pipelined append leaves the batch to the careful path (rolled back, nothing written)."""


class ConcurrencyError(Exception):
    """An append expected an aggregate version that another writer has moved past."""


@dataclass(frozen=True)
class StoredEvent:
    """An event as read back from the log, with where and when the log took it."""

    position: int
    recorded_at: datetime
    event: DomainEvent


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC (a naive input is taken as UTC).
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class EventStore:
    """Append and read domain events; idempotent by event id, versioned per aggregate."""

    def __init__(
        self, engine: Engine, registry: EventRegistry = default_registry, cipher: Cipher | None = None
    ) -> None:
        self.engine = engine
        self.registry = registry
        self._sqlite = is_sqlite(engine)
        self._has_statistics = self._sqlite
        #: Seals customer text on append, opens it on read; the environment's settings unless given.
        self.cipher = cipher if cipher is not None else default_cipher()
        # Readers that select payloads with their own queries open them with the same cipher.
        attach(engine, self.cipher)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction to append in together with other writes (receipts, tracking rows)."""
        with self.engine.begin() as conn:
            yield conn

    def append(self, events: Sequence[DomainEvent], conn: Connection | None = None) -> list[int]:
        """Append a batch atomically and return the positions of the events written.

        Each event's ``aggregate_version`` is its expectation: the first event of an aggregate in
        the batch must follow the version stored now, or ``ConcurrencyError`` is raised and
        nothing is written. An event whose id is stored already is skipped, so a redelivered
        batch writes nothing.
        """
        if conn is None:
            if not self._sqlite and 0 < len(events) <= PIPELINED:
                positions = self._append_pipelined(events)
                if positions is not None:
                    return positions
            with self.transaction() as own:
                return self.append(events, own)
        if not events:
            return []
        rows = self._prepare(events, conn)
        # Checked before the lock: versions only grow, so a problem seen now is one under the lock
        # too, and a version taken meanwhile is rejected by the unique index.
        if self._version_problem(conn, events, look_up_new=False) is None:
            # The common case, a batch of new events: one insert, no look-ups.
            positions = self._insert_new(conn, rows)
            if positions is not None:
                return positions
        else:
            self._lock(conn)
        fresh = self._without_stored(conn, events)
        if not fresh:
            return []
        problem = self._version_problem(conn, fresh, look_up_new=True)
        if problem is not None:
            raise ConcurrencyError(problem)
        # ``fresh`` keeps the first of any repeated id, and so does this.
        by_id = {row["event_id"]: row for row in reversed(rows)}
        try:
            with conn.begin_nested():
                return self._insert(conn, [by_id[event.event_id] for event in fresh])
        except sa.exc.IntegrityError as exc:
            raise ConcurrencyError(f"append conflicted with another writer: {exc.orig}") from None

    def ensure_statistics(self) -> bool:
        """Analyze the log once if PostgreSQL has no statistics of it yet; True once it has them
        (or this store ran ANALYZE).

        Without statistics the planner guesses that each id of ``aggregate_id IN (...)`` matches
        0.5 % of the rows, so 500 ids match all of them: every ingested batch's look-up of its
        messages became a parallel scan of the whole log, 17-48 ms a batch at 50,000 events,
        growing with the log. A new database's first load was quadratic until autovacuum's first
        ANALYZE, which under steady inserts had not come after three minutes. Analyzed once, the
        planner knows ids are nearly unique, and its estimate scales with the table from then on.
        SQLite's planner does not need it.
        """
        if self._has_statistics:
            return True
        has_them = sa.text("SELECT reltuples > 0 FROM pg_class WHERE oid = 'events'::regclass")
        with self.engine.connect() as conn:
            analyzed = bool(conn.execute(has_them).scalar())
            if not analyzed and self.last_position(conn) >= ANALYZE_AFTER:
                conn.execute(sa.text("ANALYZE events"))
                conn.commit()
                analyzed = True  # tried once: a role not allowed to analyze the log would be refused again
        self._has_statistics = analyzed
        return self._has_statistics

    def _append_pipelined(self, events: Sequence[DomainEvent]) -> list[int] | None:
        """A small batch in its own transaction, the lock and the insert in one round trip.

        Every round trip made while the log's lock is held is one every other writer waits for,
        and in a busy server process each can wait a GIL switch (5 ms) more: a command's append
        took eight (lock, savepoint, version look-up, last position, COPY twice, release, commit),
        which capped eight robots' advances at about 30 a second. Here the versions are checked
        before the lock (versions only grow, and the unique index rejects one taken meanwhile), and
        the lock and one ``INSERT ... SELECT`` that numbers the rows after the last position go
        in one pipeline: two round trips under the lock with the commit. None when the careful
        path must decide (a duplicate id, a version taken or not following on): it then runs in
        a fresh transaction.
        """
        try:
            with self.engine.begin() as conn:
                rows = self._prepare(events, conn, copy=False)
                if self._version_problem(conn, events, look_up_new=False) is not None:
                    raise _CarefulPath
                raw = conn.connection.dbapi_connection
                with raw.pipeline():  # type: ignore[union-attr]
                    raw.execute("LOCK TABLE events IN EXCLUSIVE MODE")  # type: ignore[union-attr]
                    inserted = raw.execute(_PIPELINED_INSERT, _pipelined_parameters(rows))  # type: ignore[union-attr]
                    positions = sorted(row[0] for row in inserted.fetchall())
                return positions
        except (_CarefulPath, psycopg.IntegrityError):
            return None
        except psycopg.DataError as exc:
            raise sa.exc.DataError("INSERT events", None, exc) from None

    def _prepare(self, events: Sequence[DomainEvent], conn: Connection, *, copy: bool = True) -> list[dict[str, Any]]:
        """Everything of the rows but position and recorded_at, worked out before taking the lock.

        The lock is held until commit, so every microsecond of work done under it is a
        microsecond every other writer waits; on PostgreSQL each row's COPY text is made here too
        (unless ``copy`` is false: the pipelined path sends the payloads as parameters), and
        customer text is sealed here (data keys are looked up once per source and batch).
        """
        rows = []
        for event in events:
            record = to_record(event)
            row = {
                "event_id": record.event_id,
                "aggregate_id": record.aggregate_id,
                "aggregate_version": record.aggregate_version,
                "type": record.type,
                "schema_version": record.schema_version,
                # In UTC: SQLite keeps only the wall-clock time, so +02:00 would read back shifted.
                "occurred_at": as_utc(record.occurred_at).astimezone(UTC),
                "actor": record.actor,
                "payload": record.payload,
            }
            rows.append(row)
        self.cipher.on_append(conn, rows)
        if copy and not self._sqlite:
            for row in rows:
                row["copy_text"] = _copy_text(row)
        return rows

    def _insert(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        last = conn.execute(
            sa.select(events_table.c.position, events_table.c.recorded_at)
            .order_by(events_table.c.position.desc())
            .limit(1)
        ).first()
        return self._insert_after(conn, None if last is None else tuple(last), rows)

    def _insert_after(
        self, conn: Connection, last: tuple[int, datetime] | None, rows: list[dict[str, Any]]
    ) -> list[int]:
        """Insert ``rows`` numbered after ``last``, the log's last (position, recorded_at), None if empty."""
        first = (last[0] if last else 0) + 1
        # recorded_at never goes backwards along the log, so "state at time T" is a prefix of it.
        now = datetime.now(UTC)
        recorded_at = max(now, as_utc(last[1])) if last else now
        positions = list(range(first, first + len(rows)))
        if self._sqlite:
            for position, row in zip(positions, rows, strict=True):
                row.update(position=position, recorded_at=recorded_at)
            conn.execute(events_table.insert(), rows)
        else:
            stamp = recorded_at.isoformat()
            self._copy(
                conn, "".join(f"{p}\t{stamp}\t{row['copy_text']}\n" for p, row in zip(positions, rows, strict=True))
            )
        return positions

    def _insert_new(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int] | None:
        """Take the lock and insert ``rows``; None, with the lock still held and nothing written,
        when a duplicate id or a taken version made the insert fail."""
        if self._sqlite:
            try:
                with conn.begin_nested():  # a savepoint keeps the transaction usable after a failure
                    return self._insert(conn, rows)
            except sa.exc.IntegrityError:
                return None
        return self._copy_locked(conn, rows)

    def _copy_locked(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int] | None:
        """PostgreSQL's ``_insert_new``: the lock, a savepoint and the last row in one round trip,
        then the COPY.

        The lock is held until commit and every writer waits for it, so each round trip made
        under it counts against all of them: taking it, the savepoint, reading the last position
        and releasing the savepoint were four, now one (COMMIT releases the savepoint). The
        savepoint comes after the lock, so rolling back to it keeps the lock.
        """
        raw = conn.connection.dbapi_connection
        with raw.pipeline():  # type: ignore[union-attr]
            raw.execute("LOCK TABLE events IN EXCLUSIVE MODE")  # type: ignore[union-attr]
            raw.execute("SAVEPOINT append_new")  # type: ignore[union-attr]
            last = raw.execute(_LAST_ROW).fetchone()  # type: ignore[union-attr]
        try:
            return self._insert_after(conn, last, rows)
        except sa.exc.IntegrityError:
            raw.execute("ROLLBACK TO SAVEPOINT append_new")  # type: ignore[union-attr]
            return None

    def _copy(self, conn: Connection, text: str) -> None:
        """Insert rows with PostgreSQL's COPY: about twice the rate of a batched INSERT.

        A duplicate id or version raises ``IntegrityError`` just as the INSERT would.
        """
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            with cursor.copy(f"COPY events ({', '.join(COPY_COLUMNS)}) FROM STDIN") as copy:
                copy.write(text)
        except psycopg.IntegrityError as exc:
            raise sa.exc.IntegrityError("COPY events", None, exc) from None
        except psycopg.DataError as exc:
            raise sa.exc.DataError("COPY events", None, exc) from None
        finally:
            cursor.close()

    def _lock(self, conn: Connection) -> None:
        if not self._sqlite:
            conn.execute(sa.text("LOCK TABLE events IN EXCLUSIVE MODE"))

    def _without_stored(self, conn: Connection, events: Sequence[DomainEvent]) -> list[DomainEvent]:
        stored: set[Any] = set()
        ids = [e.event_id for e in events]
        for chunk in _chunks(ids):
            stored.update(
                conn.execute(sa.select(events_table.c.event_id).where(events_table.c.event_id.in_(chunk))).scalars()
            )
        seen: set[Any] = set()
        fresh = []
        for event in events:
            if event.event_id not in stored and event.event_id not in seen:
                seen.add(event.event_id)
                fresh.append(event)
        return fresh

    def _version_problem(self, conn: Connection, events: Sequence[DomainEvent], *, look_up_new: bool) -> str | None:
        """Why ``events`` do not follow on from the log and from each other, or None when they do.

        With ``look_up_new=False`` aggregates whose first event here is version 1 are not looked up:
        the unique (aggregate, version) index rejects a second version 1 anyway, which keeps a batch
        of new messages free of look-ups.
        """
        first: dict[str, int] = {}
        for event in events:
            first.setdefault(event.aggregate_id, event.aggregate_version)
        checked = [aggregate_id for aggregate_id, version in first.items() if look_up_new or version != 1]
        current = self._current_versions(conn, checked) if checked else {}
        for aggregate_id in checked:
            version, actual = first[aggregate_id], current.get(aggregate_id, 0)
            if version != actual + 1:
                return f"{aggregate_id}: expected version {version - 1}, the log is at version {actual}"
        expected = dict(first)
        for event in events:
            if event.aggregate_version != expected[event.aggregate_id]:
                return (
                    f"{event.aggregate_id}: versions in one batch must follow each other "
                    f"(got {event.aggregate_version}, expected {expected[event.aggregate_id]})"
                )
            expected[event.aggregate_id] += 1
        return None

    def _current_versions(self, conn: Connection, aggregate_ids: list[str]) -> dict[str, int]:
        versions: dict[str, int] = {}
        for chunk in _chunks(aggregate_ids):
            query = (
                sa.select(events_table.c.aggregate_id, sa.func.max(events_table.c.aggregate_version))
                .where(events_table.c.aggregate_id.in_(chunk))
                .group_by(events_table.c.aggregate_id)
            )
            versions.update({row[0]: row[1] for row in conn.execute(query)})
        return versions

    def read_aggregate(
        self, aggregate_id: str, conn: Connection | None = None, *, after_version: int = 0
    ) -> list[DomainEvent]:
        """The aggregate's events, oldest first; with ``after_version``, only those after it."""
        return self.read_aggregates([aggregate_id], conn, after_version=after_version)[aggregate_id]

    def snapshot(self, aggregate_id: str, conn: Connection) -> tuple[int, dict[str, Any]] | None:
        """The newest snapshot of the aggregate: (its version, its state), or None."""
        s = snapshots_table
        row = conn.execute(sa.select(s.c.aggregate_version, s.c.state).where(s.c.aggregate_id == aggregate_id)).first()
        return None if row is None else (row.aggregate_version, row.state)

    def save_snapshot(self, aggregate_id: str, version: int, state: dict[str, Any], conn: Connection) -> None:
        """Keep the aggregate's state at ``version`` (committed events only), unless a newer one is kept."""
        s = snapshots_table
        now = datetime.now(UTC)
        row = {"aggregate_id": aggregate_id, "aggregate_version": version, "state": state, "taken_at": now}
        statement = insert(conn, s).values(row)
        newer = statement.excluded.aggregate_version > s.c.aggregate_version
        update = {"aggregate_version": statement.excluded.aggregate_version, "state": statement.excluded.state}
        conn.execute(statement.on_conflict_do_update(index_elements=["aggregate_id"], set_=update, where=newer))

    def read_aggregates(
        self, aggregate_ids: Sequence[str], conn: Connection | None = None, *, after_version: int = 0
    ) -> dict[str, list[DomainEvent]]:
        """The events of each aggregate after ``after_version``, oldest first (an empty list for one never
        written)."""
        if conn is None:
            with self.engine.connect() as own:
                return self.read_aggregates(aggregate_ids, own, after_version=after_version)
        found: dict[str, list[DomainEvent]] = defaultdict(list)
        for rows in self._aggregate_rows(conn, list(aggregate_ids), after_version):
            for stored in self._decode_rows(conn, rows):
                found[stored.event.aggregate_id].append(stored.event)
        return {aggregate_id: found.get(aggregate_id, []) for aggregate_id in aggregate_ids}

    def _aggregate_rows(
        self, conn: Connection, aggregate_ids: list[str], after_version: int
    ) -> Iterator[Sequence[Any]]:
        """The log rows of ``aggregate_ids`` after ``after_version``: on SQLite a chunk of ids at a
        time, on PostgreSQL all at once.

        On PostgreSQL the ids go as one array, in binary: rendering an ``IN`` list of 500
        parameters took SQLAlchemy and psycopg longer than the query (a tenth of an ingest
        worker's time), and a text array twice as long as a binary one. It is never prepared: a
        prepared plan made before the log had statistics (see ``ensure_statistics``) scanned the
        whole log for good, 4 s a batch at 1,000,000 events.
        """
        if not self._sqlite:
            cursor = conn.connection.dbapi_connection.cursor(row_factory=namedtuple_row)  # type: ignore[union-attr]
            with cursor:
                yield cursor.execute(_AGGREGATES_QUERY, (aggregate_ids, after_version), prepare=False).fetchall()
            return
        for chunk in _chunks(aggregate_ids):
            query = (
                sa.select(events_table)
                .where(events_table.c.aggregate_id.in_(chunk), events_table.c.aggregate_version > after_version)
                .order_by(events_table.c.aggregate_id, events_table.c.aggregate_version)
            )
            yield conn.execute(query).all()

    def read_all(
        self,
        after: int = 0,
        *,
        limit: int | None = None,
        until: datetime | None = None,
        to_position: int | None = None,
        exclude_types: Collection[str] = (),
        conn: Connection | None = None,
        batch_size: int = 2000,
    ) -> Iterator[StoredEvent]:
        """Events after ``after`` in log order.

        ``until`` stops at the first event recorded later, ``to_position`` after that position;
        ``exclude_types`` leaves events of those types out (they are never decoded).
        """
        if conn is None:
            with self.engine.connect() as own:
                yield from self.read_all(
                    after,
                    limit=limit,
                    until=until,
                    to_position=to_position,
                    exclude_types=exclude_types,
                    conn=own,
                    batch_size=batch_size,
                )
            return
        remaining = limit
        position = after
        while remaining is None or remaining > 0:
            size = batch_size if remaining is None else min(batch_size, remaining)
            query = (
                sa.select(events_table)
                .where(events_table.c.position > position)
                .order_by(events_table.c.position)
                .limit(size)
            )
            if to_position is not None:
                query = query.where(events_table.c.position <= to_position)
            if exclude_types:
                query = query.where(events_table.c.type.not_in(list(exclude_types)))
            if until is not None:
                # SQLite compares the stored UTC wall-clock text, so ``until`` must be UTC too.
                query = query.where(events_table.c.recorded_at <= as_utc(until).astimezone(UTC))
            rows = conn.execute(query).all()
            yield from self._decode_rows(conn, rows)
            if len(rows) < size:
                return
            position = rows[-1].position
            if remaining is not None:
                remaining -= len(rows)

    def read_raw(self, after: int, to_position: int, *, conn: Connection) -> list[Any]:
        """Rows after ``after`` up to ``to_position``, the payload as JSON text, undecoded: for
        relaying at speed. Customer text stays sealed: a subscriber opens it with
        ``encryption.open_comments`` (it needs the database's data keys and the master key)."""
        columns = [c for c in events_table.c if c.name != "payload"]
        query = (
            sa.select(*columns, sa.cast(events_table.c.payload, sa.Text).label("payload_json"))
            .where(events_table.c.position > after, events_table.c.position <= to_position)
            .order_by(events_table.c.position)
        )
        return list(conn.execute(query))

    def read_wire(self, after: int, to_position: int, *, conn: Connection) -> list[tuple[str, str, bytes]]:
        """(aggregate id, type, wire form) of each event after ``after`` up to ``to_position``, in order.

        The wire form is ``events.codec.record_to_dict`` with the position, as UTF-8 JSON. On
        PostgreSQL the server builds it: reading 4,000 rows into Python and writing each one out
        again as JSON was a tenth of an ingest worker's time. The payload stays as stored (sealed
        text sealed, see ``read_raw``).
        """
        if self._sqlite:
            return [(row.aggregate_id, row.type, _wire(row)) for row in self.read_raw(after, to_position, conn=conn)]
        with conn.connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
            # Binary: as text, each body would come as hex twice its size, to be decoded here.
            return cursor.execute(_WIRE_QUERY, (after, to_position), binary=True).fetchall()

    def last_position(self, conn: Connection | None = None) -> int:
        if conn is None:
            with self.engine.connect() as own:
                return self.last_position(own)
        return conn.execute(sa.select(sa.func.coalesce(sa.func.max(events_table.c.position), 0))).scalar_one()

    def _decode_rows(self, conn: Connection, rows: Sequence[Any]) -> list[StoredEvent]:
        """Rows as events, their sealed text opened (the keys they need are read in one query)."""
        keys = self.cipher.keys_for(conn, ((row.type, row.payload) for row in rows))
        return [self._decode(row, keys) for row in rows]

    def _decode(self, row: Any, keys: Keys) -> StoredEvent:
        payload = row.payload
        if row.type == INGESTED and is_sealed(payload):
            # A purged source's text comes back as a placeholder, so replay still runs end to end.
            payload = self.cipher.open_payload(keys, row.event_id, payload)
        record = EventRecord(
            event_id=row.event_id,
            type=row.type,
            schema_version=row.schema_version,
            aggregate_id=row.aggregate_id,
            aggregate_version=row.aggregate_version,
            occurred_at=as_utc(row.occurred_at),
            actor=row.actor,
            payload=payload,
            position=row.position,
        )
        return StoredEvent(row.position, as_utc(row.recorded_at), from_record(record, self.registry))


def _wire(row: Any) -> bytes:
    """``_WIRE_QUERY``'s wire form of one ``read_raw`` row, in Python (for SQLite)."""
    envelope = {
        "event_id": str(row.event_id),
        "type": row.type,
        "schema_version": row.schema_version,
        "aggregate_id": row.aggregate_id,
        "aggregate_version": row.aggregate_version,
        "occurred_at": as_utc(row.occurred_at).astimezone(UTC).isoformat(),
        "actor": row.actor,
        "position": row.position,
    }
    return orjson.dumps(envelope)[:-1] + b',"payload":' + row.payload_json.encode() + b"}"

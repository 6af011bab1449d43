"""Engines for PostgreSQL and SQLite, database creation and Alembic migrations on first use."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url

MIGRATIONS = Path(__file__).with_name("migrations")


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def _configure_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event open transactions, so that we can make them IMMEDIATE:
        # a deferred transaction that reads and then writes deadlocks against another writer.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def insert(conn: Connection, table: sa.Table) -> Any:
    """An INSERT with ``on_conflict_do_*``: PostgreSQL and SQLite spell it alike, in two dialects."""
    return (sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert)(table)


def json_dumps(value: Any) -> str:
    # orjson: payloads are the bulk of what the store writes, and it encodes them ~5x faster.
    return orjson.dumps(value).decode()


def text_array(name: str, values: Sequence[str]) -> Any:
    """A list of strings as one text parameter, cast to ``varchar[]`` by PostgreSQL.

    psycopg adapts a list parameter element by element in Python, about 4 µs each: 2.6 ms for
    the 500 uids of one prediction event, against 0.3 ms for the same array sent as one string.
    Each element is quoted, so commas, braces, quotes and backslashes in it stay its own.
    """
    literal = "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"
    return sa.cast(sa.bindparam(name, literal, type_=sa.Text), postgresql.ARRAY(sa.String))


def matches_any(conn: Connection, column: Any, values: Sequence[str], name: str) -> Any:
    """``column IN values``: one array parameter on PostgreSQL (``text_array``), so the statement's
    text is the same for any number of values and psycopg prepares it once; an ``IN`` list elsewhere."""
    if conn.dialect.name == "postgresql":
        return column == sa.any_(text_array(name, values))
    return column.in_(values)


def probe_each(given: Any, probe: Any, name: str) -> Any:
    """``probe`` run once per row of ``given`` (a ``LATERAL`` subquery that refers to it), so
    PostgreSQL looks each key up by index whatever its statistics say.

    Written as a join, a look-up of 500 keys was planned from statistics that lag behind a growing
    table (or, for a table analyzed while empty, from none): each key taken for 1/200 of the rows,
    or 500 keys for 2 rows, and every row of the table read and hashed against them. ``OFFSET 0``
    keeps PostgreSQL from flattening the subquery back into that join.
    """
    found = probe.offset(0).lateral(name)
    return sa.select(found).select_from(given.join(found, sa.true()))


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for SQLite the parent folder is created and writers serialised."""
    json_options: dict[str, Any] = {"json_serializer": json_dumps, "json_deserializer": orjson.loads}
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, **json_options)
        _configure_sqlite(engine)
        return engine
    # No JIT compilation: it pays off on long analytical queries, and this workload is short ones
    # whose cost estimates cross jit_above_cost when statistics lag behind a growing table (the
    # streams projection's look-up of 500 uids spent 5.5 ms compiling to run for 12). A URL that
    # sets its own ``options`` keeps them.
    connect_args = {} if "options" in make_url(url).query else {"options": "-c jit=off"}
    engine = sa.create_engine(url, pool_size=10, max_overflow=20, connect_args=connect_args, **json_options)
    _ping_when_idle(engine, ALIVE_WITHOUT_PING)
    return engine


#: Seconds after its last use during which a pooled connection is taken as alive without a ping
#: (HikariCP's ``aliveBypassWindowMs`` is 0.5 s too).
ALIVE_WITHOUT_PING = 0.5


def _ping_when_idle(engine: Engine, window: float) -> None:
    """Ping a pooled connection on checkout, as ``pool_pre_ping`` does, unless it was checked in
    less than ``window`` seconds ago; a dead one is replaced before the caller sees it.

    On a busy path every checkout's ping was a round trip of its own: eleven of the 42 statements
    of a robot's fetch + advance. A connection back from work a moment ago is alive unless the
    server went down in that moment, and then one statement fails as it would have anyway.
    """

    @sa.event.listens_for(engine, "checkin")
    def checkin(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        record.info["checked_in"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def checkout(dbapi_connection, record, _proxy):  # type: ignore[no-untyped-def]
        if time.monotonic() - record.info.get("checked_in", float("-inf")) < window:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, dbapi_connection, None):
                raise sa.exc.DisconnectionError(str(exc)) from exc  # the pool connects afresh and retries
            raise


@contextmanager
def autocommit(engine: Engine) -> Iterator[Connection]:
    """A pooled connection whose statements each commit on their own, for reads and single-statement
    writes on a busy path (every API request): no BEGIN before them and no ROLLBACK or COMMIT after.

    Under READ COMMITTED a transaction gives reads nothing (each statement takes its own snapshot
    anyway), and in a server's threads each round trip also waits its turn for the GIL on the way
    back: a robot's fetch and advance made 57 statements, 42 without those transactions. On
    SQLite, a transaction as ``engine.begin()`` opens it (writers there must be ``IMMEDIATE``,
    which the begin hook sees to).
    """
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in ``url`` if it does not exist yet."""
    if is_sqlite(url):
        return
    target = make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
            ).scalar()
            if not exists:
                try:
                    conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
                except (sa.exc.ProgrammingError, sa.exc.IntegrityError) as exc:
                    # Another process starting at the same moment created it first.
                    if "already exists" not in str(exc.orig) and "duplicate key" not in str(exc.orig):
                        raise
    finally:
        admin.dispose()


def drop_database(url: str) -> None:
    """Drop a PostgreSQL database (tests use it to clean up after themselves)."""
    target = make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
    finally:
        admin.dispose()


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is there already)."""
    command.upgrade(alembic_config(engine), "head")

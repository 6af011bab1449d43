"""Pooled PostgreSQL connections are pinged on checkout unless they came back from work a moment ago."""

from __future__ import annotations

import time

import sqlalchemy as sa

from commine.persistence.engine import ALIVE_WITHOUT_PING, make_engine


def _backend(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_killed_while_idle_is_replaced_before_anyone_uses_it(pg_url: str) -> None:
    engine, admin = make_engine(pg_url), make_engine(pg_url)
    try:
        doomed = _backend(engine)
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": doomed}).scalar()
        time.sleep(ALIVE_WITHOUT_PING + 0.2)
        assert _backend(engine) != doomed  # the ping found it dead; the pool connected afresh
    finally:
        engine.dispose()
        admin.dispose()


def test_only_a_connection_idle_for_longer_than_the_window_is_pinged(pg_url: str) -> None:
    engine = make_engine(pg_url)
    pings: list[object] = []
    ping = engine.dialect.do_ping
    engine.dialect.do_ping = lambda dbapi_connection: pings.append(dbapi_connection) or ping(dbapi_connection)  # type: ignore[method-assign]
    try:
        first = _backend(engine)  # a new connection: pinged
        assert _backend(engine) == first  # back a moment ago: not pinged
        assert len(pings) == 1
        time.sleep(ALIVE_WITHOUT_PING + 0.2)
        assert _backend(engine) == first
        assert len(pings) == 2
    finally:
        engine.dispose()

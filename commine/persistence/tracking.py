"""Tracking rows: how far along the log a handler with outside effects has got."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from commine.persistence.schema import tracking


def lock_position(conn: Connection, name: str, table: sa.Table = tracking) -> int:
    """The position named ``name``, row-locked until the transaction ends (0 the first time).

    The lock makes a second runner of the same handler wait instead of doing the same work twice.
    """
    insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
    conn.execute(insert(table).values(name=name, position=0).on_conflict_do_nothing())
    query = sa.select(table.c.position).where(table.c.name == name)
    if conn.dialect.name != "sqlite":
        query = query.with_for_update()
    return int(conn.execute(query).scalar_one())


def save_position(conn: Connection, name: str, position: int, table: sa.Table = tracking) -> None:
    conn.execute(table.update().where(table.c.name == name).values(position=position))

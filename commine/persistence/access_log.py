"""The access log: append a record of a read or an API call, and page through them in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from commine.persistence import schema as t
from commine.persistence.engine import autocommit

#: Longest action kept: a path with a long query string is cut, never refused.
MAX_ACTION = 2048


@dataclass(frozen=True)
class Access:
    """Who did what, from where, to which project's data, and with what outcome."""

    actor: str
    channel: str
    client: str
    action: str
    project: str | None = None
    status: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


def record(engine: Engine, access: Access, at: datetime | None = None) -> None:
    """Append one access on its own (one INSERT, committed by itself): it stands whatever the request does next."""
    with autocommit(engine) as conn:
        append(conn, access, at)


def append(conn: Connection, access: Access, at: datetime | None = None) -> None:
    """Append one access in the caller's transaction."""
    row = {
        "at": at or datetime.now(UTC),
        "actor": access.actor[:256],
        "channel": access.channel,
        "client": access.client[:256],
        "action": access.action[:MAX_ACTION],
        "project": access.project,
        "status": access.status,
        "detail": access.detail,
    }
    conn.execute(t.access_log.insert(), row)  # one statement compiled once, the row as parameters


def page(
    conn: Connection,
    *,
    after: int,
    minimum: datetime | None = None,
    maximum: datetime | None = None,
    actors: list[str] | None = None,
    limit: int = 1000,
) -> list[Any]:
    """Up to ``limit`` accesses after the id ``after``, oldest first, within the time and actor filters."""
    a = t.access_log
    query = sa.select(a).where(a.c.access_id > after)
    if minimum is not None:
        query = query.where(a.c.at >= minimum)
    if maximum is not None:
        query = query.where(a.c.at <= maximum)
    if actors:
        query = query.where(a.c.actor.in_(actors))
    return list(conn.execute(query.order_by(a.c.access_id).limit(limit)))

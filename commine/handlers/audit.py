"""The audit trail: every change (the event log) and every access (the access log), as one ordered query.

Changes are events, signed by their actor; the log already holds them. Reads change nothing, so they go in
the access log: each API call of an authenticated user (who, when, from which address, which route, with
which answer) and each CLI command that shows customer data. ``query`` merges both by time, scoped to the
projects where the caller may read audit logs; it never returns customer text, only who did what to which
resource and when.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from commine.persistence import access_log
from commine.persistence import schema as t
from commine.persistence.access_log import Access
from commine.persistence.engine import autocommit
from commine.persistence.store import EventStore, as_utc

#: The event type an access has in the audit query, beside the event log's own types.
ACCESS = "DataAccessed"
#: Deletions: their entries carry the reason given, beside who deleted what and when.
DELETIONS = ("MessageDeleted", "SourcePurged", "DatasetDeleted")
#: Rows read per round trip while filling a page with what the caller may see.
SCAN = 1000
_RESOURCE = re.compile(r"^/api/(?:v1|_private)/(?:sources|datasets|projects)/([^/]+)")


@dataclass(frozen=True)
class AuditFilter:
    minimum: datetime | None = None
    maximum: datetime | None = None
    #: Event type names; ``DataAccessed`` selects accesses. None: every change and every access.
    event_types: list[str] | None = None
    actors: list[str] | None = None


@dataclass(frozen=True)
class AuditPage:
    entries: list[dict[str, Any]]
    #: Dataset rows the entries name, by id.
    datasets: list[Any]
    continuation: str | None


# --- recording --------------------------------------------------------------------------------------------------


def record_cli_read(store: EventStore, actor: str, command: str, project: str | None, **detail: Any) -> None:
    """A CLI command that showed customer data: who ran it, on which host, which process."""
    client = f"{socket.gethostname()} pid {os.getpid()}"
    access_log.record(store.engine, Access(actor, "cli", client, command, project, 0, detail))


def record_api_call(store: EventStore, actor: str, client: str, method: str, path: str, status: int) -> None:
    """An API call of an authenticated user, with the project its path names: one INSERT committed on
    its own, one round trip on the hot path (in a transaction it was three: BEGIN, INSERT, COMMIT)."""
    with autocommit(store.engine) as conn:
        project = project_of_path(conn, path)
        access_log.append(conn, Access(actor, "api", client, f"{method} {path}", project, status))


def project_of_path(conn: Connection, path: str) -> str | None:
    """The project an API path is about: ``acme`` of ``/api/v1/sources/acme/inbox`` or of ``id:<source id>``."""
    found = _RESOURCE.match(path)
    if found is None:
        return None
    segment = unquote(found.group(1))
    if not segment.startswith("id:"):
        return segment.partition("/")[0]
    ident = segment.removeprefix("id:")
    for table, key in ((t.sources, t.sources.c.source_id), (t.datasets, t.datasets.c.dataset_id)):
        project = conn.execute(sa.select(table.c.project).where(key == ident)).scalar()
        if project is not None:
            return str(project)
    return None


# --- the query --------------------------------------------------------------------------------------------------


def parse_continuation(text: str | None) -> tuple[int, int]:
    """(event position, access id) after which a page starts; ValueError for one this server did not hand out."""
    if text is None:
        return 0, 0
    position, _, access = text.partition(".")
    if not position.isdigit() or not (access.isdigit() or access == "") or len(text) > 40:
        raise ValueError("continuation: not one this server handed out")
    return int(position), int(access or 0)


def query(
    store: EventStore, wanted: AuditFilter, visible: Callable[[str | None], bool], *, after: str | None, limit: int
) -> AuditPage:
    """Up to ``limit`` changes and accesses the caller may see, oldest first, and where the next page starts."""
    position, access_id = parse_continuation(after)
    with store.engine.connect() as conn:
        sources = dict(conn.execute(sa.select(t.sources.c.source_id, t.sources.c.project)).all())
        datasets = {row.dataset_id: row for row in conn.execute(sa.select(t.datasets))}
        changes, changes_done = _changes(conn, wanted, visible, position, limit, (sources, datasets))
        accesses, accesses_done = _accesses(conn, wanted, visible, access_id, limit)
    merged = sorted(changes + accesses, key=lambda entry: (entry["timestamp"], entry["position"] or 0))
    page = merged[:limit]
    more = len(merged) > limit or not (changes_done and accesses_done)
    last_position = max((e["position"] for e in page if e["position"] is not None), default=position)
    last_access = max((e["access_id"] for e in page if e["access_id"] is not None), default=access_id)
    named = sorted({i for entry in page for i in entry["dataset_ids"]})
    continuation = f"{last_position}.{last_access}" if more and page else None
    return AuditPage(page, [datasets[i] for i in named], continuation)


def _changes(
    conn: Connection,
    wanted: AuditFilter,
    visible: Callable[[str | None], bool],
    after: int,
    limit: int,
    owners: tuple[dict[str, str], dict[str, Any]],
) -> tuple[list[dict[str, Any]], bool]:
    """Visible events after the position ``after``, up to ``limit``; and whether the log ran out first."""
    types = [name for name in wanted.event_types or [] if name != ACCESS]
    if wanted.event_types is not None and not types:
        return [], True
    e = t.events
    reason = sa.case((e.c.type.in_(DELETIONS), e.c.payload["reason"].as_string()), else_=None).label("reason")
    query = sa.select(e.c.position, e.c.event_id, e.c.type, e.c.aggregate_id, e.c.actor, e.c.recorded_at, reason)
    if wanted.minimum is not None:
        query = query.where(e.c.recorded_at >= wanted.minimum)
    if wanted.maximum is not None:
        query = query.where(e.c.recorded_at <= wanted.maximum)
    if types:
        query = query.where(e.c.type.in_(types))
    if wanted.actors:
        query = query.where(e.c.actor.in_(wanted.actors))
    found: list[dict[str, Any]] = []
    while True:
        rows = conn.execute(query.where(e.c.position > after).order_by(e.c.position).limit(SCAN)).all()
        for row in rows:
            after = row.position
            project = project_of(row.aggregate_id, *owners)
            if visible(project):
                found.append(_change(row, project, owners[1]))
                if len(found) == limit:
                    return found, False
        if len(rows) < SCAN:
            return found, True


def _accesses(
    conn: Connection, wanted: AuditFilter, visible: Callable[[str | None], bool], after: int, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Visible accesses after the id ``after``, up to ``limit``; and whether the access log ran out first."""
    if wanted.event_types is not None and ACCESS not in wanted.event_types:
        return [], True
    found: list[dict[str, Any]] = []
    while True:
        rows = access_log.page(
            conn, after=after, minimum=wanted.minimum, maximum=wanted.maximum, actors=wanted.actors, limit=SCAN
        )
        for row in rows:
            after = row.access_id
            if visible(row.project):
                found.append(_access(row))
                if len(found) == limit:
                    return found, False
        if len(rows) < SCAN:
            return found, True


def project_of(aggregate_id: str, sources: dict[str, str], datasets: dict[str, Any]) -> str | None:
    """The project an aggregate lives in, from its id; None for global ones (users) or unknown kinds."""
    kind, _, rest = aggregate_id.partition(":")
    if kind == "project":
        return rest
    if kind in ("source", "dataset"):
        return rest.partition("/")[0]
    if kind == "message":
        return sources.get(rest.partition("/")[0])
    dataset = datasets.get(rest if kind == "models" else rest.partition("/")[0])
    if kind in ("annotation", "predictions", "models") and dataset is not None:
        return str(dataset.project)
    return None


def _change(row: Any, project: str | None, datasets: dict[str, Any]) -> dict[str, Any]:
    kind, _, rest = row.aggregate_id.partition(":")
    dataset_id = rest.partition("/")[0] if kind in ("annotation", "predictions", "models") else None
    return {
        "event_id": str(row.event_id),
        "event_type": row.type,
        "timestamp": as_utc(row.recorded_at),
        "actor": row.actor,
        "project": project,
        "dataset_ids": [dataset_id] if dataset_id in datasets else [],
        "position": row.position,
        "aggregate_id": row.aggregate_id,
        "access_id": None,
        "reason": row.reason,
    }


def _access(row: Any) -> dict[str, Any]:
    return {
        "event_id": f"access-{row.access_id}",
        "event_type": ACCESS,
        "timestamp": as_utc(row.at),
        "actor": row.actor,
        "project": row.project,
        "dataset_ids": [],
        "position": None,
        "aggregate_id": None,
        "access_id": row.access_id,
        "channel": row.channel,
        "client": row.client,
        "action": row.action,
        "status": row.status,
    }

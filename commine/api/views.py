"""Read-model look-ups and the reference's response shapes (field names exactly as its ``re`` client reads them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from commine.api.errors import ApiError
from commine.domain.comment import format_timestamp
from commine.domain.names import LABEL_SEPARATOR, check_project_name, check_resource_name
from commine.persistence import schema as t
from commine.persistence.encryption import open_comments, purged_message
from commine.persistence.store import as_utc

#: Label group of every label: commine has one taxonomy per dataset, the reference's default group.
DEFAULT_GROUP = "default"


def when(moment: datetime) -> str:
    return format_timestamp(as_utc(moment))


def check_names(project: str, name: str | None = None, kind: str = "source") -> None:
    """400 for a project or resource name the reference would not accept."""
    check_project_name(project)
    if name is not None:
        check_resource_name(kind, name)


# --- sources -------------------------------------------------------------------------------------


def source_row(  # type: ignore[no-untyped-def]
    conn: Connection,
    *,
    project: str | None = None,
    name: str | None = None,
    source_id: str | None = None,
    gone: bool = False,
):
    """A live source by name or id, or 404; with ``gone``, 410 when the source was purged (a read of its
    content, which the purge destroyed, should say so rather than that it never existed)."""
    query = sa.select(t.sources)
    if source_id is not None:
        query = query.where(t.sources.c.source_id == source_id)
    else:
        query = query.where(t.sources.c.project == project, t.sources.c.name == name)
    row = conn.execute(query.where(t.sources.c.purged.is_(False))).first()
    if row is None:
        what = f"id:{source_id}" if source_id is not None else f"{project}/{name}"
        purged = conn.execute(query.order_by(t.sources.c.updated_at.desc())).first() if gone else None
        if purged is not None:
            raise ApiError(410, purged_message(f"source {what}", as_utc(purged.updated_at)))
        raise ApiError(404, f"source {what} does not exist")
    return row


def source_rows(conn: Connection, projects: list[str] | None) -> list[Any]:
    """Live sources, of the given projects only unless None."""
    query = sa.select(t.sources).where(t.sources.c.purged.is_(False)).order_by(t.sources.c.project, t.sources.c.name)
    if projects is not None:
        query = query.where(t.sources.c.project.in_(projects))
    return list(conn.execute(query))


def source_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.source_id,
        "owner": row.project,
        "name": row.name,
        "title": row.title,
        "description": row.description,
        "language": row.language,
        "should_translate": row.should_translate,
        "sensitive_properties": list(row.sensitive_properties or []),
        "created_at": when(row.created_at),
        "updated_at": when(row.updated_at),
        "_kind": row.kind,
    }


# --- comments ------------------------------------------------------------------------------------


def comment_view(
    comment: dict[str, Any],
    source_id: str,
    created_at: datetime,
    *,
    has_annotations: bool = False,
    hidden: list[str] | None = None,
) -> dict[str, Any]:
    """The reference's Comment: the stored comment plus ``uid``, ``created_at`` and ``has_annotations``.

    ``hidden`` user properties (a source's sensitive ones, for a reader without
    ``sources-read-sensitive``) are left out.
    """
    out = dict(comment)
    if hidden and out.get("user_properties"):
        out["user_properties"] = {k: v for k, v in out["user_properties"].items() if k not in hidden}
    out.setdefault("user_properties", {})
    out["uid"] = f"{source_id}.{comment['id']}"
    out["created_at"] = when(created_at)
    out["has_annotations"] = has_annotations
    return out


def stored_comments(conn: Connection, rows: list[Any]) -> dict[int, dict[str, Any]]:
    """The comment of each message row, read from the event its ``position`` names."""
    positions = [row.position for row in rows]
    out: dict[int, dict[str, Any]] = {}
    for start in range(0, len(positions), 1000):
        query = sa.select(t.events.c.position, t.events.c.event_id, t.events.c.payload).where(
            t.events.c.position.in_(positions[start : start + 1000])
        )
        found = conn.execute(query).all()
        opened = open_comments(conn, [(row.event_id, row.payload) for row in found])
        out.update((row.position, comment) for row, comment in zip(found, opened, strict=True))
    return out


def annotated_uids(conn: Connection, uids: list[str], dataset_id: str | None = None) -> set[str]:
    """Those uids with any label decision (in one dataset, or in any)."""
    a = t.annotations
    found: set[str] = set()
    for start in range(0, len(uids), 1000):
        query = sa.select(a.c.uid, a.c.assigned, a.c.dismissed).where(a.c.uid.in_(uids[start : start + 1000]))
        if dataset_id is not None:
            query = query.where(a.c.dataset_id == dataset_id)
        found.update(uid for uid, assigned, dismissed in conn.execute(query) if assigned or dismissed)
    return found


# --- datasets ------------------------------------------------------------------------------------


def dataset_row(
    conn: Connection, *, project: str | None = None, name: str | None = None, dataset_id: str | None = None
):  # type: ignore[no-untyped-def]
    query = sa.select(t.datasets)
    if dataset_id is not None:
        query = query.where(t.datasets.c.dataset_id == dataset_id)
    else:
        query = query.where(t.datasets.c.project == project, t.datasets.c.name == name)
    row = conn.execute(query).first()
    if row is None:
        what = f"id:{dataset_id}" if dataset_id is not None else f"{project}/{name}"
        raise ApiError(404, f"dataset {what} does not exist")
    return row


def dataset_rows(conn: Connection, projects: list[str] | None) -> list[Any]:
    query = sa.select(t.datasets).order_by(t.datasets.c.project, t.datasets.c.name)
    if projects is not None:
        query = query.where(t.datasets.c.project.in_(projects))
    return list(conn.execute(query))


def label_defs(conn: Connection, dataset_id: str) -> list[dict[str, Any]]:
    query = sa.select(t.labels).where(t.labels.c.dataset_id == dataset_id).order_by(t.labels.c.name)
    return [{"name": row.name, "description": row.description} for row in conn.execute(query)]


def dataset_view(conn: Connection, row: Any) -> dict[str, Any]:
    sources = conn.execute(
        sa.select(t.dataset_sources.c.source_id)
        .where(t.dataset_sources.c.dataset_id == row.dataset_id)
        .order_by(t.dataset_sources.c.source_id)
    ).scalars()
    labels = label_defs(conn, row.dataset_id)
    return {
        "id": row.dataset_id,
        "name": row.name,
        "owner": row.project,
        "title": row.title,
        "description": row.description,
        "created": when(row.created),
        "last_modified": when(row.last_modified),
        "model_family": "english",
        "source_ids": list(sources),
        "has_sentiment": row.has_sentiment,
        "entity_defs": [],
        "general_fields": [],
        "label_defs": labels,
        "label_groups": [{"name": DEFAULT_GROUP, "label_defs": labels}],
        "_dataset_flags": [],
        "_model_config": {"kind": "cm"},
    }


def label_parts(name: str) -> list[str]:
    return name.split(LABEL_SEPARATOR)

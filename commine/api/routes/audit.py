"""The audit-event query: the event log itself, filtered by time, type and actor, scoped by permission.

Each event belongs to the project its aggregate lives in (a source's, a dataset's, a message's
source's ...); a caller sees the events of the projects where it holds ``audit-read``. Events of
no project (users, tokens, permissions) are for global administrators only. Payloads are left
out: the audit log says who did what to which resource and when, never the customer text.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter
from pydantic import BaseModel, Field

from commine.api.deps import Caller, Store
from commine.api.errors import ApiError
from commine.api.views import when
from commine.domain.access import AUDIT_READ, Principal, allowed
from commine.domain.comment import parse_timestamp
from commine.domain.errors import CommentError
from commine.persistence import schema as t

router = APIRouter(tags=["audit"])

PAGE_DEFAULT, PAGE_MAX = 128, 1024
TENANT = "default"


class TimestampFilter(BaseModel):
    minimum: str | None = None
    maximum: str | None = None


class AuditFilter(BaseModel):
    timestamp: TimestampFilter = Field(default_factory=TimestampFilter)
    #: commine's additions: event type names (``SourceCreated``) and actors (``api:alice``).
    event_types: list[str] | None = Field(None, max_length=100)
    actors: list[str] | None = Field(None, max_length=100)


class AuditQuery(BaseModel):
    filter: AuditFilter = Field(default_factory=AuditFilter)
    continuation: str | None = None
    limit: int = Field(PAGE_DEFAULT, ge=1, le=PAGE_MAX)


def _owners(conn: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """Project of every source id, and every dataset row by id."""
    sources = dict(conn.execute(sa.select(t.sources.c.source_id, t.sources.c.project)).all())
    datasets = {row.dataset_id: row for row in conn.execute(sa.select(t.datasets))}
    return sources, datasets


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
        return dataset.project
    return None


def _moment(value: str | None, field: str) -> Any:
    if value is None:
        return None
    try:
        return parse_timestamp(value, f"filter.timestamp.{field}").astimezone(UTC)
    except CommentError as exc:
        raise ApiError(400, str(exc)) from None


def _after(continuation: str | None) -> int:
    if continuation is None:
        return 0
    if not continuation.isdigit() or len(continuation) > 18:
        raise ApiError(400, "continuation: not one this server handed out")
    return int(continuation)


@router.post("/api/v1/audit_events/query", summary="Query the audit log")
def query_audit_events(body: AuditQuery, store: Store, user: Caller) -> dict[str, Any]:
    if not user.admin and not any(AUDIT_READ in names for names in user.permissions.values()):
        raise ApiError(403, f"user {user.username!r} lacks the permission {AUDIT_READ!r} in every project")
    e = t.events
    query = sa.select(e.c.position, e.c.event_id, e.c.type, e.c.aggregate_id, e.c.actor, e.c.recorded_at).where(
        e.c.position > _after(body.continuation)
    )
    minimum, maximum = (
        _moment(body.filter.timestamp.minimum, "minimum"),
        _moment(body.filter.timestamp.maximum, "maximum"),
    )
    if minimum is not None:
        query = query.where(e.c.recorded_at >= minimum)
    if maximum is not None:
        query = query.where(e.c.recorded_at <= maximum)
    if body.filter.event_types:
        query = query.where(e.c.type.in_(body.filter.event_types))
    if body.filter.actors:
        query = query.where(e.c.actor.in_(body.filter.actors))
    found: list[dict[str, Any]] = []
    last = None
    with store.store.engine.connect() as conn:
        sources, datasets = _owners(conn)
        # Scan in chunks until a page of visible events is full: a caller may see few of them.
        position = _after(body.continuation)
        while len(found) < body.limit:
            rows = conn.execute(query.where(e.c.position > position).order_by(e.c.position).limit(1000)).all()
            for row in rows:
                position = row.position
                project = project_of(row.aggregate_id, sources, datasets)
                if _visible(user, project):
                    found.append(_event(row, project, datasets))
                    if len(found) == body.limit:
                        last = position
                        break
            if len(rows) < 1000:
                break
        named = [datasets[i] for i in sorted({i for event in found for i in event["dataset_ids"]})]
    return _response(found, named, None if last is None else str(last))


def _visible(user: Principal, project: str | None) -> bool:
    return allowed(user, project, AUDIT_READ)


def _event(row: Any, project: str | None, datasets: dict[str, Any]) -> dict[str, Any]:
    kind, _, rest = row.aggregate_id.partition(":")
    dataset_id = rest.partition("/")[0] if kind in ("annotation", "predictions", "models") else None
    return {
        "event_id": str(row.event_id),
        "event_type": row.type,
        "timestamp": when(row.recorded_at),
        "actor_user_id": row.actor,
        "actor_tenant_id": TENANT,
        "tenant_ids": [TENANT],
        "project_ids": [project] if project is not None else [],
        "dataset_ids": [dataset_id] if dataset_id in datasets else [],
        # commine's additions: where in the log, and which aggregate.
        "position": row.position,
        "aggregate_id": row.aggregate_id,
    }


def _response(events: list[dict[str, Any]], datasets: list[Any], continuation: str | None) -> dict[str, Any]:
    """The reference's response: the events and the users, projects, datasets and tenants they name."""
    actors = sorted({event["actor_user_id"] for event in events})
    projects = sorted({p for event in events for p in event["project_ids"]})
    return {
        "status": "ok",
        "audit_events": events,
        "users": [{"id": a, "username": a, "display_name": a, "email": "", "tenant_id": TENANT} for a in actors],
        "projects": [{"id": p, "name": p, "tenant_id": TENANT} for p in projects],
        "datasets": [{"id": d.dataset_id, "name": d.name, "project_id": d.project, "title": d.title} for d in datasets],
        "tenants": [{"id": TENANT, "name": TENANT}],
        "continuation": continuation,
    }

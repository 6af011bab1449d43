"""The audit-event query: changes (the event log) and accesses (the access log), filtered by time, type and
actor, scoped by permission (``commine.handlers.audit``).

Each entry belongs to a project: an event to the project its aggregate lives in, an access to the project
its route names. A caller sees the entries of the projects where it holds ``audit-read``; those of no project
(users, tokens, permissions, global routes) are for global administrators only. Payloads are left out: the
audit log says who did what to which resource, from where and when, never the customer text.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from commine.api.deps import Caller, Store
from commine.api.errors import ApiError
from commine.api.views import when
from commine.domain.access import AUDIT_READ, allowed
from commine.domain.comment import parse_timestamp
from commine.domain.errors import CommentError
from commine.handlers import audit

router = APIRouter(tags=["audit"])

PAGE_DEFAULT, PAGE_MAX = 128, 1024
TENANT = "default"


class TimestampFilter(BaseModel):
    minimum: str | None = None
    maximum: str | None = None


class AuditFilter(BaseModel):
    timestamp: TimestampFilter = Field(default_factory=TimestampFilter)
    #: commine's additions: event type names (``SourceCreated``, or ``DataAccessed`` for reads and API calls)
    #: and actors (``api:alice``).
    event_types: list[str] | None = Field(None, max_length=100)
    actors: list[str] | None = Field(None, max_length=100)


class AuditQuery(BaseModel):
    filter: AuditFilter = Field(default_factory=AuditFilter)
    continuation: str | None = None
    limit: int = Field(PAGE_DEFAULT, ge=1, le=PAGE_MAX)


def _moment(value: str | None, field: str) -> Any:
    if value is None:
        return None
    try:
        return parse_timestamp(value, f"filter.timestamp.{field}").astimezone(UTC)
    except CommentError as exc:
        raise ApiError(400, str(exc)) from None


@router.post("/api/v1/audit_events/query", summary="Query the audit log: changes and accesses")
def query_audit_events(body: AuditQuery, store: Store, user: Caller) -> dict[str, Any]:
    if not user.admin and not any(AUDIT_READ in names for names in user.permissions.values()):
        raise ApiError(403, f"user {user.username!r} lacks the permission {AUDIT_READ!r} in every project")
    wanted = audit.AuditFilter(
        minimum=_moment(body.filter.timestamp.minimum, "minimum"),
        maximum=_moment(body.filter.timestamp.maximum, "maximum"),
        event_types=body.filter.event_types,
        actors=body.filter.actors,
    )
    try:
        page = audit.query(
            store.store,
            wanted,
            lambda project: allowed(user, project, AUDIT_READ),
            after=body.continuation,
            limit=body.limit,
        )
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return _response(page)


def _entry(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry in the reference's shape, with commine's additions after it."""
    shaped = {
        "event_id": entry["event_id"],
        "event_type": entry["event_type"],
        "timestamp": when(entry["timestamp"]),
        "actor_user_id": entry["actor"],
        "actor_tenant_id": TENANT,
        "tenant_ids": [TENANT],
        "project_ids": [entry["project"]] if entry["project"] is not None else [],
        "dataset_ids": entry["dataset_ids"],
        # commine's additions: where in the log and which aggregate (changes); how and from where (accesses).
        "position": entry["position"],
        "aggregate_id": entry["aggregate_id"],
    }
    if entry.get("reason") is not None:
        shaped["reason"] = entry["reason"]
    if entry["access_id"] is not None:
        shaped.update({k: entry[k] for k in ("access_id", "channel", "client", "action", "status")})
    return shaped


def _response(page: audit.AuditPage) -> dict[str, Any]:
    """The reference's response: the entries and the users, projects, datasets and tenants they name."""
    events = [_entry(entry) for entry in page.entries]
    actors = sorted({event["actor_user_id"] for event in events})
    projects = sorted({p for event in events for p in event["project_ids"]})
    return {
        "status": "ok",
        "audit_events": events,
        "users": [{"id": a, "username": a, "display_name": a, "email": "", "tenant_id": TENANT} for a in actors],
        "projects": [{"id": p, "name": p, "tenant_id": TENANT} for p in projects],
        "datasets": [
            {"id": d.dataset_id, "name": d.name, "project_id": d.project, "title": d.title} for d in page.datasets
        ],
        "tenants": [{"id": TENANT, "name": TENANT}],
        "continuation": page.continuation,
    }

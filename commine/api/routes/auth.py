"""``GET /api/auth/user`` (every ``re`` command calls it first) and the ``_private`` projects routes."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter
from pydantic import BaseModel, Field

from commine.api.deps import Caller, Store, actor, require
from commine.api.errors import ApiError
from commine.api.views import check_names, when
from commine.domain.access import PERMISSIONS, ROOT, Principal
from commine.domain.source import MAX_DESCRIPTION, MAX_TITLE
from commine.handlers import commands
from commine.handlers.access import user_details
from commine.persistence import schema as t

router = APIRouter(tags=["auth"])


@router.get("/api/auth/user", summary="The caller")
def current_user(store: Store, user: Caller) -> dict[str, Any]:
    details = user_details(store.store.engine, user.username)
    return {
        "status": "ok",
        "user": {
            "id": user.user_id,
            "username": user.username,
            "email": details["email"],
            "created": when(details["created_at"]),
            "global_permissions": [ROOT] if user.admin else [],
            "organisation_permissions": {
                project: sorted(names, key=list(PERMISSIONS).index)
                for project, names in sorted(user.permissions.items())
            },
            "sso_global_permissions": [],
            "verified": True,
        },
    }


def _project_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.name,
        "name": row.name,
        "title": row.title,
        "description": row.description,
        "created_at": when(row.created_at),
        "updated_at": when(row.created_at),
    }


def _visible(user: Principal, project: str) -> bool:
    return user.admin or bool(user.permissions.get(project))


@router.get("/api/_private/projects", summary="Projects the caller holds any permission in")
def list_projects(store: Store, user: Caller) -> dict[str, Any]:
    with store.store.engine.connect() as conn:
        rows = conn.execute(sa.select(t.projects).order_by(t.projects.c.name)).all()
    return {"status": "ok", "projects": [_project_view(r) for r in rows if _visible(user, r.name)]}


@router.get("/api/_private/projects/{project}", summary="One project")
def get_project(project: str, store: Store, user: Caller) -> dict[str, Any]:
    check_names(project)
    if not _visible(user, project):
        raise ApiError(403, f"user {user.username!r} holds no permission in project {project!r}")
    with store.store.engine.connect() as conn:
        row = conn.execute(sa.select(t.projects).where(t.projects.c.name == project)).first()
    if row is None:
        raise ApiError(404, f"project {project!r} does not exist")
    return {"status": "ok", "project": _project_view(row)}


class ProjectFields(BaseModel):
    title: str | None = Field(None, max_length=MAX_TITLE)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)


class ProjectRequest(BaseModel):
    project: ProjectFields = Field(default_factory=ProjectFields)
    user_ids: list[str] | None = None


@router.put("/api/_private/projects/{project}", summary="Create a project (global administrators)")
def create_project(project: str, body: ProjectRequest, store: Store, user: Caller) -> dict[str, Any]:
    check_names(project)
    require(user, None, "projects-admin")
    commands.create_project(
        store.store,
        project,
        title=body.project.title or "",
        description=body.project.description or "",
        actor=actor(user),
    )
    store.written()
    return get_project(project, store, user)

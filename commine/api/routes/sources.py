"""Sources: list, get, create, update, delete (``/api/v1/sources``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from commine.api.deps import API_REASON, Caller, Reason, Store, actor, require
from commine.api.errors import ApiError
from commine.api.views import check_names, source_row, source_rows, source_view
from commine.domain.access import SOURCES_ADMIN, SOURCES_READ, allowed
from commine.domain.source import MAX_DESCRIPTION, MAX_TITLE, SOURCE_ID
from commine.handlers import commands

router = APIRouter(prefix="/api/v1/sources", tags=["sources"])

LANGUAGES = ("en", "de", "xlm")


class SourceFields(BaseModel):
    """The settings of a source the reference lets a client set; every one optional."""

    title: str | None = Field(None, max_length=MAX_TITLE)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    language: str | None = None
    should_translate: bool | None = None
    sensitive_properties: list[str] | None = None
    bucket_id: str | None = None
    kind: str | None = Field(None, alias="_kind", max_length=64)
    email_transform_tag: str | None = None


class SourceRequest(BaseModel):
    source: SourceFields = Field(default_factory=SourceFields)


def _by_id(ref: str) -> str | None:
    """The source id of an ``id:<hex>`` path segment; None for a project name; 400 for a bad id."""
    if not ref.startswith("id:"):
        return None
    source_id = ref.removeprefix("id:")
    if not SOURCE_ID.fullmatch(source_id):
        raise ApiError(400, f"a source id is 16 lower-case hex digits, got {source_id!r}")
    return source_id


@router.get("", summary="List the sources the caller may see")
def list_sources(store: Store, user: Caller) -> dict[str, Any]:
    with store.store.engine.connect() as conn:
        rows = source_rows(conn, None)
    return {"status": "ok", "sources": [source_view(r) for r in rows if allowed(user, r.project, SOURCES_READ)]}


@router.get("/{ref}", summary="The sources of a project, or one source by id (`id:<hex>`)")
def project_sources(ref: str, store: Store, user: Caller) -> dict[str, Any]:
    source_id = _by_id(ref)
    with store.store.engine.connect() as conn:
        if source_id is not None:
            row = source_row(conn, source_id=source_id)
            require(user, row.project, SOURCES_READ)
            return {"status": "ok", "source": source_view(row)}
        check_names(ref)
        require(user, ref, SOURCES_READ)
        return {"status": "ok", "sources": [source_view(r) for r in source_rows(conn, [ref])]}


def _answer(store: Store, project: str, name: str) -> dict[str, Any]:
    """The source as it is after a write (the writer needs no read permission to see what it wrote)."""
    with store.store.engine.connect() as conn:
        return {"status": "ok", "source": source_view(source_row(conn, project=project, name=name))}


@router.get("/{project}/{name}", summary="One source")
def get_source(project: str, name: str, store: Store, user: Caller) -> dict[str, Any]:
    check_names(project, name)
    require(user, project, SOURCES_READ)
    with store.store.engine.connect() as conn:
        return {"status": "ok", "source": source_view(source_row(conn, project=project, name=name))}


@router.put("/{project}/{name}", summary="Create a source")
def create_source(project: str, name: str, body: SourceRequest, store: Store, user: Caller) -> dict[str, Any]:
    check_names(project, name)
    require(user, project, SOURCES_ADMIN)
    fields = body.source
    if fields.language is not None and fields.language not in LANGUAGES:
        raise ApiError(400, f"language must be one of {', '.join(LANGUAGES)}, got {fields.language!r}")
    commands.create_source(
        store.store,
        f"{project}/{name}",
        title=fields.title or "",
        description=fields.description or "",
        language=fields.language or "en",
        kind=fields.kind or "unknown",
        should_translate=bool(fields.should_translate),
        sensitive_properties=fields.sensitive_properties or [],
        actor=actor(user),
    )
    store.written()
    return _answer(store, project, name)


@router.post("/{project}/{name}", summary="Update a source")
def update_source(project: str, name: str, body: SourceRequest, store: Store, user: Caller) -> dict[str, Any]:
    check_names(project, name)
    require(user, project, SOURCES_ADMIN)
    fields = body.source
    with store.store.engine.connect() as conn:
        source_row(conn, project=project, name=name)
    commands.update_source(
        store.store,
        f"{project}/{name}",
        title=fields.title,
        description=fields.description,
        should_translate=fields.should_translate,
        sensitive_properties=fields.sensitive_properties,
        actor=actor(user),
    )
    store.written()
    return _answer(store, project, name)


@router.delete("/{ref}", summary="Delete a source by id (`id:<hex>`)")
def delete_source(ref: str, store: Store, user: Caller, reason: Reason = None) -> dict[str, Any]:
    source_id = _by_id(ref)
    if source_id is None:
        raise ApiError(400, "delete a source by its id: DELETE /api/v1/sources/id:<source id>")
    with store.store.engine.connect() as conn:
        row = source_row(conn, source_id=source_id)
    require(user, row.project, SOURCES_ADMIN)
    commands.delete_source(store.store, f"{row.project}/{row.name}", reason=reason or API_REASON, actor=actor(user))
    store.written()
    return {"status": "ok"}

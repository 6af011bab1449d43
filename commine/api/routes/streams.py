"""Streams of a dataset: list, create, get, update, delete; fetch, advance, reset; exceptions.

The reference's shapes (``/api/v1/datasets/<p>/<d>/streams...``) over ``handlers.streams``, which
raises ``DomainError`` (400) and ``NotFound`` (404) with messages fit for the caller. Reading and
consuming a stream needs ``triggers-consume``; creating, updating and deleting one
``triggers-admin``.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from commine.api.deps import Caller, Store, actor, require
from commine.api.errors import ApiError
from commine.api.views import check_names
from commine.domain.access import SOURCES_READ_SENSITIVE, STREAMS_ADMIN, STREAMS_CONSUME, Principal, allowed
from commine.domain.names import check_resource_name
from commine.domain.source import MAX_DESCRIPTION, MAX_TITLE
from commine.domain.stream import MAX_EXCEPTION_TYPE, check_threshold
from commine.handlers import streams

router = APIRouter(tags=["streams"])

BASE = "/api/v1/datasets/{project}/{name}/streams"
STREAM = BASE + "/{stream}"
#: Bounds of fetch's ``size`` and ``max_filtered``.
MAX_FETCH = streams.MAX_FETCH


class LabelThreshold(BaseModel):
    name: str | list[str]
    threshold: float = Field(ge=0, le=1)


class StreamModel(BaseModel):
    version: int | None = Field(None, ge=1, strict=True)
    label_thresholds: list[LabelThreshold] | None = None


class NewStream(BaseModel):
    name: str
    title: str | None = Field(None, max_length=MAX_TITLE)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    comment_filter: dict[str, Any] | None = None
    model: StreamModel | None = None
    #: commine's own: deliver every message passing the filter (the thresholds only trim its labels).
    deliver_all_filtered: bool = False


class CreateRequest(BaseModel):
    stream: NewStream


class StreamChanges(BaseModel):
    title: str | None = None
    description: str | None = None
    comment_filter: dict[str, Any] | None = None
    model: StreamModel | None = None


class UpdateRequest(BaseModel):
    stream: StreamChanges = Field(default_factory=StreamChanges)


class FetchRequest(BaseModel):
    size: int = Field(ge=1, le=MAX_FETCH, strict=True)
    max_filtered: int | None = Field(None, ge=1, le=MAX_FETCH, strict=True)


class AdvanceRequest(BaseModel):
    sequence_id: str | int


class ResetRequest(BaseModel):
    to_comment_created_at: str


class ExceptionMetadata(BaseModel):
    type: str = Field("", max_length=MAX_EXCEPTION_TYPE)


class StreamException(BaseModel):
    uid: str
    metadata: ExceptionMetadata = Field(default_factory=ExceptionMetadata)


class ExceptionsRequest(BaseModel):
    exceptions: list[StreamException]


def _open(user: Principal, project: str, name: str, stream: str | None, permission: str) -> str:
    """Check the names and the permission; the dataset's full name, as the services take it."""
    check_names(project, name, "dataset")
    if stream is not None:
        check_resource_name("stream", stream)
    require(user, project, permission)
    return f"{project}/{name}"


def _storable(value: Any, where: str) -> None:
    """400 for a NUL character anywhere in ``value``: PostgreSQL cannot store it (in text or JSON)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ApiError(400, f"{where} contains a NUL character (U+0000), which cannot be stored")
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key, where)
            _storable(item, where)
    elif isinstance(value, list | tuple):
        for item in value:
            _storable(item, where)


def _thresholds(model: StreamModel | None) -> list[dict[str, Any]]:
    return [item.model_dump() for item in (model.label_thresholds or [])] if model is not None else []


@router.get(BASE, summary="List a dataset's streams")
def list_streams(project: str, name: str, store: Store, user: Caller) -> dict[str, Any]:
    dataset = _open(user, project, name, None, STREAMS_CONSUME)
    return {"status": "ok", "streams": streams.list_streams(store.store, dataset)}


@router.put(BASE, summary="Create a stream")
def create_stream(project: str, name: str, body: CreateRequest, store: Store, user: Caller) -> dict[str, Any]:
    fields = body.stream
    dataset = _open(user, project, name, fields.name, STREAMS_ADMIN)
    _storable(fields.model_dump(), "stream")
    created = streams.create_stream(
        store.store,
        dataset,
        fields.name,
        model_version=fields.model.version if fields.model is not None else None,
        label_thresholds=_thresholds(fields.model),
        comment_filter=fields.comment_filter,
        title=fields.title or "",
        description=fields.description or "",
        deliver_all_filtered=fields.deliver_all_filtered,
        actor=actor(user),
    )
    store.written()
    return {"status": "ok", "stream": created}


@router.get(STREAM, summary="One stream")
def get_stream(project: str, name: str, stream: str, store: Store, user: Caller) -> dict[str, Any]:
    dataset = _open(user, project, name, stream, STREAMS_CONSUME)
    return {"status": "ok", "stream": streams.get_stream(store.store, dataset, stream)}


@router.post(STREAM, summary="Update a stream: pin another model version, change label thresholds")
def update_stream(
    project: str, name: str, stream: str, body: UpdateRequest, store: Store, user: Caller
) -> dict[str, Any]:
    """``model.version`` re-pins what is not yet delivered; each of ``model.label_thresholds`` sets
    that label's threshold (labels not named keep theirs). Both apply past the cursor."""
    dataset = _open(user, project, name, stream, STREAMS_ADMIN)
    changes = body.stream
    if changes.title is not None or changes.description is not None or changes.comment_filter is not None:
        raise ApiError(400, "commine cannot change a stream's title, description or comment_filter yet")
    thresholds = _thresholds(changes.model)
    _storable(thresholds, "stream.model.label_thresholds")
    for item in thresholds:  # all checked before anything is recorded
        check_threshold(item["name"], item["threshold"])
    streams.get_stream(store.store, dataset, stream)  # 404 before anything is recorded
    who = actor(user)
    if changes.model is not None and changes.model.version is not None:
        streams.pin_model(store.store, dataset, stream, changes.model.version, actor=who)
    for item in thresholds:
        streams.change_threshold(store.store, dataset, stream, item["name"], item["threshold"], actor=who)
    store.written()
    return {"status": "ok", "stream": streams.get_stream(store.store, dataset, stream)}


@router.delete(STREAM, summary="Delete a stream")
def delete_stream(project: str, name: str, stream: str, store: Store, user: Caller) -> dict[str, Any]:
    dataset = _open(user, project, name, stream, STREAMS_ADMIN)
    streams.delete_stream(store.store, dataset, stream, actor=actor(user))
    store.written()
    return {"status": "ok"}


@router.post(STREAM + "/fetch", summary="The next results past the cursor (the cursor does not move)")
def fetch(project: str, name: str, stream: str, body: FetchRequest, store: Store, user: Caller) -> Response:
    """Encoded with orjson straight away: the batch is plain JSON already (it came out of JSON
    columns), and FastAPI's generic encoder walks every value of up to 1,024 comments in Python,
    several milliseconds a batch on the robots' hottest call."""
    dataset = _open(user, project, name, stream, STREAMS_CONSUME)
    hide = not allowed(user, project, SOURCES_READ_SENSITIVE)
    batch = streams.fetch(
        store.store, dataset, stream, size=body.size, max_filtered=body.max_filtered, hide_sensitive=hide
    )
    return Response(orjson.dumps({"status": "ok", **batch}), media_type="application/json")


@router.post(STREAM + "/advance", summary="Move the cursor past a sequence_id that fetch returned")
def advance(project: str, name: str, stream: str, body: AdvanceRequest, store: Store, user: Caller) -> dict[str, Any]:
    dataset = _open(user, project, name, stream, STREAMS_CONSUME)
    # The service caught the read models up already: a second catch-up on the robots' hottest
    # write only queued on the checkpoint lock again.
    streams.advance(store.store, dataset, stream, str(body.sequence_id), actor=actor(user))
    store.nudge()
    return {"status": "ok"}


@router.post(STREAM + "/reset", summary="Deliver again what was first ingested at or after a time")
def reset(project: str, name: str, stream: str, body: ResetRequest, store: Store, user: Caller) -> dict[str, Any]:
    dataset = _open(user, project, name, stream, STREAMS_CONSUME)
    streams.reset(store.store, dataset, stream, body.to_comment_created_at, actor=actor(user))
    store.written()
    return {"status": "ok", "sequence_id": streams.get_stream(store.store, dataset, stream)["cursor"]}


@router.get(STREAM + "/exceptions", summary="The comments tagged as exceptions of a stream (commine's own)")
def list_exceptions(project: str, name: str, stream: str, store: Store, user: Caller) -> dict[str, Any]:
    dataset = _open(user, project, name, stream, STREAMS_CONSUME)
    return {"status": "ok", "exceptions": streams.list_exceptions(store.store, dataset, stream)}


@router.put(STREAM + "/exceptions", summary="Tag comments (by uid) as exceptions")
def tag_exceptions(
    project: str, name: str, stream: str, body: ExceptionsRequest, store: Store, user: Caller
) -> dict[str, Any]:
    dataset = _open(user, project, name, stream, STREAMS_CONSUME)
    items = [item.model_dump() for item in body.exceptions]
    _storable(items, "exceptions")
    streams.tag_exceptions(store.store, dataset, stream, items, actor=actor(user))
    store.written()
    return {"status": "ok"}


@router.delete(STREAM + "/exceptions", summary="Untag exceptions (`?uid=a&uid=b`)")
def untag_exceptions(
    project: str,
    name: str,
    stream: str,
    store: Store,
    user: Caller,
    uid: Annotated[list[str] | None, Query()] = None,
) -> dict[str, Any]:
    dataset = _open(user, project, name, stream, STREAMS_CONSUME)
    uids = list(dict.fromkeys(uid or []))
    if not uids:
        raise ApiError(400, "name the exceptions to untag: ?uid=<source id>.<comment id>&uid=...")
    _storable(uids, "uid")
    streams.untag_exceptions(store.store, dataset, stream, uids, actor=actor(user))
    store.written()
    return {"status": "ok"}

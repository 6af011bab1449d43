"""Comments of a source: sync, get, delete, and the ``_private`` create and paging routes ``re`` uses."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel

from commine.api.deps import API_REASON, Caller, Reason, Services, Store, actor, require
from commine.api.errors import ApiError
from commine.api.views import annotated_uids, check_names, comment_view, source_row, stored_comments
from commine.domain.access import SOURCES_ADMIN, SOURCES_READ, SOURCES_READ_SENSITIVE, Principal, allowed
from commine.domain.comment import normalise_comment, parse_timestamp
from commine.domain.errors import CommentError
from commine.domain.message import Message, message_aggregate_id
from commine.handlers.ingest import MAX_BATCH, handle_ingest
from commine.handlers.labels import live_messages
from commine.persistence import schema as t
from commine.persistence.encryption import is_purged, purged_message
from commine.persistence.store import as_utc

router = APIRouter(tags=["comments"])

#: Page size of ``GET /_private/sources/<p>/<s>/comments``: the ``re`` client's default and maximum.
PAGE_DEFAULT, PAGE_MAX = 64, 256


class CommentsRequest(BaseModel):
    """Comments in the reference's shape; each is checked by ``domain.comment``, which names the bad field."""

    comments: list[dict[str, Any]]


def _checked(comments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every comment normalised, or 400 naming the first bad one: a sync stores all or nothing."""
    if len(comments) > MAX_BATCH:
        raise ApiError(400, f"at most {MAX_BATCH} comments per request, got {len(comments)}")
    out = []
    for index, comment in enumerate(comments):
        try:
            out.append(normalise_comment(comment))
        except CommentError as exc:
            raise ApiError(400, f"comments[{index}].{exc.field}: {exc.reason}") from None
    ids = [c["id"] for c in out]
    if len(set(ids)) != len(ids):
        raise ApiError(400, "a comment id appears twice in one request")
    return out


def _store_comments(store: Services, user: Principal, project: str, name: str, comments: list[dict[str, Any]]) -> Any:
    body = {"batch_id": uuid.uuid4().hex, "source": f"{project}/{name}", "actor": actor(user), "comments": comments}
    receipt = handle_ingest(store.store, body)
    store.written()
    return receipt


@router.post("/api/v1/sources/{project}/{name}/sync", summary="Create or update comments by id (idempotent)")
def sync(
    project: str, name: str, body: CommentsRequest, store: Store, user: Caller, no_charge: bool = False
) -> dict[str, Any]:
    check_names(project, name)
    require(user, project, SOURCES_ADMIN)
    comments = _checked(body.comments)
    with store.store.engine.connect() as conn:
        source_row(conn, project=project, name=name)
    receipt = _store_comments(store, user, project, name, comments)
    return {"status": "ok", "new": receipt.new, "updated": receipt.updated, "unchanged": receipt.unchanged}


@router.put("/api/_private/sources/{project}/{name}/comments", summary="Create new comments (409 for a known id)")
def create_comments(
    project: str, name: str, body: CommentsRequest, store: Store, user: Caller, no_charge: bool = False
) -> dict[str, Any]:
    check_names(project, name)
    require(user, project, SOURCES_ADMIN)
    comments = _checked(body.comments)
    with store.store.engine.connect() as conn:
        source_id = source_row(conn, project=project, name=name).source_id
        known = live_messages(conn, [(source_id, c["id"]) for c in comments])
    if known:
        first = sorted(comment_id for _, comment_id in known)[0]
        raise ApiError(409, f"comment {first!r} exists already in {project}/{name}; use sync to update")
    _store_comments(store, user, project, name, comments)
    return {"status": "ok"}


@router.get("/api/v1/sources/{project}/{name}/comments/{comment_id}", summary="One comment")
def get_comment(project: str, name: str, comment_id: str, store: Store, user: Caller) -> dict[str, Any]:
    check_names(project, name)
    require(user, project, SOURCES_READ)
    m = t.messages
    with store.store.engine.connect() as conn:
        try:
            source = source_row(conn, project=project, name=name, gone=True)
        except ApiError as exc:
            if exc.status_code == 410:
                raise ApiError(410, f"comment {comment_id!r} of {exc.message}") from None
            raise
        row = conn.execute(
            sa.select(m).where(m.c.source_id == source.source_id, m.c.comment_id == comment_id, m.c.deleted.is_(False))
        ).first()
        if row is None:
            raise ApiError(404, f"comment {comment_id!r} does not exist in {project}/{name}")
        comment = stored_comments(conn, [row])[row.position]
        if is_purged(comment):  # purged, and the read models not yet caught up with it
            raise ApiError(410, purged_message(f"comment {comment_id!r} of source {project}/{name}"))
        annotated = annotated_uids(conn, [f"{source.source_id}.{comment_id}"])
    view = comment_view(
        comment,
        source.source_id,
        as_utc(row.created_at),
        has_annotations=bool(annotated),
        hidden=_hidden(user, source),
    )
    return {"status": "ok", "comment": view}


def _hidden(user: Principal, source: Any) -> list[str]:
    """The user properties this reader may not see: the source's sensitive ones, without ``sources-read-sensitive``."""
    return [] if allowed(user, source.project, SOURCES_READ_SENSITIVE) else list(source.sensitive_properties or [])


@router.delete("/api/v1/sources/{project}/{name}/comments", summary="Delete comments by id (`?id=a&id=b`)")
def delete_comments(
    project: str,
    name: str,
    store: Store,
    user: Caller,
    id: Annotated[list[str] | None, Query()] = None,
    reason: Reason = None,
) -> dict[str, Any]:
    check_names(project, name)
    require(user, project, SOURCES_ADMIN)
    ids = list(dict.fromkeys(id or []))
    if not ids:
        raise ApiError(400, "name the comments to delete: ?id=<comment id>&id=...")
    with store.store.engine.connect() as conn:
        source_id = source_row(conn, project=project, name=name).source_id
        loaded = store.store.read_aggregates([message_aggregate_id(source_id, i) for i in ids], conn)
    events = []
    for aggregate_id, history in loaded.items():
        message = Message.replay(aggregate_id, history)
        message.delete(reason=reason or API_REASON, actor=actor(user))  # NotFound: 404, nothing deleted
        events.extend(message.collect())
    store.store.append(events)
    store.written()
    return {"status": "ok"}


def _continuation(token: str | None) -> tuple[str, str] | None:
    if not token:
        return None
    try:
        moment, comment_id = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
        return str(moment), str(comment_id)
    except Exception:
        raise ApiError(400, "after: not a continuation this server handed out") from None


def _token(moment: str, comment_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([moment, comment_id]).encode()).decode().rstrip("=")


@router.get("/api/_private/sources/{project}/{name}/comments", summary="Page through a source's comments by time")
def page_comments(
    project: str,
    name: str,
    store: Store,
    user: Caller,
    from_timestamp: str | None = None,
    to_timestamp: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = PAGE_DEFAULT,
    include_markup: bool = False,
) -> dict[str, Any]:
    check_names(project, name)
    require(user, project, SOURCES_READ)
    m = t.messages
    try:
        start = parse_timestamp(from_timestamp, "from_timestamp") if from_timestamp else None
        end = parse_timestamp(to_timestamp, "to_timestamp") if to_timestamp else None
    except CommentError as exc:
        raise ApiError(400, str(exc)) from None
    position = _continuation(after)
    with store.store.engine.connect() as conn:
        source = source_row(conn, project=project, name=name, gone=True)
        query = sa.select(m).where(m.c.source_id == source.source_id, m.c.deleted.is_(False))
        if start is not None:
            query = query.where(m.c.timestamp >= start)
        if end is not None:
            query = query.where(m.c.timestamp <= end)
        if position is not None:
            moment = parse_timestamp(position[0], "after")
            query = query.where(
                sa.or_(m.c.timestamp > moment, sa.and_(m.c.timestamp == moment, m.c.comment_id > position[1]))
            )
        rows = list(conn.execute(query.order_by(m.c.timestamp, m.c.comment_id).limit(limit + 1)))
        more, rows = len(rows) > limit, rows[:limit]
        comments = stored_comments(conn, rows)
        annotated = annotated_uids(conn, [f"{source.source_id}.{r.comment_id}" for r in rows])
    hidden = _hidden(user, source)
    out = [
        comment_view(
            comments[r.position],
            source.source_id,
            as_utc(r.created_at),
            has_annotations=f"{source.source_id}.{r.comment_id}" in annotated,
            hidden=hidden,
        )
        for r in rows
    ]
    last = rows[-1] if rows and more else None
    continuation = _token(as_utc(last.timestamp).isoformat(), last.comment_id) if last is not None else None
    return {"status": "ok", "comments": out, "continuation": continuation}

"""Labellings (annotations) of a dataset's comments: the ``_private`` routes the ``re`` client calls."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from commine.api.deps import Caller, Store, actor, require
from commine.api.errors import ApiError
from commine.api.views import DEFAULT_GROUP, check_names, comment_view, dataset_row, label_parts, stored_comments
from commine.domain.access import LABELS_READ, LABELS_WRITE, SOURCES_READ_SENSITIVE, allowed
from commine.domain.annotation import QUEUES
from commine.domain.names import MAX_LABEL_LENGTH
from commine.handlers.labels import ERROR, AnnotationRequest, annotate
from commine.persistence import schema as t
from commine.persistence.store import as_utc

router = APIRouter(prefix="/api/_private/datasets", tags=["labellings"])

PAGE_DEFAULT, PAGE_MAX = 64, 256
#: uids per ``?id=`` look-up.
MAX_IDS = 1024


class AssignedLabel(BaseModel):
    name: str | list[str]
    sentiment: Literal["positive", "negative"] | None = None
    metadata: dict[str, Any] | None = None


class DismissedLabel(BaseModel):
    name: str | list[str]


class Labelling(BaseModel):
    group: str = Field(DEFAULT_GROUP, max_length=MAX_LABEL_LENGTH)
    assigned: list[AssignedLabel] = Field(default_factory=list, max_length=200)
    dismissed: list[DismissedLabel] = Field(default_factory=list, max_length=200)


class LabellingRequest(BaseModel):
    labelling: list[Labelling] | Labelling = Field(default_factory=list)
    entities: dict[str, Any] | None = None
    moon_forms: list[Any] | None = None
    #: commine's addition: the active-learning queue the comment was picked from (``shuffle``: at random).
    queue: Literal[QUEUES] | None = None  # type: ignore[valid-type]


def _name(name: str | list[str]) -> str:
    return name if isinstance(name, str) else " > ".join(name)


def _sentiment(assigned: list[AssignedLabel]) -> str | None:
    """commine records one sentiment per labelling: the one all assigned labels share, if any."""
    found = {a.sentiment for a in assigned if a.sentiment is not None}
    if len(found) > 1:
        raise ApiError(400, "commine records one sentiment per labelling; give every assigned label the same one")
    return found.pop() if found else None


def _split_uid(uid: str) -> tuple[str, str]:
    source_id, dot, comment_id = uid.partition(".")
    if not dot or len(source_id) != 16 or not comment_id:
        raise ApiError(400, f"a uid is <source id>.<comment id>, got {uid!r}")
    return source_id, comment_id


def _annotated(conn: Any, dataset: Any, rows: list[Any], sensitive_ok: bool) -> list[dict[str, Any]]:
    """The reference's AnnotatedComment of each message row: the comment and its labelling in this dataset."""
    if not rows:
        return []
    comments = stored_comments(conn, rows)
    uids = [f"{r.source_id}.{r.comment_id}" for r in rows]
    a = t.annotations
    found = {
        row.uid: row
        for start in range(0, len(uids), 1000)
        for row in conn.execute(
            sa.select(a).where(a.c.dataset_id == dataset.dataset_id, a.c.uid.in_(uids[start : start + 1000]))
        )
    }
    hidden: dict[str, list[str]] = {}
    if not sensitive_ok:
        for source_id, props in conn.execute(
            sa.select(t.sources.c.source_id, t.sources.c.sensitive_properties).where(
                t.sources.c.source_id.in_({r.source_id for r in rows})
            )
        ):
            hidden[source_id] = list(props or [])
    out = []
    for row, uid in zip(rows, uids, strict=True):
        note = found.get(uid)
        labelled = note is not None and bool(note.assigned or note.dismissed)
        item: dict[str, Any] = {
            "comment": comment_view(
                comments[row.position],
                row.source_id,
                as_utc(row.created_at),
                has_annotations=labelled,
                hidden=hidden.get(row.source_id),
            )
        }
        if labelled:
            item["labelling"] = [
                {
                    "group": DEFAULT_GROUP,
                    "assigned": [
                        {"name": e["name"], "sentiment": e.get("sentiment") or "positive"} for e in note.assigned
                    ],
                    "dismissed": [{"name": name} for name in note.dismissed],
                }
            ]
        out.append(item)
    return out


def _message_rows(conn: Any, dataset_id: str, keys: list[tuple[str, str]]) -> list[Any]:
    m, ds = t.messages, t.dataset_sources
    rows = []
    for source_id, comment_id in keys:
        row = conn.execute(
            sa.select(m)
            .join(ds, ds.c.source_id == m.c.source_id)
            .where(
                ds.c.dataset_id == dataset_id,
                m.c.source_id == source_id,
                m.c.comment_id == comment_id,
                m.c.deleted.is_(False),
            )
        ).first()
        if row is not None:
            rows.append(row)
    return rows


@router.get("/{project}/{name}/labellings", summary="Comments of a dataset with their labellings")
def get_labellings(
    project: str,
    name: str,
    store: Store,
    user: Caller,
    id: Annotated[list[str] | None, Query(max_length=MAX_IDS)] = None,
    source_id: str | None = None,
    return_predictions: bool = False,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = PAGE_DEFAULT,
) -> dict[str, Any]:
    check_names(project, name, "dataset")
    require(user, project, LABELS_READ)
    sensitive_ok = allowed(user, project, SOURCES_READ_SENSITIVE)
    with store.store.engine.connect() as conn:
        dataset = dataset_row(conn, project=project, name=name)
        if id:
            rows = _message_rows(conn, dataset.dataset_id, [_split_uid(uid) for uid in id])
            return {"status": "ok", "results": _annotated(conn, dataset, rows, sensitive_ok), "after": None}
        m, ds = t.messages, t.dataset_sources
        query = (
            sa.select(m)
            .join(ds, ds.c.source_id == m.c.source_id)
            .where(ds.c.dataset_id == dataset.dataset_id, m.c.deleted.is_(False))
        )
        if source_id is not None:
            query = query.where(m.c.source_id == source_id)
        if after:
            try:
                last_source, last_comment = (
                    base64.urlsafe_b64decode(after + "=" * (-len(after) % 4)).decode().split("\n", 1)
                )
            except Exception:
                raise ApiError(400, "after: not a continuation this server handed out") from None
            query = query.where(
                sa.or_(
                    m.c.source_id > last_source, sa.and_(m.c.source_id == last_source, m.c.comment_id > last_comment)
                )
            )
        rows = list(conn.execute(query.order_by(m.c.source_id, m.c.comment_id).limit(limit + 1)))
        more, rows = len(rows) > limit, rows[:limit]
        results = _annotated(conn, dataset, rows, sensitive_ok)
    token = None
    if more:
        token = base64.urlsafe_b64encode(f"{rows[-1].source_id}\n{rows[-1].comment_id}".encode()).decode().rstrip("=")
    return {"status": "ok", "results": results, "after": token}


@router.post("/{project}/{name}/labellings/{uid}", summary="Set the labelling of one comment")
def set_labelling(
    project: str, name: str, uid: str, body: LabellingRequest, store: Store, user: Caller
) -> dict[str, Any]:
    check_names(project, name, "dataset")
    require(user, project, LABELS_WRITE)
    source_id, comment_id = _split_uid(uid)
    groups = body.labelling if isinstance(body.labelling, list) else [body.labelling]
    if any(g.group != DEFAULT_GROUP for g in groups):
        raise ApiError(400, f"commine has one label group per dataset, named {DEFAULT_GROUP!r}")
    if body.entities and (body.entities.get("assigned") or body.entities.get("dismissed")):
        raise ApiError(400, "entities are not supported by commine yet")
    assigned = [a for g in groups for a in g.assigned]
    dismissed = [d for g in groups for d in g.dismissed]
    with store.store.engine.connect() as conn:
        dataset = dataset_row(conn, project=project, name=name)
        source = conn.execute(sa.select(t.sources).where(t.sources.c.source_id == source_id)).first()
    if source is None:
        raise ApiError(404, f"no source with id {source_id!r}")
    request = AnnotationRequest(
        source=f"{source.project}/{source.name}",
        comment_id=comment_id,
        labels=tuple(_name(a.name) for a in assigned),
        dismissed=tuple(_name(d.name) for d in dismissed),
        # The re client sends a sentiment with every label; it means something only with has_sentiment.
        sentiment=_sentiment(assigned) if dataset.has_sentiment else None,
        replace=True,
        queue=body.queue or "",
    )
    [result] = annotate(store.store, f"{project}/{name}", [request], actor=actor(user))
    if result.outcome == ERROR:
        raise ApiError(404 if "does not exist" in result.reason else 400, result.reason)
    store.written()
    with store.store.engine.connect() as conn:
        rows = _message_rows(conn, dataset.dataset_id, [(source_id, comment_id)])
        [item] = _annotated(conn, dataset, rows, allowed(user, project, SOURCES_READ_SENSITIVE))
    return {"status": "ok", **item}


def predicted_labels(labels: dict[str, float], threshold: float) -> list[dict[str, Any]]:
    """Stored probabilities as the reference's predicted labels, best first."""
    ranked = sorted(labels.items(), key=lambda item: -item[1])
    return [{"name": label_parts(n), "probability": p} for n, p in ranked if p >= threshold]

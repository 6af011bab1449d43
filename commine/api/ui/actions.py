"""The UI's JSON actions: label a message or a cluster, poll the model version, preview and save streams.

Each one calls the API route or service the public API uses, with the same permission checks, so the
UI can do nothing a token holder could not do through the API; errors answer the API's envelope.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter
from pydantic import BaseModel, Field

from commine.api.deps import Store, actor, require
from commine.api.errors import ApiError
from commine.api.routes import labellings
from commine.api.routes import streams as stream_routes
from commine.api.ui.core import ActionUser
from commine.api.ui.data import (
    Pending,
    PreparationFailed,
    at_threshold,
    clusters_with_view,
    generation_of,
    latest_version,
    model_metrics,
    reviewed,
)
from commine.api.views import check_names, dataset_row
from commine.domain.access import LABELS_READ, LABELS_WRITE, STREAMS_ADMIN
from commine.handlers import streams
from commine.handlers.labels import ERROR, AnnotationRequest, annotate
from commine.persistence import schema as t

router = APIRouter(prefix="/ui/d/{project}/{name}", include_in_schema=False)

#: How many of the newest messages a threshold preview counts.
RECENT = 1000
MAX_CLUSTER = 2000


class Decision(BaseModel):
    uid: str
    assigned: list[str] = Field(default_factory=list, max_length=200)
    dismissed: list[str] = Field(default_factory=list, max_length=200)
    sentiment: str | None = None
    queue: str | None = None


class ClusterLabel(BaseModel):
    """Label the ticked ``uids``, or every member of Discover's cluster number ``cluster`` as the page
    showing it was built (``generation``)."""

    uids: list[str] = Field(default_factory=list, max_length=MAX_CLUSTER)
    cluster: int | None = None
    generation: int | None = None
    label: str


class Preview(BaseModel):
    model_version: int | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)
    label: str | None = None
    stream: str | None = None


class SaveStream(BaseModel):
    name: str
    title: str = ""
    model_version: int | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)


@router.post("/label")
def label(project: str, name: str, body: Decision, store: Store, user: ActionUser) -> dict[str, Any]:
    """Set one message's labelling, through the API's labellings route (same checks, same event)."""
    sentiment = body.sentiment if body.sentiment in ("positive", "negative") else None
    request = labellings.LabellingRequest(
        labelling=labellings.Labelling(
            assigned=[labellings.AssignedLabel(name=n, sentiment=sentiment) for n in body.assigned],
            dismissed=[labellings.DismissedLabel(name=n) for n in body.dismissed],
        ),
        queue=_queue(body.queue),
    )
    return labellings.set_labelling(project, name, body.uid, request, store, user)


def _queue(name: str | None) -> Any:
    return name if name in labellings.QUEUES else None


@router.post("/label-cluster")
def label_cluster(project: str, name: str, body: ClusterLabel, store: Store, user: ActionUser) -> dict[str, Any]:
    """Add one label to many messages at once (a Discover cluster, or the selected part of it).

    A whole cluster leaves out the members someone reviewed since the clusters were made (as Explore
    does), and is annotated ``MAX_CLUSTER`` messages a transaction.
    """
    check_names(project, name, "dataset")
    require(user, project, LABELS_WRITE)
    with store.store.engine.connect() as conn:
        dataset_id = dataset_row(conn, project=project, name=name).dataset_id
        query = sa.select(t.sources.c.source_id, t.sources.c.project + "/" + t.sources.c.name)
        sources = dict(conn.execute(query).all())
    uids = body.uids
    if body.cluster is not None:
        # Outside the connection above: on SQLite every transaction takes the write lock.
        members = _members(store, dataset_id, body.cluster, body.generation)
        with store.store.engine.connect() as conn:
            done = reviewed(conn, dataset_id, members)
        uids = [uid for uid in members if uid not in done]
    requests = []
    for uid in uids:
        source_id, _, comment_id = uid.partition(".")
        if source_id not in sources:
            raise ApiError(400, f"no source for uid {uid!r}")
        requests.append(AnnotationRequest(source=sources[source_id], comment_id=comment_id, labels=(body.label,)))
    results = []
    for start in range(0, len(requests), MAX_CLUSTER):
        results += annotate(store.store, f"{project}/{name}", requests[start : start + MAX_CLUSTER], actor=actor(user))
    store.written()
    errors = [r.reason for r in results if r.outcome == ERROR]
    return {"status": "ok", "labelled": len(results) - len(errors), "errors": errors[:5]}


def _members(store: Store, dataset_id: str, number: int, generation: int | None) -> list[str]:
    """Every member of a cluster the page showed, if the clusters are still the ones it showed."""
    try:
        view, found = clusters_with_view(store.store, dataset_id)
    except Pending:
        raise ApiError(409, "the clusters are being prepared again; reload Discover in a few seconds") from None
    except PreparationFailed as exc:
        raise ApiError(503, str(exc)) from None
    if generation != generation_of(view) or not 0 <= number < len(found):
        raise ApiError(409, "the clusters changed since the page was shown (new messages or a new model); reload")
    return list(found[number]["uids"])


@router.get("/model")
def model(project: str, name: str, store: Store, user: ActionUser) -> dict[str, Any]:
    """The newest model version: Explore polls it to say "model updated"."""
    check_names(project, name, "dataset")
    require(user, project, LABELS_READ)
    with store.store.engine.connect() as conn:
        dataset = dataset_row(conn, project=project, name=name)
        return {"status": "ok", "version": latest_version(conn, dataset.dataset_id)}


@router.post("/streams/preview")
def preview(project: str, name: str, body: Preview, store: Store, user: ActionUser) -> dict[str, Any]:
    """At the proposed thresholds: the label's precision and recall, and how many of the newest messages enter.

    For a saved stream it also answers how many undelivered messages would enter or leave its backlog.
    """
    check_names(project, name, "dataset")
    require(user, project, STREAMS_ADMIN)
    with store.store.engine.connect() as conn:
        dataset = dataset_row(conn, project=project, name=name)
        found = model_metrics(conn, dataset.dataset_id, body.model_version)
        if found is None:
            raise ApiError(404, "the dataset has no such model version")
        answer: dict[str, Any] = {
            "status": "ok",
            "recent": _recent_entering(conn, dataset.dataset_id, found.version, body.thresholds),
        }
    reports = {r["name"]: r for r in ((found.metrics or {}).get("validation") or {}).get("labels", [])}
    if body.label in reports and body.label in body.thresholds:
        precision, recall = at_threshold(reports[body.label].get("curve") or {}, body.thresholds[body.label])
        answer.update(precision=precision, recall=recall)
    if body.stream:
        answer["backlog"] = streams.preview_thresholds(store.store, f"{project}/{name}", body.stream, body.thresholds)
    return answer


def _recent_entering(conn: Any, dataset_id: str, version: int, cut: dict[str, float]) -> dict[str, int]:
    """Of the newest ``RECENT`` messages, how many have a prediction at or above any chosen threshold."""
    found = _recent_predictions(conn, dataset_id, version)
    entering = sum(any(labels.get(n, 0.0) >= value for n, value in cut.items()) for labels in found)
    return {"entering": entering, "of": len(found)}


#: (database, dataset id, version) -> (read at, predictions of the newest messages): a slider moves many
#: times a second, and the newest messages change slowly.
_recent: dict[tuple[str, str, int], tuple[float, list[dict[str, float]]]] = {}
RECENT_TTL_S = 30.0


def _recent_predictions(conn: Any, dataset_id: str, version: int) -> list[dict[str, float]]:
    key = (str(conn.engine.url), dataset_id, version)
    found = _recent.get(key)
    if found is not None and time.monotonic() - found[0] < RECENT_TTL_S:
        return found[1]
    m, ds, p = t.messages, t.dataset_sources, t.predictions
    newest = (
        sa.select((m.c.source_id + "." + m.c.comment_id).label("uid"))
        .join(ds, ds.c.source_id == m.c.source_id)
        .where(ds.c.dataset_id == dataset_id, m.c.deleted.is_(False))
        .order_by(m.c.position.desc())
        .limit(RECENT)
        .subquery()
    )
    rows = list(
        conn.execute(
            sa.select(p.c.labels).where(
                p.c.dataset_id == dataset_id, p.c.model_version == version, p.c.uid.in_(sa.select(newest.c.uid))
            )
        ).scalars()
    )
    if len(_recent) > 64:
        _recent.clear()
    _recent[key] = (time.monotonic(), rows)
    return rows


@router.post("/streams")
def save_stream(project: str, name: str, body: SaveStream, store: Store, user: ActionUser) -> dict[str, Any]:
    """Create a stream, or change a saved one's thresholds, through the API's stream routes."""
    model = stream_routes.StreamModel(
        version=body.model_version,
        label_thresholds=[stream_routes.LabelThreshold(name=n, threshold=v) for n, v in body.thresholds.items()],
    )
    existing = {s["name"] for s in _listed(store, user, project, name)}
    if body.name in existing:
        changes = stream_routes.UpdateRequest(stream=stream_routes.StreamChanges(model=model))
        return stream_routes.update_stream(project, name, body.name, changes, store, user)
    fields = stream_routes.NewStream(name=body.name, title=body.title or None, model=model)
    return stream_routes.create_stream(project, name, stream_routes.CreateRequest(stream=fields), store, user)


def _listed(store: Store, user: Any, project: str, name: str) -> list[dict[str, Any]]:
    return stream_routes.list_streams(project, name, store, user)["streams"]


class Pin(BaseModel):
    stream: str
    version: int


@router.post("/pin")
def pin(project: str, name: str, body: Pin, store: Store, user: ActionUser) -> dict[str, Any]:
    """Pin a model version to a stream (or roll it back to an older one), through the API's update route."""
    changes = stream_routes.UpdateRequest(
        stream=stream_routes.StreamChanges(model=stream_routes.StreamModel(version=body.version))
    )
    return stream_routes.update_stream(project, name, body.stream, changes, store, user)

"""Datasets: list, get, create, update (``/api/v1/datasets``), and bulk label definitions."""

from __future__ import annotations

from itertools import islice
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from commine.api.deps import API_REASON, Caller, Reason, Store, actor, require
from commine.api.errors import ApiError
from commine.api.views import DEFAULT_GROUP, check_names, dataset_row, dataset_rows, dataset_view, source_row
from commine.domain.access import DATASETS_ADMIN, LABELS_READ, allowed
from commine.domain.dataset import MAX_LABELS, MAX_SOURCES
from commine.domain.names import MAX_LABEL_LENGTH
from commine.domain.source import MAX_DESCRIPTION, MAX_TITLE, SOURCE_ID
from commine.handlers import commands, labels
from commine.handlers import export as exporting

router = APIRouter(tags=["datasets"])

EXPORT_PAGE, EXPORT_MAX = 1024, 4096


class LabelDef(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_LABEL_LENGTH)
    title: str | None = None
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    instructions: str | None = Field(None, max_length=MAX_DESCRIPTION)
    external_id: str | None = None
    trainable: bool | None = None


class LabelGroup(BaseModel):
    name: str = Field(DEFAULT_GROUP, max_length=MAX_LABEL_LENGTH)
    label_defs: list[LabelDef] = Field(default_factory=list, max_length=MAX_LABELS)


class DatasetFields(BaseModel):
    source_ids: list[str] | None = Field(None, max_length=MAX_SOURCES)
    title: str | None = Field(None, max_length=MAX_TITLE)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    has_sentiment: bool | None = None
    label_defs: list[LabelDef] | None = Field(None, max_length=MAX_LABELS)
    label_groups: list[LabelGroup] | None = Field(None, max_length=1)
    entity_defs: list[dict[str, Any]] | None = None
    general_fields: list[dict[str, Any]] | None = None
    model_family: str | None = None
    copy_annotations_from: str | None = None


class DatasetRequest(BaseModel):
    dataset: DatasetFields = Field(default_factory=DatasetFields)


class ExportRequest(BaseModel):
    #: commine's paging: how many messages per answer, and the uid the last answer ended with.
    limit: int = Field(EXPORT_PAGE, ge=1, le=EXPORT_MAX)
    continuation: str | None = Field(None, max_length=1100)
    #: The model version whose predictions to include (the newest when absent).
    model_version: int | None = Field(None, ge=1)


class LabelDefsRequest(BaseModel):
    label_defs: list[LabelDef] = Field(max_length=MAX_LABELS)


def _unsupported(fields: DatasetFields) -> None:
    """400 for what commine does not model yet, rather than silently dropping it."""
    if fields.entity_defs or fields.general_fields:
        raise ApiError(400, "entity_defs and general_fields are not supported by commine yet")
    if fields.copy_annotations_from:
        raise ApiError(400, "copy_annotations_from is not supported by commine yet")
    if fields.label_groups and any(g.name != DEFAULT_GROUP for g in fields.label_groups):
        raise ApiError(400, f"commine has one label group per dataset, named {DEFAULT_GROUP!r}")


def _source_names(store: Store, project: str, source_ids: list[str]) -> list[str]:
    names = []
    with store.store.engine.connect() as conn:
        for source_id in source_ids:
            if not SOURCE_ID.fullmatch(source_id):
                raise ApiError(400, f"a source id is 16 lower-case hex digits, got {source_id!r}")
            row = source_row(conn, source_id=source_id)
            names.append(f"{row.project}/{row.name}")
    return names


def _label_defs(fields: DatasetFields) -> list[LabelDef]:
    return [*(fields.label_defs or []), *(d for g in fields.label_groups or [] for d in g.label_defs)]


def _define(store: Store, full_name: str, defs: list[LabelDef], who: str) -> None:
    for label in defs:
        labels.define_label(store.store, full_name, label.name, description=label.description or "", actor=who)


def _ref(ref: str) -> str | None:
    if not ref.startswith("id:"):
        return None
    dataset_id = ref.removeprefix("id:")
    if not SOURCE_ID.fullmatch(dataset_id):
        raise ApiError(400, f"a dataset id is 16 lower-case hex digits, got {dataset_id!r}")
    return dataset_id


@router.get("/api/v1/datasets", summary="List the datasets the caller may see")
def list_datasets(store: Store, user: Caller) -> dict[str, Any]:
    with store.store.engine.connect() as conn:
        rows = [r for r in dataset_rows(conn, None) if allowed(user, r.project, LABELS_READ)]
        return {"status": "ok", "datasets": [dataset_view(conn, r) for r in rows]}


@router.get("/api/v1/datasets/{ref}", summary="The datasets of a project, or one dataset by id (`id:<hex>`)")
def project_datasets(ref: str, store: Store, user: Caller) -> dict[str, Any]:
    dataset_id = _ref(ref)
    with store.store.engine.connect() as conn:
        if dataset_id is not None:
            row = dataset_row(conn, dataset_id=dataset_id)
            require(user, row.project, LABELS_READ)
            return {"status": "ok", "dataset": dataset_view(conn, row)}
        check_names(ref)
        require(user, ref, LABELS_READ)
        return {"status": "ok", "datasets": [dataset_view(conn, r) for r in dataset_rows(conn, [ref])]}


def _answer(store: Store, project: str, name: str) -> dict[str, Any]:
    """The dataset as it is after a write."""
    with store.store.engine.connect() as conn:
        return {"status": "ok", "dataset": dataset_view(conn, dataset_row(conn, project=project, name=name))}


@router.get("/api/v1/datasets/{project}/{name}", summary="One dataset")
def get_dataset(project: str, name: str, store: Store, user: Caller) -> dict[str, Any]:
    check_names(project, name, "dataset")
    require(user, project, LABELS_READ)
    with store.store.engine.connect() as conn:
        return {"status": "ok", "dataset": dataset_view(conn, dataset_row(conn, project=project, name=name))}


@router.put("/api/v1/datasets/{project}/{name}", summary="Create a dataset")
def create_dataset(project: str, name: str, body: DatasetRequest, store: Store, user: Caller) -> dict[str, Any]:
    check_names(project, name, "dataset")
    require(user, project, DATASETS_ADMIN)
    fields = body.dataset
    _unsupported(fields)
    sources = _source_names(store, project, fields.source_ids or [])
    full_name = f"{project}/{name}"
    commands.create_dataset(
        store.store,
        full_name,
        sources=sources,
        title=fields.title or "",
        description=fields.description or "",
        has_sentiment=bool(fields.has_sentiment),
        actor=actor(user),
    )
    _define(store, full_name, _label_defs(fields), actor(user))
    store.written()
    return _answer(store, project, name)


@router.post("/api/v1/datasets/{project}/{name}", summary="Update a dataset (title, description, add sources)")
def update_dataset(project: str, name: str, body: DatasetRequest, store: Store, user: Caller) -> dict[str, Any]:
    check_names(project, name, "dataset")
    require(user, project, DATASETS_ADMIN)
    fields = body.dataset
    _unsupported(fields)
    with store.store.engine.connect() as conn:
        dataset_row(conn, project=project, name=name)
    sources = _source_names(store, project, fields.source_ids or [])
    commands.update_dataset(
        store.store,
        f"{project}/{name}",
        title=fields.title,
        description=fields.description,
        sources=sources,
        actor=actor(user),
    )
    _define(store, f"{project}/{name}", _label_defs(fields), actor(user))
    store.written()
    return _answer(store, project, name)


@router.post(
    "/api/v1/datasets/{project}/{name}/export",
    summary="Export the dataset's messages with their labels (`Parent > Child`) and predictions, a page at a time",
)
def export_dataset(project: str, name: str, body: ExportRequest, store: Store, user: Caller) -> dict[str, Any]:
    check_names(project, name, "dataset")
    require(user, project, LABELS_READ)
    with store.store.engine.connect() as conn:
        dataset = dataset_row(conn, project=project, name=name)
    try:
        plan = exporting.plan(store.store, dataset.dataset_id, body.model_version)
        found = list(islice(exporting.records(store.store, plan, after=body.continuation), body.limit + 1))
    except LookupError as exc:
        raise ApiError(404 if body.continuation is None else 400, str(exc)) from None
    page = found[: body.limit]
    more = len(found) > body.limit
    return {
        "status": "ok",
        "comments": [{**r["comment"], "uid": r["uid"], **{k: r[k] for k in _EXPORTED}} for r in page],
        "total": plan.total,
        "continuation": page[-1]["uid"] if more else None,
    }


_EXPORTED = ("labelling", "model_version", "predictions")


def _delete(store: Store, user: Caller, project: str, name: str, reason: str | None) -> dict[str, Any]:
    require(user, project, DATASETS_ADMIN)
    commands.delete_dataset(store.store, f"{project}/{name}", reason=reason or API_REASON, actor=actor(user))
    store.written()
    return {"status": "ok"}


@router.delete("/api/v1/datasets/{ref}", summary="Delete a dataset by id (`id:<hex>`)")
def delete_dataset_by_id(ref: str, store: Store, user: Caller, reason: Reason = None) -> dict[str, Any]:
    dataset_id = _ref(ref)
    if dataset_id is None:
        raise ApiError(400, "delete a dataset by its id (id:<hex>) or as /api/v1/datasets/<project>/<name>")
    with store.store.engine.connect() as conn:
        row = dataset_row(conn, dataset_id=dataset_id)
    return _delete(store, user, row.project, row.name, reason)


@router.delete(
    "/api/v1/datasets/{project}/{name}",
    summary="Delete a dataset: its annotations, models and streams go, its sources stay",
)
def delete_dataset(project: str, name: str, store: Store, user: Caller, reason: Reason = None) -> dict[str, Any]:
    check_names(project, name, "dataset")
    require(user, project, DATASETS_ADMIN)
    with store.store.engine.connect() as conn:
        dataset_row(conn, project=project, name=name)
    return _delete(store, user, project, name, reason)


@router.put("/api/_private/datasets/{project}/{name}/labels/{group}", summary="Define labels in bulk")
def put_labels(
    project: str, name: str, group: str, body: LabelDefsRequest, store: Store, user: Caller
) -> dict[str, Any]:
    check_names(project, name, "dataset")
    require(user, project, DATASETS_ADMIN)
    if group != DEFAULT_GROUP:
        raise ApiError(400, f"commine has one label group per dataset, named {DEFAULT_GROUP!r}")
    with store.store.engine.connect() as conn:
        dataset_row(conn, project=project, name=name)
    _define(store, f"{project}/{name}", body.label_defs, actor(user))
    store.written()
    return {"status": "ok"}

"""Model versions ("labellers"): list, validation, predict and predict-comments."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter
from pydantic import BaseModel, Field

from commine.api.deps import Caller, Store, require
from commine.api.errors import ApiError
from commine.api.views import DEFAULT_GROUP, check_names, dataset_row, label_defs, label_parts, stored_comments, when
from commine.domain.access import LABELS_READ
from commine.domain.errors import CommentError
from commine.domain.names import label_name
from commine.handlers.insight import predict_comments
from commine.persistence import mldata
from commine.persistence import schema as t

router = APIRouter(tags=["models"])

#: Documents (or uids) per predict request, as the reference allows.
MAX_DOCUMENTS = 4096
DEFAULT_THRESHOLD = 0.25


Probability = Annotated[float, Field(ge=0, le=1)]


class LabelThreshold(BaseModel):
    name: str | list[str]
    threshold: float = Field(ge=0, le=1)


class PredictRequest(BaseModel):
    documents: list[dict[str, Any]]
    threshold: Probability | Literal["auto"] = DEFAULT_THRESHOLD
    labels: list[LabelThreshold] | None = None


class LabelValidationRequest(BaseModel):
    label: str | list[str]


class PredictCommentsRequest(BaseModel):
    uids: list[str]
    threshold: Probability | Literal["auto"] = DEFAULT_THRESHOLD
    labels: list[LabelThreshold] | None = None


def _version(text: str) -> int | None:
    """A model version path segment: a number from 1, or ``latest`` (None)."""
    if text == "latest":
        return None
    if not text.isdigit() or int(text) < 1 or len(text) > 9:
        raise ApiError(400, f"a model version is a number from 1 or 'latest', got {text!r}")
    return int(text)


def _model(store: Store, user: Any, project: str, name: str, version: str) -> tuple[Any, Any]:
    check_names(project, name, "dataset")
    require(user, project, LABELS_READ)
    number = _version(version)
    with store.store.engine.connect() as conn:
        dataset = dataset_row(conn, project=project, name=name)
        model = mldata.model_row(conn, dataset.dataset_id, number)
    if model is None:
        which = "no model yet" if number is None else f"no model version {number}"
        raise ApiError(404, f"dataset {project}/{name} has {which}")
    return dataset, model


def _thresholds(model: Any, threshold: float | str, labels: list[LabelThreshold] | None) -> dict[str, float]:
    """Per label of the model, the probability a prediction must reach to be returned."""
    presets = {
        r["name"]: (r.get("presets") or {}).get("balanced")
        for r in ((model.metrics or {}).get("validation") or {}).get("labels", [])
    }
    if threshold == "auto":
        out = {n: float(presets[n]) if presets.get(n) is not None else 0.5 for n in model.labels}
    else:
        out = dict.fromkeys(model.labels, float(threshold))
    if labels:
        try:
            wanted = {label_name(item.name): item.threshold for item in labels}
        except ValueError as exc:
            raise ApiError(400, f"labels: {exc}") from None
        out = {n: wanted[n] for n in model.labels if n in wanted}
    return out


def _labels(probabilities: list[dict[str, Any]], cut: dict[str, float]) -> list[dict[str, Any]]:
    kept = []
    for item in probabilities:
        name = " > ".join(item["name"])
        if name in cut and item["probability"] >= cut[name]:
            kept.append({"name": item["name"], "probability": item["probability"]})
    return kept


@router.post("/api/_private/datasets/{project}/{name}/labellers", summary="List a dataset's model versions")
def list_labellers(project: str, name: str, store: Store, user: Caller) -> dict[str, Any]:
    check_names(project, name, "dataset")
    require(user, project, LABELS_READ)
    with store.store.engine.connect() as conn:
        dataset = dataset_row(conn, project=project, name=name)
        rows = conn.execute(
            sa.select(t.models).where(t.models.c.dataset_id == dataset.dataset_id).order_by(t.models.c.version)
        ).all()
    labellers = [
        {"version": r.version, "model_id": r.artifact_hash[:16], "trained_time": when(r.trained_at)} for r in rows
    ]
    return {"status": "ok", "labellers": labellers}


def _validation(store: Store, user: Any, project: str, name: str, version: str) -> dict[str, Any]:
    dataset, model = _model(store, user, project, name, version)
    with store.store.engine.connect() as conn:
        defs = label_defs(conn, dataset.dataset_id)
    metrics = model.metrics or {}
    rating = metrics.get("rating") or {}
    report = metrics.get("validation") or {}
    validation = {
        "version": model.version,
        "model_rating": {"score": rating.get("score", 0), "quality": str(rating.get("band", "none")).lower()},
        "reviewed_size": model.training_size,
        "mean_average_precision": report.get("mean_average_precision"),
        "coverage": metrics.get("coverage"),
        "labels": [
            {
                "name": label_parts(r["name"]),
                "precision": r.get("precision"),
                "recall": r.get("recall"),
                "average_precision": r.get("average_precision"),
                "support": r.get("support"),
            }
            for r in report.get("labels", [])
        ],
    }
    return {"status": "ok", "label_groups": [{"name": DEFAULT_GROUP, "label_defs": defs}], "validation": validation}


@router.get("/api/v1/datasets/{project}/{name}/labellers/{version}/validation", summary="Model validation")
def validation(project: str, name: str, version: str, store: Store, user: Caller) -> dict[str, Any]:
    return _validation(store, user, project, name, version)


@router.get(
    "/api/_private/datasets/{project}/{name}/labellers/{version}/validation", summary="Model validation (re's route)"
)
def private_validation(project: str, name: str, version: str, store: Store, user: Caller) -> dict[str, Any]:
    return _validation(store, user, project, name, version)


@router.post(
    "/api/_private/datasets/{project}/{name}/labellers/{version}/label-validation",
    summary="One label's precision-recall curve on the held-out reviewed messages",
)
def label_validation(
    project: str, name: str, version: str, body: LabelValidationRequest, store: Store, user: Caller
) -> dict[str, Any]:
    _, model = _model(store, user, project, name, version)
    try:
        wanted = label_name(body.label)
    except ValueError as exc:
        raise ApiError(400, f"label: {exc}") from None
    reports = {r["name"]: r for r in ((model.metrics or {}).get("validation") or {}).get("labels", [])}
    if wanted not in reports:
        raise ApiError(404, f"model version {model.version} has no validation for label {wanted!r}")
    report = reports[wanted]
    curve = report.get("curve") or {"precision": [], "recall": [], "thresholds": []}
    points = len(curve["thresholds"])  # the curve's last point (precision 1, recall 0) has no threshold
    answer = {
        "thresholds": curve["thresholds"],
        "precisions": curve["precision"][:points],
        "recalls": curve["recall"][:points],
        "average_precision": report.get("average_precision"),
        "support": report.get("support"),
        "presets": report.get("presets") or {},
    }
    return {"status": "ok", "label_validation": answer}


@router.post("/api/v1/datasets/{project}/{name}/labellers/{version}/predict", summary="Predict ad-hoc documents")
def predict(project: str, name: str, version: str, body: PredictRequest, store: Store, user: Caller) -> dict[str, Any]:
    if len(body.documents) > MAX_DOCUMENTS:
        raise ApiError(400, f"at most {MAX_DOCUMENTS} documents per request, got {len(body.documents)}")
    dataset, model = _model(store, user, project, name, version)
    cut = _thresholds(model, body.threshold, body.labels)
    now = datetime.now(UTC).isoformat()
    documents = []
    for index, document in enumerate(body.documents):
        # A document is a comment without an id (and often without a timestamp): it is not stored.
        documents.append({"timestamp": now, **document, "id": f"document-{index}"})
    try:
        predicted = predict_comments(store.store, dataset.dataset_id, documents, version=model.version)
    except CommentError as exc:
        raise ApiError(400, f"documents: {exc}") from None
    return {
        "status": "ok",
        "model": {"version": model.version},
        "predictions": [{"labels": _labels(p["labels"], cut), "entities": []} for p in predicted],
    }


@router.post(
    "/api/v1/datasets/{project}/{name}/labellers/{version}/predict-comments", summary="Predict stored comments by uid"
)
def predict_stored(
    project: str, name: str, version: str, body: PredictCommentsRequest, store: Store, user: Caller
) -> dict[str, Any]:
    if len(body.uids) > MAX_DOCUMENTS:
        raise ApiError(400, f"at most {MAX_DOCUMENTS} uids per request, got {len(body.uids)}")
    dataset, model = _model(store, user, project, name, version)
    cut = _thresholds(model, body.threshold, body.labels)
    m, ds = t.messages, t.dataset_sources
    rows = []
    with store.store.engine.connect() as conn:
        for uid in body.uids:
            source_id, dot, comment_id = uid.partition(".")
            row = conn.execute(
                sa.select(m)
                .join(ds, ds.c.source_id == m.c.source_id)
                .where(
                    ds.c.dataset_id == dataset.dataset_id,
                    m.c.source_id == source_id,
                    m.c.comment_id == comment_id,
                    m.c.deleted.is_(False),
                )
            ).first()
            if not dot or row is None:
                raise ApiError(404, f"no comment {uid!r} in dataset {project}/{name}")
            rows.append(row)
        comments = stored_comments(conn, rows)
    predicted = predict_comments(
        store.store, dataset.dataset_id, [comments[r.position] for r in rows], version=model.version
    )
    return {
        "status": "ok",
        "model": {"version": model.version},
        "predictions": [
            {"uid": uid, "labels": _labels(p["labels"], cut), "entities": []}
            for uid, p in zip(body.uids, predicted, strict=True)
        ],
    }

"""Read helpers of the pages: one message with its labelling and predictions, a cached dataset view.

The active-learning queues, clusters, drift and reports work on a whole dataset's arrays
(``handlers.insight.load_view``). Loading them takes seconds at 100,000 messages, so the UI keeps
one view per (dataset, model version) in memory and answers every page from it; a new model
version builds a new view. Reviews made since are checked against the annotations table when a
queue is read, so a stale view never offers a message that was just labelled.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from commine.handlers.insight import DatasetView, discover, load_view
from commine.persistence import mldata
from commine.persistence import schema as t
from commine.persistence.store import EventStore, as_utc

_lock = threading.Lock()
_views: dict[tuple[str, str, int | None], DatasetView] = {}
_clusters: dict[tuple[str, str, int | None], list[dict[str, Any]]] = {}
_dates: dict[tuple[str, str, int | None], list[datetime]] = {}


def latest_version(conn: Connection, dataset_id: str) -> int | None:
    return conn.execute(sa.select(sa.func.max(t.models.c.version)).where(t.models.c.dataset_id == dataset_id)).scalar()


def view_of(store: EventStore, dataset_id: str) -> DatasetView:
    """The dataset's arrays with its newest model, built once per model version."""
    with store.engine.connect() as conn:
        version = latest_version(conn, dataset_id)
    key = (str(store.engine.url), dataset_id, version)
    with _lock:
        found = _views.get(key)
        if found is None:
            found = load_view(store, dataset_id, version)
            for old in [k for k in _views if k[:2] == key[:2]]:
                del _views[old]
            _views[key] = found
    return found


def clusters_of(store: EventStore, dataset_id: str) -> list[dict[str, Any]]:
    view = view_of(store, dataset_id)
    key = (str(store.engine.url), dataset_id, view.version)
    with _lock:
        if key not in _clusters:
            _clusters[key] = discover(view)
        return _clusters[key]


def dates_of(store: EventStore, dataset_id: str, view: DatasetView) -> list[datetime]:
    """Each message's own timestamp (when it was sent), in the order of ``view.uids``; cached with the view."""
    key = (str(store.engine.url), dataset_id, view.version)
    with _lock:
        found = _dates.get(key)
    if found is not None and len(found) == len(view.uids):
        return found
    m, ds = t.messages, t.dataset_sources
    query = (
        sa.select(m.c.source_id, m.c.comment_id, m.c.timestamp)
        .join(ds, ds.c.source_id == m.c.source_id)
        .where(ds.c.dataset_id == dataset_id)
    )
    with store.engine.connect() as conn:
        stamps = {f"{s}.{c}": as_utc(at) for s, c, at in conn.execute(query)}
    found = [stamps.get(uid) or at for uid, at in zip(view.uids, view.created_at, strict=True)]
    with _lock:
        _dates[key] = found
    return found


def reviewed(conn: Connection, dataset_id: str, uids: list[str]) -> set[str]:
    """Those uids with any label decision in the dataset now."""
    if not uids:
        return set()
    a = t.annotations
    rows = conn.execute(
        sa.select(a.c.uid, a.c.assigned, a.c.dismissed).where(a.c.dataset_id == dataset_id, a.c.uid.in_(uids))
    )
    return {uid for uid, assigned, dismissed in rows if assigned or dismissed}


def message_row(conn: Connection, dataset_id: str, uid: str) -> Any:
    source_id, _, comment_id = uid.partition(".")
    m, ds = t.messages, t.dataset_sources
    return conn.execute(
        sa.select(m)
        .join(ds, ds.c.source_id == m.c.source_id)
        .where(ds.c.dataset_id == dataset_id, m.c.source_id == source_id, m.c.comment_id == comment_id)
        .where(m.c.deleted.is_(False))
    ).first()


def predictions(conn: Connection, dataset_id: str, version: int | None, uid: str) -> list[tuple[str, float]]:
    """The model version's probabilities for one message, best first."""
    if version is None:
        return []
    p = t.predictions
    found = conn.execute(
        sa.select(p.c.labels).where(p.c.dataset_id == dataset_id, p.c.model_version == version, p.c.uid == uid)
    ).scalar()
    return sorted((found or {}).items(), key=lambda item: -item[1])


def model_rows(conn: Connection, dataset_id: str) -> list[Any]:
    return list(
        conn.execute(
            sa.select(t.models.c.version, t.models.c.trained_at, t.models.c.training_size)
            .where(t.models.c.dataset_id == dataset_id)
            .order_by(t.models.c.version.desc())
        )
    )


def model_metrics(conn: Connection, dataset_id: str, version: int | None) -> Any:
    return mldata.model_row(conn, dataset_id, version)


_QUOTE_START = re.compile(r"^(>|On .+ wrote:\s*$|-{2,} ?Original Message ?-{2,}|From: .+)", re.IGNORECASE)


def split_quoted(text: str) -> tuple[str, str]:
    """A body's own text and its quoted tail (from the first quoting line on), for folding the quote."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if index > 0 and _QUOTE_START.match(line.strip()):
            return "\n".join(lines[:index]).rstrip(), "\n".join(lines[index:])
    return text, ""


def at_threshold(curve: dict[str, list[float]], threshold: float) -> tuple[float | None, float | None]:
    """Precision and recall of a stored precision-recall curve at ``threshold`` (the first point at or above it)."""
    cuts = curve.get("thresholds", [])
    points = zip(curve.get("precision", [])[: len(cuts)], curve.get("recall", [])[: len(cuts)], cuts, strict=True)
    for precision, recall, cut in points:
        if cut >= threshold:
            return precision, recall
    return (1.0, 0.0) if curve.get("thresholds") else (None, None)

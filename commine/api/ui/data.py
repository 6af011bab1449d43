"""Read helpers of the pages: one message with its labelling and predictions, a cached dataset view.

The active-learning queues, clusters, drift and reports work on a whole dataset's arrays
(``handlers.insight.load_view``). Loading them takes seconds at 100,000 messages, so the UI keeps
one view per dataset in memory and answers every page from it (with what is derived from it:
ranked queues, clusters, drift); a new model version builds a new view in the background. Reviews
made since are checked against the annotations table when a queue is read, so a stale view never
offers a message that was just labelled. Model versions never change once recorded, so their rows
(with validation curves of every label) are kept too.
"""

from __future__ import annotations

import gc
import itertools
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from commine.handlers.insight import DatasetView, discover, load_view
from commine.persistence import mldata
from commine.persistence import schema as t
from commine.persistence.store import EventStore, as_utc

T = TypeVar("T")

#: Rebuild a dataset's view in the background when it is older than this (new messages, new reviews).
REFRESH_S = 600
#: Derived results (ranked queues, clusters, drift, dates) kept per view, least recently used dropped.
MEMO_SIZE = 256

_lock = threading.Lock()
#: (database, dataset id) -> (model version, built at, view)
_views: dict[tuple[str, str], tuple[int | None, float, DatasetView]] = {}
_building: set[tuple[str, str]] = set()
_generations = itertools.count(1)
_memo: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_models: OrderedDict[tuple[str, str, int], Any] = OrderedDict()


def latest_version(conn: Connection, dataset_id: str) -> int | None:
    return conn.execute(sa.select(sa.func.max(t.models.c.version)).where(t.models.c.dataset_id == dataset_id)).scalar()


def view_of(store: EventStore, dataset_id: str) -> DatasetView:
    """The dataset's arrays with its newest model.

    Built once, then answered from memory; when a new model version lands (or the view is older than
    ``REFRESH_S``) the old view keeps answering while a thread builds the new one, so only the very
    first page of a dataset waits for the build.
    """
    with store.engine.connect() as conn:
        version = latest_version(conn, dataset_id)
    base = (str(store.engine.url), dataset_id)
    with _lock:
        current = _views.get(base)
    if current is None:
        return _build(store, dataset_id, base)
    built_version, built_at, view = current
    if built_version != version or time.monotonic() - built_at > REFRESH_S:
        with _lock:
            start = base not in _building
            _building.add(base)
        if start:
            threading.Thread(target=_build, args=(store, dataset_id, base), daemon=True).start()
    return view


def _build(store: EventStore, dataset_id: str, base: tuple[str, str]) -> DatasetView:
    try:
        view = load_view(store, dataset_id)
        view.ui_generation = next(_generations)  # type: ignore[attr-defined]  # memo keys; never reused
        with _lock:
            _views[base] = (view.version, time.monotonic(), view)
        # A view is hundreds of thousands of long-lived objects: keep them out of the cyclic collector's
        # passes, which would otherwise slow every later request (they are still freed when replaced).
        gc.collect()
        gc.freeze()
        return view
    finally:
        with _lock:
            _building.discard(base)


def memo(view: DatasetView, name: str, args: tuple[Any, ...], compute: Callable[[], T]) -> T:
    """``compute()``, remembered for this view (its results change only when the view does)."""
    key = (getattr(view, "ui_generation", id(view)), name, *args)
    with _lock:
        if key in _memo:
            _memo.move_to_end(key)
            return _memo[key]  # type: ignore[no-any-return]
    value = compute()
    with _lock:
        _memo[key] = value
        while len(_memo) > MEMO_SIZE:
            _memo.popitem(last=False)
    return value


def clusters_of(store: EventStore, dataset_id: str) -> list[dict[str, Any]]:
    view = view_of(store, dataset_id)
    return memo(view, "clusters", (), lambda: discover(view))


def weeks_of(store: EventStore, dataset_id: str, view: DatasetView) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each message's own timestamp (when it was sent, as datetime64[s]), the ISO weeks in order, and each
    message's week (an index into them), in the view's order."""

    def compute() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m, ds = t.messages, t.dataset_sources
        query = (
            sa.select(m.c.source_id, m.c.comment_id, m.c.timestamp)
            .join(ds, ds.c.source_id == m.c.source_id)
            .where(ds.c.dataset_id == dataset_id)
        )
        with store.engine.connect() as conn:
            stamps = {f"{s}.{c}": as_utc(at) for s, c, at in conn.execute(query)}
        dates = [stamps.get(uid) or at for uid, at in zip(view.uids, view.created_at, strict=True)]
        moments = np.array([d.replace(tzinfo=None) for d in dates], dtype="datetime64[s]")
        weeks, index = np.unique(np.array([d.strftime("%G-W%V") for d in dates]), return_inverse=True)
        return moments, weeks, index

    return memo(view, "weeks", (), compute)


def properties_of(store: EventStore, dataset_id: str, view: DatasetView) -> dict[str, np.ndarray]:
    """Per user property, each message's value as text ("" without one), in the view's order.

    Read from the log (the comments are opened once, like the view's texts) and kept with the view:
    only the Reports page's user-property filter asks for it.
    """

    def compute() -> dict[str, np.ndarray]:
        with store.engine.connect() as conn:
            rows = mldata.dataset_messages(conn, dataset_id)
            found = mldata.comments(conn, [row.position for row in rows])
        by_uid = {row.uid: found[row.position].get("user_properties") or {} for row in rows}
        keys = sorted({key for props in by_uid.values() for key in props})
        return {key: np.array([str(by_uid.get(uid, {}).get(key, "")) for uid in view.uids]) for key in keys}

    return memo(view, "properties", (), compute)


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
    """A model version's row (the newest with None); kept in memory, since a recorded version never changes."""
    if version is None:
        version = latest_version(conn, dataset_id)
        if version is None:
            return None
    key = (str(conn.engine.url), dataset_id, version)
    with _lock:
        found = _models.get(key)
    if found is None:
        found = mldata.model_row(conn, dataset_id, version)
        if found is not None:
            with _lock:
                _models[key] = found
                while len(_models) > MEMO_SIZE:
                    _models.popitem(last=False)
    return found


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

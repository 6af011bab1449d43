"""Validation, Streams, Reports and Audit pages of a dataset's workspace."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from commine.api.deps import Store
from commine.api.ui.charts import bars, pr_curve
from commine.api.ui.core import PageError, PageUser, need, render
from commine.api.ui.data import Pending, memo, model_metrics, model_rows, properties_of, state_at, view_of, weeks_of
from commine.api.ui.pages import workspace
from commine.domain.access import AUDIT_READ, SOURCES_READ_SENSITIVE, STREAMS_CONSUME, allowed
from commine.handlers import audit, streams
from commine.handlers.insight import drift, thresholds
from commine.ml.validation import underperforms
from commine.persistence import schema as t

router = APIRouter(include_in_schema=False)

SORTS = ("name", "precision", "recall", "average_precision", "support", "examples")


def _label_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Per label: its validation figures, examples trained on, and warnings."""
    examples = metrics.get("examples") or {}
    rows = []
    for report in (metrics.get("validation") or {}).get("labels", []):
        n = examples.get(report["name"], 0)
        average = report.get("average_precision")
        warnings = []
        if average is None or not report.get("support"):
            warnings.append("no held-out example to measure it on")
        elif underperforms(average, n):  # the rating's own rule
            warnings.append(f"underperforms: AP {average:.2f} on {n} examples")
        rows.append({**report, "examples": n, "warnings": warnings})
    return rows


@router.get("/d/{project}/{name}/validation", response_class=HTMLResponse)
def validation(
    request: Request,
    project: str,
    name: str,
    store: Store,
    user: PageUser,
    version: int | None = None,
    compare: int | None = None,
    sort: str = "name",
    desc: bool = False,
    label: str = "",
) -> HTMLResponse:
    """The rating with its factors, the sortable per-label table, one label's PR curve, a comparison."""
    ws = workspace(store, user, project, name, "validation")
    dataset_id = ws["dataset"].dataset_id
    with store.store.engine.connect() as conn:
        versions = model_rows(conn, dataset_id)
        model = model_metrics(conn, dataset_id, version) if versions else None
        other = model_metrics(conn, dataset_id, compare) if compare else None
    if version is not None and model is None:
        raise PageError(404, f"no model version {version}")
    context: dict[str, Any] = {"versions": versions, "model": model, "sort": sort, "desc": desc, "other": other}
    if model is not None:
        metrics = model.metrics or {}
        rows = _label_rows(metrics)
        key = sort if sort in SORTS else "name"
        rows.sort(key=lambda r: (r.get(key) is None, r.get(key) or 0) if key != "name" else r["name"], reverse=desc)
        chosen = next((r for r in rows if r["name"] == label), rows[0] if rows else None)
        chart = pr_curve(chosen["curve"], chosen.get("presets") or {}, chosen["name"]) if chosen else ""
        context.update(
            metrics=metrics,
            rating=metrics.get("rating") or {},
            rows=rows,
            chosen=chosen,
            chart=chart,
            comparison=_compare(metrics, (other.metrics or {}) if other is not None else None),
        )
        if ws["can"]["triggers-admin"]:
            context["streams"] = streams.list_streams(store.store, f"{project}/{name}")
    return render(request, "validation.html", user, **ws, **context)


def _compare(mine: dict[str, Any], theirs: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """Per label, average precision in both versions and the change."""
    if theirs is None:
        return None
    before = {r["name"]: r for r in (theirs.get("validation") or {}).get("labels", [])}
    out = []
    for report in (mine.get("validation") or {}).get("labels", []):
        old = (before.get(report["name"]) or {}).get("average_precision")
        new = report.get("average_precision")
        change = None if old is None or new is None else new - old
        out.append({"name": report["name"], "old": old, "new": new, "change": change})
    return out


@router.get("/d/{project}/{name}/streams", response_class=HTMLResponse)
def streams_page(
    request: Request, project: str, name: str, store: Store, user: PageUser, stream: str = ""
) -> HTMLResponse:
    """The dataset's streams with backlog, throughput and exceptions; create or edit one with threshold sliders."""
    ws = workspace(store, user, project, name, "streams")
    need(user, project, STREAMS_CONSUME, "opening the streams of this dataset")
    full = f"{project}/{name}"
    listed = streams.list_streams(store.store, full)
    chosen = next((s for s in listed if s["name"] == stream), None)
    dataset_id = ws["dataset"].dataset_id
    with store.store.engine.connect() as conn:
        model = model_metrics(conn, dataset_id, chosen["model"]["version"] if chosen else None)
        throughput = _throughput(conn, [s["id"] for s in listed])
    exceptions = streams.list_exceptions(store.store, full, chosen["name"])[:50] if chosen else []
    rows = []
    if model is not None:
        current = {
            x["name"] if isinstance(x["name"], str) else " > ".join(x["name"]): x["threshold"]
            for x in (chosen["model"]["label_thresholds"] if chosen else [])
        }
        for report in _label_rows(model.metrics or {}):
            presets = report.get("presets") or {}
            rows.append(
                {
                    "name": report["name"],
                    "presets": presets,
                    "threshold": current.get(report["name"], presets.get("balanced") or 0.5),
                    "included": report["name"] in current if chosen else False,
                }
            )
    return render(
        request,
        "streams.html",
        user,
        **ws,
        listed=listed,
        chosen=chosen,
        model=model,
        rows=rows,
        throughput=throughput,
        exceptions=exceptions,
    )


def _throughput(conn: Any, stream_ids: list[str]) -> dict[str, int]:
    """Per stream, how many messages entered it in the last 24 hours."""
    if not stream_ids:
        return {}
    e = t.stream_entries
    since = datetime.now(UTC) - timedelta(days=1)
    query = (
        sa.select(e.c.stream_id, sa.func.count())
        .where(e.c.stream_id.in_(stream_ids), e.c.qualifies, e.c.created_at >= since)
        .group_by(e.c.stream_id)
    )
    return dict(conn.execute(query).all())


def _window(view: Any, moments: np.ndarray, source: str, start: str, end: str) -> np.ndarray:
    """The messages of the view in the filters: a source id, a time range (ISO dates) of their timestamps."""
    keep = np.ones(len(view.uids), dtype=bool)
    if source:
        keep &= np.char.startswith(np.array(view.uids), source + ".")
    for bound, after in ((start, True), (end, False)):
        if bound:
            try:
                moment = np.datetime64(datetime.fromisoformat(bound).replace(tzinfo=None), "s")
            except ValueError:
                raise PageError(400, f"not a date: {bound!r} (use YYYY-MM-DD)") from None
            keep &= moments >= moment if after else moments < moment
    return keep


@router.get("/d/{project}/{name}/reports", response_class=HTMLResponse)
def reports(
    request: Request,
    project: str,
    name: str,
    store: Store,
    user: PageUser,
    source: str = "",
    start: str = "",
    end: str = "",
    label: str = "",
    prop: str = "",
    value: str = "",
) -> HTMLResponse:
    """Label volumes per week, sentiment per label, coverage per week and drift flags; filtered by source,
    time range and a user property's value (``prop`` = ``value``)."""
    ws = workspace(store, user, project, name, "reports")
    view = view_of(store.store, ws["dataset"].dataset_id)
    context: dict[str, Any] = {
        "source": source,
        "start": start,
        "end": end,
        "label": label,
        "prop": prop,
        "value": value,
        "has_model": view.version,
    }
    with store.store.engine.connect() as conn:
        context["sources"] = (
            conn.execute(
                sa.select(t.dataset_sources.c.source_id).where(
                    t.dataset_sources.c.dataset_id == ws["dataset"].dataset_id
                )
            )
            .scalars()
            .all()
        )
        context["sentiment"] = _sentiment(conn, ws["dataset"]) if ws["dataset"].has_sentiment else None
    if view.version is not None and view.pool.scores is not None:
        moments = weeks_of(store.store, ws["dataset"].dataset_id, view)[0]
        keep = _window(view, moments, source, start, end)
        if prop:
            keep &= _property(store, user, ws, view, prop) == value
        context.update(_figures(store, ws["dataset"].dataset_id, view, keep, label))
    return render(request, "reports.html", user, **ws, **context)


def _property(store: Store, user: Any, ws: dict[str, Any], view: Any, prop: str) -> np.ndarray:
    """Each message's value of the user property ``prop``; a sensitive one needs ``sources-read-sensitive``."""
    if not allowed(user, ws["project"], SOURCES_READ_SENSITIVE):
        with store.store.engine.connect() as conn:
            sensitive = {
                key
                for props in conn.execute(
                    sa.select(t.sources.c.sensitive_properties)
                    .join(t.dataset_sources, t.dataset_sources.c.source_id == t.sources.c.source_id)
                    .where(t.dataset_sources.c.dataset_id == ws["dataset"].dataset_id)
                ).scalars()
                for key in props or []
            }
        if prop in sensitive:
            raise PageError(403, f"filtering by the sensitive user property {prop!r} needs sources-read-sensitive")
    found = properties_of(store.store, ws["dataset"].dataset_id, view)
    if prop not in found:
        raise PageError(400, f"no message has the user property {prop!r}; known: {', '.join(found) or 'none'}")
    return found[prop]


def _figures(store: Store, dataset_id: str, view: Any, keep: np.ndarray, label: str) -> dict[str, Any]:
    """Coverage and one label's volume per week, label volumes and drift, over the filtered messages.

    Unfiltered, the per-week sums are remembered with the view; a filter computes them over its messages.
    """
    _, order, weeks = weeks_of(store.store, dataset_id, view)
    hits = memo(view, "hits", (), lambda: view.pool.scores >= thresholds(view))
    everything = bool(keep.all())
    rows = slice(None) if everything else keep
    week = weeks[rows]

    def sums() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        chosen = hits[rows]
        total = np.bincount(week, minlength=len(order))
        covered = np.bincount(week, weights=chosen.any(axis=1), minlength=len(order))
        return total, covered, chosen.sum(axis=0)

    total, covered, counts = memo(view, "report-sums", (), sums) if everything else sums()
    out: dict[str, Any] = {
        "top": sorted(zip(view.labels, counts.tolist(), strict=True), key=lambda x: -x[1])[:30],
        "coverage_chart": bars(
            [(w, round(c / n * 100, 1)) for w, c, n in zip(order, covered, total, strict=True) if n]
        ),
        "volume_chart": "",
    }
    if label in view.labels:
        column = hits[:, view.labels.index(label)][rows]
        volume = np.bincount(week, weights=column, minlength=len(order))
        out["volume_chart"] = bars([(w, int(v)) for w, v, n in zip(order, volume, total, strict=True) if n])
    try:
        out["drift"] = memo(view, "drift", (), lambda: drift(view))
    except LookupError as exc:
        out["drift"] = {"shifted": False, "reason": str(exc)}
    return out


def _sentiment(conn: Any, dataset: Any) -> list[tuple[str, int, int]]:
    """Per label: reviewed messages with a positive and with a negative sentiment."""
    found: dict[str, Counter[str]] = defaultdict(Counter)
    rows = conn.execute(sa.select(t.annotations.c.assigned).where(t.annotations.c.dataset_id == dataset.dataset_id))
    for (assigned,) in rows:
        for entry in assigned:
            if entry.get("sentiment"):
                found[entry["name"]][entry["sentiment"]] += 1
    return sorted((n, c["positive"], c["negative"]) for n, c in found.items())


@router.get("/d/{project}/{name}/audit", response_class=HTMLResponse)
def audit_page(
    request: Request, project: str, name: str, store: Store, user: PageUser, after: str = "", at: str = ""
) -> HTMLResponse:
    """Who did what to the dataset, a page at a time, and the dataset's state at a chosen moment."""
    ws = workspace(store, user, project, name, "audit")
    need(user, project, AUDIT_READ, "reading the audit history")
    dataset_id = ws["dataset"].dataset_id
    try:
        page = audit.query(store.store, audit.AuditFilter(), lambda p: p == project, after=after or None, limit=50)
    except ValueError as exc:
        raise PageError(400, f"cannot read the history: {exc}") from None
    entries = [e for e in page.entries if not e.get("dataset_ids") or dataset_id in e["dataset_ids"]]
    state, preparing = None, None
    if at:
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            raise PageError(400, f"not a moment: {at!r} (use YYYY-MM-DDTHH:MM)") from None
        try:
            state = state_at(store.store, f"{project}/{name}", moment.replace(tzinfo=moment.tzinfo or UTC))
        except Pending as exc:
            preparing = exc
    found = {"entries": entries, "next": page.continuation, "at": at, "state": state, "preparing": preparing}
    return render(request, "audit.html", user, **ws, **found)

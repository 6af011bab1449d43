"""Point in time: a dataset as it stood at a moment, and what changed between two moments.

For auditors: the read models are rebuilt from the log up to the moment in a fresh schema (the very code
the live projections run, ``commine.persistence.replay``), and the dataset's taxonomy, annotations, newest
model version, and each stream's pinned version, thresholds and cursor are read from there. Nothing of the
live state is consulted, so the answer is what the log says, whatever happened since.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from commine.domain.names import split_full_name
from commine.persistence import projections, replay
from commine.persistence import schema as t
from commine.persistence.store import EventStore, as_utc

SECTIONS = ("taxonomy", "annotations", "model", "streams")


def dataset_at(store: EventStore, dataset: str, moment: datetime) -> dict[str, Any]:
    """The dataset PROJECT/NAME as the log had it at ``moment``; ``exists`` False if it did not exist then."""
    project, name = split_full_name("dataset", dataset)
    with replay.fresh_schema(store.engine) as target:
        position = projections.rebuild(store, target, until=moment)
        with target.connect() as conn:
            row = conn.execute(
                sa.select(t.datasets).where(t.datasets.c.project == project, t.datasets.c.name == name)
            ).first()
            state: dict[str, Any] = {"dataset": dataset, "at": as_utc(moment).isoformat(), "position": position}
            if row is None:
                return {**state, "exists": False, **{section: None for section in SECTIONS}}
            return {**state, "exists": True, "dataset_id": row.dataset_id, "title": row.title, **_sections(conn, row)}


def _sections(conn: Connection, dataset: Any) -> dict[str, Any]:
    dataset_id = dataset.dataset_id
    labels = conn.execute(
        sa.select(t.labels.c.name, t.labels.c.description).where(t.labels.c.dataset_id == dataset_id)
    ).all()
    annotations = conn.execute(
        sa.select(t.annotations.c.uid, t.annotations.c.assigned, t.annotations.c.dismissed).where(
            t.annotations.c.dataset_id == dataset_id
        )
    ).all()
    model = conn.execute(
        sa.select(t.models).where(t.models.c.dataset_id == dataset_id).order_by(t.models.c.version.desc()).limit(1)
    ).first()
    streams = conn.execute(sa.select(t.streams).where(t.streams.c.dataset_id == dataset_id)).all()
    return {
        "taxonomy": {row.name: row.description for row in sorted(labels)},
        "annotations": {
            row.uid: {
                "assigned": sorted(entry["name"] for entry in row.assigned),
                "dismissed": sorted(row.dismissed),
            }
            for row in sorted(annotations)
            if row.assigned or row.dismissed
        },
        "model": _model(model),
        "streams": {row.name: _stream(row) for row in sorted(streams, key=lambda r: r.name)},
    }


def _model(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "version": row.version,
        "artifact_hash": row.artifact_hash,
        "trained_at": as_utc(row.trained_at).isoformat(),
        "training_size": row.training_size,
        "labels": list(row.labels),
    }


def _stream(row: Any) -> dict[str, Any]:
    thresholds = {_label(item["name"]): item["threshold"] for item in row.label_thresholds}
    return {
        "model_version": row.model_version,
        "thresholds": dict(sorted(thresholds.items())),
        "comment_filter": row.comment_filter,
        "cursor": row.cursor,
        "backlog": row.backlog,
    }


def _label(name: str | list[str]) -> str:
    return name if isinstance(name, str) else " > ".join(name)


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What changed from one state (``dataset_at``) to another, section by section; empty sections left out."""
    changes: dict[str, Any] = {"from": before["at"], "to": after["at"]}
    if before["exists"] != after["exists"]:
        changes["exists"] = {"before": before["exists"], "after": after["exists"]}
    for section in SECTIONS:
        old, new = before[section] or {}, after[section] or {}
        if section == "model":
            if old != new:
                changes["model"] = {"before": before["model"], "after": after["model"]}
            continue
        found = _keyed(old, new)
        if found:
            changes[section] = found
    return changes


def _keyed(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Keys added, removed, and changed (with both values) between two mappings."""
    found: dict[str, Any] = {}
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    both = sorted(set(old) & set(new))
    changed = {key: {"before": old[key], "after": new[key]} for key in both if old[key] != new[key]}
    if added:
        found["added"] = {key: new[key] for key in added}
    if removed:
        found["removed"] = {key: old[key] for key in removed}
    if changed:
        found["changed"] = changed
    return found

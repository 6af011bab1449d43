"""Queries over the projections: what ``commine status`` and the services read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from commine.persistence import schema as t
from commine.persistence.encryption import open_comments
from commine.persistence.projections import checkpoint


def get_comment(engine: Engine, source_id: str, comment_id: str) -> dict[str, Any] | None:
    """A stored comment, read from the ``MessageIngested`` event the read model points at."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(t.messages.c.position, t.messages.c.deleted).where(
                t.messages.c.source_id == source_id, t.messages.c.comment_id == comment_id
            )
        ).first()
        if row is None or row.deleted:
            return None
        event = conn.execute(
            sa.select(t.events.c.event_id, t.events.c.payload).where(t.events.c.position == row.position)
        ).one()
        return dict(open_comments(conn, [(event.event_id, event.payload)])[0])


def source_by_name(engine: Engine, project: str, name: str) -> Any:
    """The live source of that name, else the last purged one (a read should say it was purged), else None."""
    s = t.sources
    query = sa.select(s).where(s.c.project == project, s.c.name == name)
    with engine.connect() as conn:
        return conn.execute(query.order_by(s.c.purged, s.c.updated_at.desc())).first()


def status(engine: Engine) -> dict[str, Any]:
    """Per project: sources with message counts, datasets with annotation counts, models, streams."""
    with engine.connect() as conn:
        message_counts = dict(
            conn.execute(
                sa.select(t.messages.c.source_id, sa.func.count())
                .where(t.messages.c.deleted.is_(False))
                .group_by(t.messages.c.source_id)
            ).all()
        )
        annotation_counts = dict(
            conn.execute(
                sa.select(t.annotations.c.dataset_id, sa.func.count()).group_by(t.annotations.c.dataset_id)
            ).all()
        )
        latest_models = dict(
            conn.execute(
                sa.select(t.models.c.dataset_id, sa.func.max(t.models.c.version)).group_by(t.models.c.dataset_id)
            ).all()
        )
        members: dict[str, list[str]] = {}
        for dataset_id, source_id in conn.execute(sa.select(t.dataset_sources)).all():
            members.setdefault(dataset_id, []).append(source_id)
        stream_rows = conn.execute(sa.select(t.streams).order_by(t.streams.c.name)).all()
        projects = {
            row.name: {"name": row.name, "title": row.title, "sources": [], "datasets": []}
            for row in conn.execute(sa.select(t.projects).order_by(t.projects.c.name))
        }
        names: dict[str, str] = {}
        for row in conn.execute(sa.select(t.sources).where(t.sources.c.purged.is_(False)).order_by(t.sources.c.name)):
            names[row.source_id] = f"{row.project}/{row.name}"
            projects.setdefault(row.project, {"name": row.project, "title": row.project, "sources": [], "datasets": []})
            projects[row.project]["sources"].append(
                {"name": row.name, "id": row.source_id, "messages": message_counts.get(row.source_id, 0)}
            )
        for row in conn.execute(sa.select(t.datasets).order_by(t.datasets.c.name)):
            streams = [
                {"name": s.name, "model_version": s.model_version, "backlog": s.backlog}
                for s in stream_rows
                if s.dataset_id == row.dataset_id
            ]
            sources = members.get(row.dataset_id, [])
            projects[row.project]["datasets"].append(
                {
                    "name": row.name,
                    "id": row.dataset_id,
                    "sources": sorted(names.get(s, s) for s in sources),
                    "messages": sum(message_counts.get(s, 0) for s in sources),
                    "annotations": annotation_counts.get(row.dataset_id, 0),
                    "model_version": latest_models.get(row.dataset_id),
                    "streams": streams,
                }
            )
        position = checkpoint(conn)
    return {"projects": list(projects.values()), "projected_position": position}


def labels(engine: Engine, dataset_id: str) -> list[dict[str, Any]]:
    """A dataset's labels by name, each with how many messages have it assigned and dismissed."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.labels.c.name, t.labels.c.description)
            .where(t.labels.c.dataset_id == dataset_id)
            .order_by(t.labels.c.name)
        ).all()
        annotations = conn.execute(
            sa.select(t.annotations.c.assigned, t.annotations.c.dismissed).where(
                t.annotations.c.dataset_id == dataset_id
            )
        ).all()
    assigned: dict[str, int] = {}
    dismissed: dict[str, int] = {}
    for row in annotations:
        for entry in row.assigned:
            assigned[entry["name"]] = assigned.get(entry["name"], 0) + 1
        for name in row.dismissed:
            dismissed[name] = dismissed.get(name, 0) + 1
    return [
        {
            "name": row.name,
            "description": row.description,
            "assigned": assigned.get(row.name, 0),
            "dismissed": dismissed.get(row.name, 0),
        }
        for row in rows
    ]


def annotations_of(conn: Connection, dataset_id: str, uids: Sequence[str]) -> dict[str, Any]:
    """The annotation rows (assigned with sentiment, dismissed) of those uids that have one."""
    a = t.annotations
    query = sa.select(a.c.uid, a.c.assigned, a.c.dismissed).where(a.c.dataset_id == dataset_id, a.c.uid.in_(uids))
    return {row.uid: row for row in conn.execute(query)}


def predictions_of(conn: Connection, dataset_id: str, version: int, uids: Sequence[str]) -> dict[str, dict[str, float]]:
    """Model ``version``'s probabilities per label for those uids it predicted."""
    p = t.predictions
    query = sa.select(p.c.uid, p.c.labels).where(
        p.c.dataset_id == dataset_id, p.c.model_version == version, p.c.uid.in_(uids)
    )
    return dict(conn.execute(query).all())


def reviewed_from(conn: Connection, dataset_id: str, queue: str) -> set[str]:
    """The uids of the dataset first reviewed from ``queue`` (``shuffle``: messages picked at random)."""
    a = t.annotations
    return set(conn.execute(sa.select(a.c.uid).where(a.c.dataset_id == dataset_id, a.c.queue == queue)).scalars())

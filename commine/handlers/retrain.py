"""Annotations trigger a retrain: the follower that turns label events into training requests.

It reads the log, not the commands, so every way of annotating (the CLI, a CSV import, the API)
triggers training alike. Requests are cheap and coalesced by whoever receives them
(``workers.training``): a burst of annotations asks many times and trains once or twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from commine.persistence import schema as t
from commine.persistence.store import EventStore
from commine.persistence.tracking import follow

NAME = "retrain"
#: Event types that change what a dataset's model should learn.
TRIGGERS = ("LabelApplied", "LabelRemoved", "LabelRenamed", "LabelsMerged", "LabelDeleted")
#: A purge crypto-shreds a source: the models of the datasets reading it are trained again without it.
PURGE = "SourcePurged"


def request_retraining(store: EventStore, request: Callable[[str], None], *, wait: bool = False) -> int | None:
    """Call ``request(dataset_id)`` once per dataset whose labels changed since the last run."""

    def react(conn: Connection, _events: list[Any], start: int, end: int) -> None:
        for dataset_id in _changed_datasets(conn, start, end):
            request(dataset_id)

    return follow(store, NAME, react, wait=wait, read_events=False)


def _changed_datasets(conn: Connection, start: int, end: int) -> list[str]:
    e = t.events
    dataset = e.c.payload["dataset_id"].as_string()
    query = (
        sa.select(dataset)
        .where(e.c.position > start, e.c.position <= end, e.c.type.in_(TRIGGERS))
        .distinct()
        .order_by(dataset)
    )
    changed = set(conn.execute(query).scalars())
    # A purged source's messages must leave every model that learned from them: retrain its datasets.
    purged = sa.select(e.c.payload["source_id"].as_string()).where(
        e.c.position > start, e.c.position <= end, e.c.type == PURGE
    )
    ds = t.dataset_sources
    changed.update(conn.execute(sa.select(ds.c.dataset_id).where(ds.c.source_id.in_(purged))).scalars())
    return sorted(changed)

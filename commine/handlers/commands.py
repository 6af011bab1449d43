"""The service layer for administrative commands: load, decide, append, retrying on conflict.

Creating projects, sources and datasets is low-volume and interactive, so these commands append
directly to the store (the person waiting gets the error at once) rather than going through the
broker; the events they produce reach every other handler through the log like any other.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from commine.domain.aggregate import Aggregate
from commine.domain.dataset import Dataset, dataset_aggregate_id
from commine.domain.errors import NotFound
from commine.domain.model import ModelVersions, models_aggregate_id
from commine.domain.names import check_project_name, split_full_name
from commine.domain.project import Project, project_aggregate_id
from commine.domain.source import Source, source_aggregate_id
from commine.persistence import mldata
from commine.persistence.engine import autocommit
from commine.persistence.store import ConcurrencyError, EventStore

A = TypeVar("A", bound=Aggregate)

#: Attempts of a command that keeps losing optimistic-concurrency races; between attempts it
#: waits a random, growing while (up to ~50 ms) so that writers racing for one aggregate spread out.
ATTEMPTS = 20


def load(store: EventStore, cls: type[A], aggregate_id: str, conn: Connection | None = None) -> A:
    """The aggregate from its events; from its snapshot and the events after it, for a kind that keeps one."""
    if conn is None:
        with autocommit(store.engine) as own:
            return load(store, cls, aggregate_id, own)
    found = store.snapshot(aggregate_id, conn) if cls.snapshot_every else None
    if found is None or found[1].get("schema") != cls.snapshot_schema:
        return cls.replay(aggregate_id, store.read_aggregate(aggregate_id, conn))
    version, state = found
    return cls.from_snapshot(
        aggregate_id, version, state, store.read_aggregate(aggregate_id, conn, after_version=version)
    )


def keep_snapshot(store: EventStore, aggregate: Aggregate, loaded_at: int, conn: Connection | None = None) -> None:
    """After an append that carried ``aggregate`` past a multiple of its kind's ``snapshot_every``: snapshot it."""
    every = aggregate.snapshot_every
    if not every or aggregate.version // every == loaded_at // every:
        return
    state = {**aggregate.state(), "schema": aggregate.snapshot_schema}
    if conn is None:
        with store.engine.begin() as own:
            store.save_snapshot(aggregate.id, aggregate.version, state, own)
        return
    store.save_snapshot(aggregate.id, aggregate.version, state, conn)


def run(store: EventStore, cls: type[A], aggregate_id: str, command: Callable[[A], None]) -> A:
    """Load an aggregate, apply ``command`` and append its events; retry on a lost race."""
    for attempt in range(ATTEMPTS):
        aggregate = load(store, cls, aggregate_id)
        loaded_at = aggregate.version
        command(aggregate)
        try:
            store.append(aggregate.collect())
            keep_snapshot(store, aggregate, loaded_at)
            return aggregate
        except ConcurrencyError:
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, 0.0025 * (attempt + 1)))
    raise AssertionError("unreachable")


def new_id() -> str:
    """A 16-hex-digit id, the shape Communications Mining gives sources and datasets."""
    return secrets.token_hex(8)


def project_exists(store: EventStore, name: str) -> bool:
    return load(store, Project, project_aggregate_id(name)).exists


def create_project(store: EventStore, name: str, *, title: str = "", description: str = "", actor: str) -> Project:
    check_project_name(name)
    return run(
        store,
        Project,
        project_aggregate_id(name),
        lambda p: p.create(title=title, description=description, actor=actor),
    )


def create_source(
    store: EventStore,
    full_name: str,
    *,
    title: str = "",
    description: str = "",
    language: str = "en",
    kind: str = "unknown",
    should_translate: bool = False,
    sensitive_properties: list[str] | None = None,
    actor: str,
) -> Source:
    project, name = split_full_name("source", full_name)
    exists = project_exists(store, project)
    source_id = new_id()
    return run(
        store,
        Source,
        source_aggregate_id(project, name),
        lambda s: s.create(
            source_id=source_id,
            project_exists=exists,
            title=title,
            description=description,
            language=language,
            kind=kind,
            should_translate=should_translate,
            sensitive_properties=sensitive_properties,
            actor=actor,
        ),
    )


def get_source(store: EventStore, full_name: str) -> Source:
    """The live source named ``PROJECT/NAME``, or ``NotFound``."""
    project, name = split_full_name("source", full_name)
    source = load(store, Source, source_aggregate_id(project, name))
    if not source.exists or source.purged:
        raise NotFound(f"source {full_name} does not exist")
    return source


def get_dataset(store: EventStore, full_name: str, conn: Connection | None = None) -> Dataset:
    project, name = split_full_name("dataset", full_name)
    dataset = load(store, Dataset, dataset_aggregate_id(project, name), conn)
    if not dataset.exists:
        raise NotFound(f"dataset {full_name} does not exist")
    return dataset


def create_dataset(
    store: EventStore,
    full_name: str,
    *,
    sources: list[str],
    title: str = "",
    description: str = "",
    has_sentiment: bool = False,
    actor: str,
) -> Dataset:
    project, name = split_full_name("dataset", full_name)
    exists = project_exists(store, project)
    source_ids = [get_source(store, s).source_id for s in sources]
    dataset_id = new_id()
    return run(
        store,
        Dataset,
        dataset_aggregate_id(project, name),
        lambda d: d.create(
            dataset_id=dataset_id,
            source_ids=source_ids,
            project_exists=exists,
            title=title,
            description=description,
            has_sentiment=has_sentiment,
            actor=actor,
        ),
    )


def add_source_to_dataset(store: EventStore, dataset: str, source: str, *, actor: str) -> Dataset:
    source_id = get_source(store, source).source_id
    project, name = split_full_name("dataset", dataset)
    return run(store, Dataset, dataset_aggregate_id(project, name), lambda d: d.add_source(source_id, actor=actor))


def update_source(store: EventStore, full_name: str, *, actor: str, **changes: Any) -> Source:
    """Change a source's title, description, should_translate or sensitive_properties (None keeps one)."""
    project, name = split_full_name("source", full_name)
    return run(store, Source, source_aggregate_id(project, name), lambda s: s.update(actor=actor, **changes))


def delete_source(store: EventStore, full_name: str, *, reason: str = "", actor: str) -> Source:
    """Delete a source: ``SourcePurged``, after which its messages are gone from every read model."""
    project, name = split_full_name("source", full_name)
    return run(store, Source, source_aggregate_id(project, name), lambda s: s.purge(reason=reason, actor=actor))


def delete_dataset(store: EventStore, full_name: str, *, reason: str = "", actor: str) -> Dataset:
    """Delete a dataset: ``DatasetDeleted``; its annotations, models, predictions and streams leave the read
    models, its sources and their messages stay."""
    project, name = split_full_name("dataset", full_name)
    dataset = run(store, Dataset, dataset_aggregate_id(project, name), lambda d: d.delete(reason=reason, actor=actor))
    versions = load(store, ModelVersions, models_aggregate_id(dataset.dataset_id))
    with store.engine.begin() as conn:
        mldata.drop_artifacts(conn, {m.artifact_hash for m in versions.trained.values()}, kept_for=dataset.dataset_id)
    return dataset


def update_dataset(
    store: EventStore,
    full_name: str,
    *,
    title: str | None = None,
    description: str | None = None,
    sources: list[str] | None = None,
    actor: str,
) -> Dataset:
    """Change a dataset's title or description, and add sources to it (a source is never taken out)."""
    project, name = split_full_name("dataset", full_name)
    source_ids = [get_source(store, s).source_id for s in sources or []]

    def decide(dataset: Dataset) -> None:
        dataset.update(title=title, description=description, actor=actor)
        for source_id in source_ids:
            dataset.add_source(source_id, actor=actor)

    return run(store, Dataset, dataset_aggregate_id(project, name), decide)

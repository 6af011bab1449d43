"""Annotating messages and changing the taxonomy: load, decide, append, retrying on a lost race.

An annotation is decided on its state *as of now*: its own events and the dataset's renames,
merges and deletions of labels, folded in log order (``Annotation.replay_following``). So what
it records next is in today's names, and re-labelling a message after a rename never brings the
old name back.

That needs one more guard. An annotation event carries label names, but it is appended to the
annotation, not to the dataset, so the store's version check would not notice a rename committed
between our read and our append. After appending, under the log's write lock, we therefore check
that the dataset is still at the version we decided on, and start again if not.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from commine.domain.annotation import Annotation, Entry, annotation_aggregate_id
from commine.domain.dataset import Dataset, dataset_aggregate_id
from commine.domain.errors import DomainError, NotFound
from commine.domain.message import message_aggregate_id
from commine.domain.names import label_name, split_full_name
from commine.domain.source import Source, source_aggregate_id
from commine.domain.taxonomy import TAXONOMY_CHANGES, TaxonomyChange
from commine.events import DomainEvent, MessageIngested
from commine.handlers.commands import ATTEMPTS, run
from commine.persistence.schema import events as events_table
from commine.persistence.store import CHUNK, ConcurrencyError, EventStore

T = TypeVar("T")

APPLIED, UNCHANGED, ERROR = "applied", "unchanged", "error"


@dataclass(frozen=True)
class AnnotationRequest:
    """One change to one message's labels: what ``commine annotate`` and a JSONL line say."""

    #: ``PROJECT/SOURCE``, or a bare source name in the dataset's project.
    source: str
    comment_id: str
    labels: tuple[str, ...] = ()
    dismissed: tuple[str, ...] = ()
    sentiment: str | None = None
    remove: tuple[str, ...] = ()
    #: Replace the message's whole labelling with ``labels`` and ``dismissed`` (the reference API's
    #: labellings route) instead of adding to it.
    replace: bool = False
    #: The active-learning queue the message was picked from, if any (``shuffle`` counts as random).
    queue: str = ""


@dataclass(frozen=True)
class AnnotationResult:
    """What came of one request: applied, unchanged or error (with the reason), and the labels now."""

    outcome: str
    reason: str = ""
    assigned: list[Entry] = field(default_factory=list)
    dismissed: list[str] = field(default_factory=list)


# --- annotating ----------------------------------------------------------------------------------


def annotate(
    store: EventStore, dataset: str, requests: Sequence[AnnotationRequest], *, actor: str
) -> list[AnnotationResult]:
    """Apply each request to its message's annotation; one result per request, in order.

    A request that breaks a rule (unknown source or comment, a label too long, a sentiment on a
    dataset without) is an error in its result and changes nothing; the others are appended
    together in one transaction. A missing dataset raises ``NotFound``.
    """
    project, name = split_full_name("dataset", dataset)
    aggregate_id = dataset_aggregate_id(project, name)

    def attempt(conn: Connection) -> list[AnnotationResult]:
        results, new_events, version = _decide_annotations(store, conn, aggregate_id, requests, actor)
        if new_events:
            store.append(new_events, conn)
            require_version(conn, aggregate_id, version)
        return results

    return _retrying(store, attempt)


def _retrying(store: EventStore, attempt: Callable[[Connection], T]) -> T:
    """Run ``attempt`` in a transaction, again on a lost optimistic-concurrency race."""
    for number in range(ATTEMPTS):
        try:
            with store.transaction() as conn:
                return attempt(conn)
        except ConcurrencyError:
            if number == ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, 0.0025 * (number + 1)))
    raise AssertionError("unreachable")


def require_version(conn: Connection, aggregate_id: str, version: int) -> None:
    """Raise ``ConcurrencyError`` unless the log holds ``aggregate_id`` at exactly ``version``.

    Called after an append, whose write lock is held until commit: nothing can move the
    aggregate on between this check and the commit.
    """
    current = conn.execute(
        sa.select(sa.func.coalesce(sa.func.max(events_table.c.aggregate_version), 0)).where(
            events_table.c.aggregate_id == aggregate_id
        )
    ).scalar_one()
    if current != version:
        raise ConcurrencyError(f"{aggregate_id} moved to version {current} while deciding on version {version}")


def _decide_annotations(
    store: EventStore, conn: Connection, aggregate_id: str, requests: Sequence[AnnotationRequest], actor: str
) -> tuple[list[AnnotationResult], list[DomainEvent], int]:
    """The results, the events to append and the dataset version they were decided on."""
    dataset, changes = load_dataset(store, conn, aggregate_id)
    targets = _targets(store, conn, dataset, requests)
    uids = {target for target in targets if isinstance(target, str)}
    annotations = load_annotations(store, conn, dataset, changes, uids)
    results: list[AnnotationResult] = []
    for request, target in zip(requests, targets, strict=True):
        if isinstance(target, DomainError):
            results.append(AnnotationResult(ERROR, str(target)))
            continue
        try:
            dataset, annotations[target], changed = _decide_one(dataset, annotations[target], request, actor)
        except DomainError as exc:
            results.append(AnnotationResult(ERROR, str(exc)))
            continue
        after = annotations[target]
        results.append(AnnotationResult(APPLIED if changed else UNCHANGED, "", after.assigned, after.dismissed))
    new_events = dataset.collect() + [e for annotation in annotations.values() for e in annotation.collect()]
    return results, new_events, dataset.version


def _decide_one(
    dataset: Dataset, annotation: Annotation, request: AnnotationRequest, actor: str
) -> tuple[Dataset, Annotation, bool]:
    """Decide one request on copies, so a refused one leaves no trace in the batch."""
    dataset, annotation = copy.deepcopy(dataset), copy.deepcopy(annotation)
    for label in request.labels:
        dataset.define_label(label, actor=actor)
    for label in request.dismissed:
        if label_name(label) not in dataset.labels:
            raise NotFound(f"cannot dismiss {label_name(label)!r}: it is not in the taxonomy")
    if request.replace:
        changed = annotation.label(
            list(request.labels),
            dismissed=list(request.dismissed),
            sentiment=request.sentiment,
            has_sentiment=dataset.has_sentiment,
            queue=request.queue,
            actor=actor,
        )
        return dataset, annotation, changed
    changed = annotation.annotate(
        list(request.labels),
        dismiss=list(request.dismissed),
        remove=list(request.remove),
        sentiment=request.sentiment,
        has_sentiment=dataset.has_sentiment,
        queue=request.queue,
        actor=actor,
    )
    return dataset, annotation, changed


def _targets(
    store: EventStore, conn: Connection, dataset: Dataset, requests: Sequence[AnnotationRequest]
) -> list[str | DomainError]:
    """Each request's annotation uid (``<source id>.<comment id>``), or why it has none."""
    names = {request.source: _source_name(dataset, request.source) for request in requests}
    sources = _load_sources(store, conn, [name for name in names.values() if isinstance(name, str)])
    source_ids = {name: s.source_id for name, s in sources.items() if s.exists and not s.purged}
    keys = []
    for request in requests:
        name = names[request.source]
        if isinstance(name, str) and name in source_ids:
            keys.append((source_ids[name], request.comment_id))
    live = live_messages(conn, keys)
    targets: list[str | DomainError] = []
    for request in requests:
        try:
            targets.append(_target(dataset, names[request.source], sources, live, request.comment_id))
        except DomainError as exc:
            targets.append(exc)
    return targets


def _target(
    dataset: Dataset,
    name: str | DomainError,
    sources: dict[str, Source],
    live: set[tuple[str, str]],
    comment_id: str,
) -> str:
    if isinstance(name, DomainError):
        raise name
    source = sources[name]
    if not source.exists or source.purged:
        raise NotFound(f"source {name} does not exist")
    if source.source_id not in dataset.source_ids:
        raise DomainError(f"source {name} is not in dataset {dataset.project}/{dataset.name}")
    if (source.source_id, comment_id) not in live:
        raise NotFound(f"comment {comment_id!r} does not exist in source {name}")
    return f"{source.source_id}.{comment_id}"


def _source_name(dataset: Dataset, source: str) -> str | DomainError:
    """``PROJECT/SOURCE`` checked; a bare name means a source of the dataset's project."""
    full_name = source if "/" in source else f"{dataset.project}/{source}"
    try:
        split_full_name("source", full_name)
    except DomainError as exc:
        return exc
    return full_name


def _load_sources(store: EventStore, conn: Connection, full_names: Iterable[str]) -> dict[str, Source]:
    ids = {name: source_aggregate_id(*split_full_name("source", name)) for name in set(full_names)}
    loaded = store.read_aggregates(list(ids.values()), conn)
    return {name: Source.replay(aggregate_id, loaded[aggregate_id]) for name, aggregate_id in ids.items()}


def live_messages(conn: Connection, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Those (source id, comment id) whose message exists and is not deleted.

    As ``Message.replay`` would say, but from the event types alone: a message is live when its
    latest event is a ``MessageIngested``. Its comment, however long, is not read.
    """
    by_id = {message_aggregate_id(source_id, comment_id): (source_id, comment_id) for source_id, comment_id in keys}
    latest: dict[str, tuple[int, str]] = {}
    ids = list(by_id)
    for start in range(0, len(ids), CHUNK):
        query = sa.select(events_table.c.aggregate_id, events_table.c.aggregate_version, events_table.c.type).where(
            events_table.c.aggregate_id.in_(ids[start : start + CHUNK])
        )
        for aggregate_id, version, type_name in conn.execute(query):
            if version > latest.get(aggregate_id, (0, ""))[0]:
                latest[aggregate_id] = (version, type_name)
    return {by_id[i] for i, (_, type_name) in latest.items() if type_name == MessageIngested.type_name()}


# --- loading with positions ----------------------------------------------------------------------


def load_dataset(
    store: EventStore, conn: Connection, aggregate_id: str
) -> tuple[Dataset, list[tuple[int, TaxonomyChange]]]:
    """The dataset, and its taxonomy changes with their log positions (for annotations to follow)."""
    history = store.read_aggregate(aggregate_id, conn)
    dataset = Dataset.replay(aggregate_id, history)
    if not dataset.exists:
        raise NotFound(f"dataset {dataset.project}/{dataset.name} does not exist")
    changes = [e for e in history if isinstance(e, TaxonomyChange)]
    positions = _positions(conn, [aggregate_id], types=[t.type_name() for t in TAXONOMY_CHANGES])
    return dataset, [(positions[(aggregate_id, e.aggregate_version)], e) for e in changes]


def load_annotations(
    store: EventStore,
    conn: Connection,
    dataset: Dataset,
    changes: list[tuple[int, TaxonomyChange]],
    uids: Iterable[str],
) -> dict[str, Annotation]:
    """The annotations of ``uids`` in ``dataset``, each as of now: in today's label names."""
    ids = {uid: annotation_aggregate_id(dataset.dataset_id, uid) for uid in uids}
    loaded = store.read_aggregates(list(ids.values()), conn)
    positions = _positions(conn, [aggregate_id for aggregate_id, history in loaded.items() if history])
    return {
        uid: Annotation.replay_following(
            aggregate_id,
            [(positions[(aggregate_id, e.aggregate_version)], e) for e in loaded[aggregate_id]],
            changes,
        )
        for uid, aggregate_id in ids.items()
    }


def _positions(
    conn: Connection, aggregate_ids: Sequence[str], *, types: Sequence[str] | None = None
) -> dict[tuple[str, int], int]:
    """The log position of each (aggregate id, version), optionally of some event types only."""
    out: dict[tuple[str, int], int] = {}
    for start in range(0, len(aggregate_ids), CHUNK):
        query = sa.select(events_table.c.aggregate_id, events_table.c.aggregate_version, events_table.c.position).where(
            events_table.c.aggregate_id.in_(list(aggregate_ids[start : start + CHUNK]))
        )
        if types is not None:
            query = query.where(events_table.c.type.in_(list(types)))
        out.update({(row[0], row[1]): row[2] for row in conn.execute(query)})
    return out


# --- the taxonomy --------------------------------------------------------------------------------


def _on_dataset(store: EventStore, dataset: str, command: Callable[[Dataset], T]) -> T:
    """Run a command on the dataset named ``PROJECT/DATASET``; returns what the command returned."""
    project, name = split_full_name("dataset", dataset)
    out: list[T] = []

    def decide(aggregate: Dataset) -> None:
        if not aggregate.exists:
            raise NotFound(f"dataset {dataset} does not exist")
        out[:] = [command(aggregate)]

    run(store, Dataset, dataset_aggregate_id(project, name), decide)
    return out[0]


def define_label(store: EventStore, dataset: str, name: str, *, description: str = "", actor: str) -> str:
    """Add a label (and its missing parents) to the taxonomy; returns its canonical name."""
    return _on_dataset(store, dataset, lambda d: d.define_label(name, description=description, actor=actor))


def rename_label(store: EventStore, dataset: str, old: str, new: str, *, actor: str) -> str:
    """Rename a label and its children, in every annotation too; returns the new name."""
    return _on_dataset(store, dataset, lambda d: d.rename_label(old, new, actor=actor))


def merge_labels(store: EventStore, dataset: str, sources: Sequence[str], target: str, *, actor: str) -> str:
    """Fold labels into ``target`` (defined if missing), in every annotation too; returns the target."""
    return _on_dataset(store, dataset, lambda d: d.merge_labels(list(sources), target, actor=actor))


def delete_label(store: EventStore, dataset: str, name: str, *, actor: str) -> list[str]:
    """Delete a label and its children from the taxonomy and every annotation; returns what went."""
    return _on_dataset(store, dataset, lambda d: d.delete_label(name, actor=actor))


def count_outcomes(results: Sequence[AnnotationResult]) -> dict[str, int]:
    """How many results are applied, unchanged and errors."""
    return {outcome: sum(r.outcome == outcome for r in results) for outcome in (APPLIED, UNCHANGED, ERROR)}

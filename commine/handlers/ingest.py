"""Ingestion: a batch of comments for one source becomes ``MessageIngested`` events.

Idempotent by (source, comment id): a comment sent again with the same content records nothing
(``unchanged``), with new content records an update. The batch's events and its receipt are
committed in one transaction, so a redelivered batch finds its receipt and does nothing, and a
worker killed before the commit leaves nothing behind for the redelivery to trip over.

The body of an ingest message (the ``ingest`` actor's only argument) is documented in the README::

    {"batch_id": "...", "source": "PROJECT/SOURCE", "actor": "integration:NAME",
     "comments": [<Communications Mining comment>, ...],
     "dataset": "PROJECT/DATASET", "annotations": [{"id": "<comment id>", "labels": ["A > B"]}]}

``dataset`` and ``annotations`` are optional (annotated imports).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from commine.domain.comment import normalise_comment
from commine.domain.dataset import dataset_aggregate_id
from commine.domain.errors import CommentError, DomainError, NotFound
from commine.domain.message import NEW, UNCHANGED, UPDATED, Message, message_aggregate_id
from commine.domain.names import label_name, split_full_name
from commine.domain.source import Source, source_aggregate_id
from commine.events import DomainEvent
from commine.handlers.labels import load_annotations, load_dataset, require_version
from commine.persistence.engine import insert
from commine.persistence.schema import ingest_receipts
from commine.persistence.store import ConcurrencyError, EventStore

#: Comments one ingest message may carry; the reference allows 16,384 per sync request.
MAX_BATCH = 16384
#: The log's ``actor`` column holds 256 characters.
MAX_ACTOR = 256
ATTEMPTS = 8


class MalformedMessage(ValueError):
    """An ingest message that no retry can fix; it goes to the dead-letter queue with this reason."""


@dataclass
class Receipt:
    """What one batch did: counts, and each rejected comment with its reason."""

    batch_id: str
    source_id: str
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_row(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "source_id": self.source_id,
            "new": self.new,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "errors": self.errors,
            "recorded_at": datetime.now(UTC),
        }


@dataclass(frozen=True)
class IngestBatch:
    batch_id: str
    source: str
    actor: str
    comments: list[Any]
    dataset: str | None
    annotations: dict[str, list[str]]


def parse_batch(body: Any) -> IngestBatch:
    """Check the envelope of an ingest message; comment-level problems are reported per comment."""
    if not isinstance(body, dict):
        raise MalformedMessage("an ingest message must be a JSON object")
    missing = [k for k in ("batch_id", "source", "comments") if k not in body]
    if missing:
        raise MalformedMessage(f"an ingest message needs the field(s): {', '.join(missing)}")
    unknown = set(body) - {"batch_id", "source", "actor", "comments", "dataset", "annotations"}
    if unknown:
        raise MalformedMessage(f"unknown field(s) in ingest message: {', '.join(sorted(unknown))}")
    batch_id, comments = body["batch_id"], body["comments"]
    if not isinstance(batch_id, str) or not 0 < len(batch_id) <= 64:
        raise MalformedMessage("batch_id must be a string of 1-64 characters")
    if not isinstance(comments, list) or len(comments) > MAX_BATCH:
        raise MalformedMessage(f"comments must be a list of at most {MAX_BATCH} comments")
    actor = body.get("actor") or "integration"
    if not isinstance(actor, str) or len(actor) > MAX_ACTOR:
        raise MalformedMessage(f"actor must be a string of at most {MAX_ACTOR} characters")
    for key, kind in (("source", "source"), ("dataset", "dataset")):
        value = body.get(key)
        if value is None and key == "dataset":
            continue
        if not isinstance(value, str):
            raise MalformedMessage(f'{key} must be a string "PROJECT/NAME"')
        try:
            split_full_name(kind, value)
        except DomainError as exc:
            raise MalformedMessage(str(exc)) from None
    items = body.get("annotations") or []
    if not isinstance(items, list):
        raise MalformedMessage('annotations must be a list of {"id": ..., "labels": [...]}')
    annotations: dict[str, list[str]] = {}
    for item in items:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("id"), str)
            or not isinstance(item.get("labels"), list)
            or not all(isinstance(label, str) for label in item["labels"])
        ):
            raise MalformedMessage('each annotation must be {"id": "<comment id>", "labels": ["A > B", ...]}')
        annotations[item["id"]] = list(item["labels"])
    if annotations and not body.get("dataset"):
        raise MalformedMessage("annotations need a dataset")
    return IngestBatch(
        batch_id=batch_id,
        source=str(body["source"]),
        actor=actor,
        comments=comments,
        dataset=body.get("dataset"),
        annotations=annotations,
    )


def find_receipt(conn: Connection, batch_id: str) -> Receipt | None:
    row = conn.execute(sa.select(ingest_receipts).where(ingest_receipts.c.batch_id == batch_id)).first()
    return None if row is None else receipt_from_row(row)


def receipt_from_row(row: Any) -> Receipt:
    return Receipt(row.batch_id, row.source_id, row.new, row.updated, row.unchanged, row.rejected, list(row.errors))


def _save_receipt(conn: Connection, receipt: Receipt) -> None:
    conn.execute(insert(conn, ingest_receipts).values(**receipt.as_row()).on_conflict_do_nothing())


def handle_ingest(store: EventStore, body: Any) -> Receipt:
    """Store one ingest batch; returns its receipt (the first one, for a redelivered batch)."""
    batch = parse_batch(body)
    store.ensure_statistics()  # the look-up of the batch's messages needs them
    for attempt in range(ATTEMPTS):
        try:
            with store.transaction() as conn:
                receipt = find_receipt(conn, batch.batch_id)
                if receipt is not None:
                    return receipt
                receipt, events, taxonomy = _decide(store, conn, batch)
                # The receipt first: the append takes the log's write lock, held until commit,
                # so whatever comes after it in this transaction holds up every other writer.
                _save_receipt(conn, receipt)
                store.append(events, conn)
                if taxonomy is not None and events:
                    # Label names were decided on this dataset version: a rename since means again.
                    require_version(conn, *taxonomy)
                return receipt
        except ConcurrencyError:
            # Another worker wrote one of these messages first: decide again on its version.
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
    raise AssertionError("unreachable")


def _decide(
    store: EventStore, conn: Connection, batch: IngestBatch
) -> tuple[Receipt, list[DomainEvent], tuple[str, int] | None]:
    """The receipt, the events, and the (dataset, version) the annotations were decided on if any."""
    project, name = split_full_name("source", batch.source)
    source = Source.replay(
        source_aggregate_id(project, name), store.read_aggregate(source_aggregate_id(project, name), conn)
    )
    if not source.exists or source.purged:
        raise MalformedMessage(f"source {batch.source} does not exist")
    receipt = Receipt(batch.batch_id, source.source_id)
    accepted: list[tuple[str, dict[str, Any]]] = []
    for index, raw in enumerate(batch.comments):
        try:
            comment = normalise_comment(raw)
        except CommentError as exc:
            receipt.rejected += 1
            ident = raw.get("id") if isinstance(raw, dict) else None
            receipt.errors.append({"index": index, "id": ident, "field": exc.field, "reason": exc.reason})
            continue
        accepted.append((message_aggregate_id(source.source_id, comment["id"]), comment))
    loaded = store.read_aggregates(sorted({aggregate_id for aggregate_id, _ in accepted}), conn)
    messages = {aggregate_id: Message.replay(aggregate_id, events) for aggregate_id, events in loaded.items()}
    events: list[DomainEvent] = []
    hasher = store.cipher.content_hasher(conn, source.source_id) if accepted else None
    for aggregate_id, comment in accepted:
        change = messages[aggregate_id].ingest(comment, actor=batch.actor, hasher=hasher)
        if change == NEW:
            receipt.new += 1
        elif change == UPDATED:
            receipt.updated += 1
        else:
            assert change == UNCHANGED
            receipt.unchanged += 1
    for message in messages.values():
        events.extend(message.collect())
    taxonomy = None
    if batch.dataset and batch.annotations:
        stored_ids = {comment["id"] for _, comment in accepted}
        labelled, taxonomy = _annotate(store, conn, batch, source.source_id, stored_ids, receipt)
        events.extend(labelled)
    return receipt, events, taxonomy


def _annotate(
    store: EventStore, conn: Connection, batch: IngestBatch, source_id: str, stored_ids: set[str], receipt: Receipt
) -> tuple[list[DomainEvent], tuple[str, int]]:
    """Label events for the batch's annotations, and the (dataset, version) they were decided on.

    Each annotation is loaded as of now (following renames and merges of labels), so the file's
    labels are compared with today's names. A bad one is reported in the receipt, not fatal.
    """
    assert batch.dataset is not None
    project, name = split_full_name("dataset", batch.dataset)
    try:
        dataset, changes = load_dataset(store, conn, dataset_aggregate_id(project, name))
    except NotFound:
        raise MalformedMessage(f"dataset {batch.dataset} does not exist") from None
    if source_id not in dataset.source_ids:
        raise MalformedMessage(f"source {batch.source} is not in dataset {batch.dataset}")
    # A rejected comment's labels go with it: its error is in the receipt already.
    wanted = {comment_id: labels for comment_id, labels in batch.annotations.items() if comment_id in stored_ids}
    annotations = load_annotations(store, conn, dataset, changes, [f"{source_id}.{c}" for c in wanted])
    events: list[DomainEvent] = []
    for comment_id, labels in wanted.items():
        try:
            names = [label_name(label) for label in labels]
            for label in names:
                dataset.define_label(label, actor=batch.actor)
            annotation = annotations[f"{source_id}.{comment_id}"]
            annotation.label(names, actor=batch.actor)
            events.extend(annotation.collect())
        except DomainError as exc:
            receipt.errors.append({"index": None, "id": comment_id, "field": "labels", "reason": str(exc)})
    return dataset.collect() + events, (dataset.id, dataset.version)

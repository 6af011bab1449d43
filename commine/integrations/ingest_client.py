"""The client side of ingestion: publish comment batches to the broker, wait for their receipts.

Any integration (CSV upload, a mailbox sync) sends through this; the batch ids it gets back are
how it learns, from the receipts the workers commit, what became new, updated or unchanged.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa

from commine.bootstrap import App
from commine.handlers.ingest import Receipt, receipt_from_row
from commine.persistence.schema import ingest_receipts

T = TypeVar("T")


class IngestTimeout(TimeoutError):
    """The workers did not store every batch in time (is a worker running?)."""


class BatchRejected(RuntimeError):
    """A worker moved a batch to the dead-letter queue instead of storing it."""


#: Seconds between looks at the dead-letter queue while waiting for receipts.
DEAD_LETTER_CHECK = 2.0


def dead_lettered(app: App, batch_ids: Sequence[str]) -> dict[str, str]:
    """Which of ``batch_ids`` sit in the ingest dead-letter queue, with the reason for each."""
    from commine.broker.dramatiq_broker import read_dead_letters
    from commine.broker.topology import INGEST, queue_name

    if app.settings.embedded:
        return {}  # in process, a rejected batch raises in the sender at once
    letters = read_dead_letters(app.settings.amqp_url, queue_name(app.settings.queue_prefix, INGEST), limit=1000)
    found = {}
    for letter in letters:
        for batch_id in batch_ids:
            if batch_id.encode() in letter.body:
                found[batch_id] = letter.reason
    return found


#: Bytes of comment JSON one ingest message carries at most, whatever ``COMMINE_INGEST_BATCH_SIZE``
#: says: RabbitMQ refuses messages over 128 MiB by default, and one comment may hold 65,536
#: characters in each of its text fields.
MAX_BATCH_BYTES = 16 * 1024 * 1024


def comment_bytes(comment: dict[str, Any]) -> int:
    """About the bytes a comment takes in an ingest message."""
    return len(orjson.dumps(comment))


def batched(
    items: Iterable[T], size: int, weight: Callable[[T], int], max_bytes: int = MAX_BATCH_BYTES
) -> Iterator[list[T]]:
    """``items`` in lists of at most ``size`` that weigh at most ``max_bytes`` (an item heavier than
    that alone goes in a list of its own); a full list is handed over before the next item is read."""
    batch: list[T] = []
    total = 0
    for item in items:
        load = weight(item)
        if batch and total + load > max_bytes:
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += load
        if len(batch) >= size:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


def make_body(
    source: str,
    comments: Sequence[dict[str, Any]],
    *,
    actor: str,
    dataset: str | None = None,
    annotations: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "batch_id": uuid.uuid4().hex,
        "source": source,
        "actor": actor,
        "comments": list(comments),
    }
    if dataset:
        body["dataset"] = dataset
        body["annotations"] = [{"id": k, "labels": v} for k, v in (annotations or {}).items()]
    return body


def send(app: App, body: dict[str, Any]) -> str:
    """Publish one ingest batch (confirmed by the broker); returns its batch id."""
    app.actors.ingest.send(body)
    return str(body["batch_id"])


def wait_for_receipts(
    app: App,
    batch_ids: Sequence[str],
    *,
    timeout: float = 600.0,
    progress: Callable[[int], None] | None = None,
) -> list[Receipt]:
    """Block until every batch has a receipt; ``progress`` is told how many arrived each poll."""
    pending = set(batch_ids)
    found: dict[str, Receipt] = {}
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + DEAD_LETTER_CHECK
    while pending:
        with app.engine.connect() as conn:
            ids = list(pending)
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for row in conn.execute(sa.select(ingest_receipts).where(ingest_receipts.c.batch_id.in_(chunk))):
                    found[row.batch_id] = receipt_from_row(row)
                    pending.discard(row.batch_id)
                    if progress:
                        progress(1)
        if pending and time.monotonic() > next_check:
            # A batch the workers refused never gets a receipt: say so now, not at the timeout.
            rejected = dead_lettered(app, list(pending))
            if rejected:
                batch_id, reason = next(iter(rejected.items()))
                raise BatchRejected(f"{len(rejected)} batch(es) rejected by the workers, e.g. {batch_id}: {reason}")
            next_check = time.monotonic() + DEAD_LETTER_CHECK
        if pending:
            if time.monotonic() > deadline:
                raise IngestTimeout(f"{len(pending)} of {len(batch_ids)} batches not stored after {timeout:.0f} s")
            time.sleep(0.1)
    return [found[b] for b in batch_ids]

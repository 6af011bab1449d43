"""``commine upload``: a CSV file into a source, through the broker, with a per-row report."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from commine.integrations.csv_import import ColumnMapping, CsvError, CsvFileError, CsvRow, read_csv
from commine.scripts.context import Context, actor_name, fail, pass_context


def batches(rows: Iterator[CsvRow | CsvError], size: int, errors: list[CsvError]) -> Iterator[list[CsvRow]]:
    """Good rows in batches of ``size`` (and ``MAX_BATCH_BYTES``); bad rows are collected in ``errors`` as they pass."""
    from commine.integrations.ingest_client import batched, comment_bytes

    def good() -> Iterator[CsvRow]:
        for row in rows:
            if isinstance(row, CsvError):
                errors.append(row)
            else:
                yield row

    return batched(good(), size, lambda row: comment_bytes(row.comment))


def publish_csv(
    app: Any, source: str, file: Path, mapping: ColumnMapping, *, dataset: str | None = None
) -> tuple[list[str], list[CsvError]]:
    """Publish the good rows of a CSV in batches; returns the batch ids and the bad rows.

    In the embedded mode the in-process workers run while publishing and are drained before
    this returns, so the receipts are there when it does.
    """
    from commine.integrations.ingest_client import make_body, send

    errors: list[CsvError] = []
    batch_ids: list[str] = []
    runner: Any = nullcontext()
    if app.settings.embedded:
        from commine.workers.inline import inline_worker

        runner = inline_worker(app)
    with runner, tqdm(unit="row", desc="publish", file=sys.stderr, disable=None) as bar:
        for batch in batches(read_csv(file, mapping), app.settings.ingest_batch_size, errors):
            annotations = {row.comment["id"]: row.labels for row in batch if row.labels}
            body = make_body(
                source, [row.comment for row in batch], actor=actor_name(), dataset=dataset, annotations=annotations
            )
            batch_ids.append(send(app, body))
            bar.update(len(batch))
    return batch_ids, errors


def wait_stored(app: Any, batch_ids: list[str], timeout: float) -> list[Any]:
    """The receipts of published batches, with a progress bar; a clear failure when one is rejected or late."""
    from commine.integrations.ingest_client import BatchRejected, IngestTimeout, wait_for_receipts

    try:
        with tqdm(total=len(batch_ids), unit="batch", desc="store", file=sys.stderr, disable=None) as bar:
            return wait_for_receipts(app, batch_ids, timeout=timeout, progress=bar.update)
    except BatchRejected as exc:
        fail(f"{exc}; see `commine deadletters`")
    except IngestTimeout as exc:
        fail(f"{exc}; is `commine worker` running?")
    raise AssertionError("unreachable")


@click.command()
@click.argument("source", metavar="PROJECT/SOURCE")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id-column", default="id", show_default=True)
@click.option("--timestamp-column", default="timestamp", show_default=True)
@click.option("--text-column", default="text", show_default=True)
@click.option("--subject-column", default=None)
@click.option("--from-column", default=None)
@click.option("--to-column", default=None)
@click.option("--thread-column", default=None)
@click.option("--property-column", "property_columns", multiple=True, help="Repeatable; `number:NAME` for numbers.")
@click.option("--dataset", default=None, metavar="PROJECT/DATASET", help="Import the label columns into it.")
@click.option("--label-column", "label_columns", multiple=True, help="Repeatable; `A > B` names, `;` between labels.")
@click.option("--no-wait", is_flag=True, help="Publish and return without waiting for the workers.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for the workers.")
@pass_context
def upload(
    ctx: Context,
    source: str,
    file: Path,
    id_column: str,
    timestamp_column: str,
    text_column: str,
    subject_column: str | None,
    from_column: str | None,
    to_column: str | None,
    thread_column: str | None,
    property_columns: tuple[str, ...],
    dataset: str | None,
    label_columns: tuple[str, ...],
    no_wait: bool,
    timeout: float,
) -> None:
    """Upload FILE (CSV, comma or tab, UTF-8/16/32) into SOURCE.

    Each bad row is reported with its line, column and reason; every good row goes through.
    The summary counts new, updated, unchanged and rejected comments.
    """
    from commine.handlers.commands import get_dataset, get_source

    if label_columns and not dataset:
        fail("--label-column needs --dataset PROJECT/DATASET")
    mapping = ColumnMapping(
        id=id_column,
        timestamp=timestamp_column,
        text=text_column,
        subject=subject_column,
        sender=from_column,
        to=to_column,
        thread=thread_column,
        properties=property_columns,
        labels=label_columns,
    )
    app = ctx.app
    try:
        get_source(app.store, source)
        if dataset:
            get_dataset(app.store, dataset)
    except ValueError as exc:
        fail(str(exc))
    try:
        batch_ids, errors = publish_csv(app, source, file, mapping, dataset=dataset)
    except CsvFileError as exc:
        fail(f"{file}: {exc}")
    for error in errors:
        column = f", column {error.column}" if error.column else ""
        click.echo(f"{file}: line {error.line}{column}: {error.reason}", err=True)
    if no_wait and not ctx.settings.embedded:
        click.echo(f"published {len(batch_ids)} batch(es); {len(errors)} row(s) rejected before publishing")
        return
    receipts = wait_stored(app, batch_ids, timeout)
    for receipt in receipts:
        for error in receipt.errors:
            click.echo(f"{file}: comment {error['id']!r}: {error['field']}: {error['reason']}", err=True)
    new = sum(r.new for r in receipts)
    updated = sum(r.updated for r in receipts)
    unchanged = sum(r.unchanged for r in receipts)
    rejected = len(errors) + sum(r.rejected for r in receipts)
    click.echo(f"{new} new, {updated} updated, {unchanged} unchanged, {rejected} rejected")

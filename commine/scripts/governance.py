"""``commine export`` and ``commine audit``: a dataset's data out, and who did what to it."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
from tqdm import tqdm

from commine.domain.comment import parse_timestamp
from commine.domain.errors import CommentError, DomainError, NotFound
from commine.scripts.context import Context, actor_name, fail, pass_context


def _moment(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value, option).astimezone(UTC)
    except CommentError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


@click.command()
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.option("--format", "format_", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="A file [standard output].")
@click.option("--version", type=int, default=None, help="The model version whose predictions to include [newest].")
@click.option("--after", metavar="UID", help="Go on after this message (the last uid of an interrupted export).")
@pass_context
def export(
    ctx: Context, dataset: str, format_: str, output: Path | None, version: int | None, after: str | None
) -> None:
    """Export DATASET's messages with their labels (``Parent > Child``) and predictions, as JSON lines or CSV."""
    from commine.handlers import export as exporting
    from commine.handlers.audit import record_cli_read
    from commine.handlers.commands import get_dataset

    try:
        dataset_id = get_dataset(ctx.store, dataset).dataset_id
        plan = exporting.plan(ctx.store, dataset_id, version)
    except (NotFound, DomainError, LookupError) as exc:
        fail(str(exc))
        return
    detail = {"format": format_, "model_version": plan.model_version, "messages": plan.total}
    record_cli_read(ctx.store, actor_name(), f"export {dataset}", dataset.partition("/")[0], **detail)
    with _opened(output) as out:
        if format_ == "csv" and after is None:
            out.write(exporting.csv_header())
        line = exporting.csv_line if format_ == "csv" else exporting.jsonl_line
        bar = tqdm(total=plan.total, unit="msg", desc=f"export {dataset}", file=sys.stderr, disable=None)
        try:
            for record in exporting.records(ctx.store, plan, after=after):
                out.write(line(record))
                bar.update()
        except LookupError as exc:
            fail(str(exc))
        finally:
            bar.close()


class _opened:
    """A file opened for writing, or standard output left open."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.file: IO[str] | None = None

    def __enter__(self) -> IO[str]:
        if self.path is None:
            return sys.stdout
        self.file = self.path.open("w", encoding="utf-8", newline="")
        return self.file

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()


@click.command()
@click.option("--since", help="From this moment (ISO 8601).")
@click.option("--until", help="Up to this moment (ISO 8601).")
@click.option("--type", "types", multiple=True, help="Event types; DataAccessed for reads and API calls. Repeat.")
@click.option("--actor", "actors", multiple=True, help="Only these actors (api:alice, user:bob). Repeat.")
@click.option("--project", help="Only this project's entries.")
@click.option("-n", "limit", type=click.IntRange(1, 100_000), default=200, show_default=True)
@click.option("--continuation", help="Where the last page stopped.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_context
def audit(
    ctx: Context,
    since: str | None,
    until: str | None,
    types: tuple[str, ...],
    actors: tuple[str, ...],
    project: str | None,
    limit: int,
    continuation: str | None,
    as_json: bool,
) -> None:
    """The audit trail: changes (the event log) and accesses (reads, API calls), oldest first.

    Whoever runs the CLI on the deployment's own configuration is its operator and sees every project.
    """
    from commine.handlers import audit as trail

    wanted = trail.AuditFilter(
        minimum=_moment(since, "--since"),
        maximum=_moment(until, "--until"),
        event_types=list(types) or None,
        actors=list(actors) or None,
    )
    try:
        page = trail.query(
            ctx.store, wanted, lambda p: project is None or p == project, after=continuation, limit=limit
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--continuation") from None
    for entry in page.entries:
        click.echo(json.dumps(entry, default=str) if as_json else _line(entry))
    if page.continuation:
        click.echo(f"more: --continuation {page.continuation}", err=True)


def _line(entry: dict[str, Any]) -> str:
    when = entry["timestamp"].isoformat(timespec="seconds")
    project = entry["project"] or "-"
    if entry["access_id"] is not None:
        what = f"{entry['action']} -> {entry['status']} from {entry['client']} ({entry['channel']})"
    else:
        what = f"{entry['event_type']} {entry['aggregate_id']} (position {entry['position']})"
    return f"{when}  {entry['actor']}  {project}  {what}"


COMMANDS = [export, audit]

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
        if entry.get("reason"):
            what += f" reason: {entry['reason']}"
    return f"{when}  {entry['actor']}  {project}  {what}"


@click.command()
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.option("--at", "at", required=True, metavar="ISO-TIME", help="The moment to show the dataset at.")
@click.option("--to", "to", metavar="ISO-TIME", help="A later moment: show what changed from --at to it.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def history(ctx: Context, dataset: str, at: str, to: str | None, as_json: bool) -> None:
    """DATASET as the log had it at a moment (taxonomy, annotations, model, streams), or what changed between two.

    Rebuilds the read models from the log up to each moment in a scratch schema; the live ones are untouched.
    """
    from commine.handlers import history as past

    first = _moment(at, "--at")
    assert first is not None
    try:
        state = past.dataset_at(ctx.store, dataset, first)
        later = past.dataset_at(ctx.store, dataset, _moment(to, "--to") or first) if to else None
    except DomainError as exc:
        fail(str(exc))
        return
    answer = past.diff(state, later) if later is not None else state
    if as_json:
        click.echo(json.dumps(answer, indent=2, default=str))
    elif later is not None:
        _echo_diff(answer)
    else:
        _echo_state(state)


def _echo_state(state: dict[str, Any]) -> None:
    click.echo(f"{state['dataset']} at {state['at']} (log position {state['position']})")
    if not state["exists"]:
        click.echo("  did not exist")
        return
    click.echo(f"  taxonomy: {', '.join(state['taxonomy']) or '(empty)'}")
    click.echo(f"  annotated messages: {len(state['annotations'])}")
    model = state["model"]
    click.echo(f"  model: version {model['version']}, trained {model['trained_at']}" if model else "  model: none")
    for name, stream in state["streams"].items():
        limits = ", ".join(f"{label}={value}" for label, value in stream["thresholds"].items())
        click.echo(f"  stream {name}: model {stream['model_version']}, cursor {stream['cursor']}, thresholds {limits}")


def _echo_diff(changes: dict[str, Any]) -> None:
    click.echo(f"from {changes['from']} to {changes['to']}")
    for section, found in changes.items():
        if section in ("from", "to"):
            continue
        click.echo(f"  {section}: {json.dumps(found, default=str)}")


COMMANDS = [export, audit, history]

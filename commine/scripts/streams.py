"""``commine streams``: create and inspect streams, change their thresholds and model, and fetch,
advance or reset them as a robot would. A thin layer over ``commine.handlers.streams``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from commine.domain.errors import DomainError
from commine.scripts.context import Context, actor_name, fail, pass_context


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a service function; a domain error becomes a one-line CLI error."""
    try:
        return fn(*args, **kwargs)
    except DomainError as exc:
        fail(str(exc))


def _threshold(value: str) -> tuple[str, float]:
    """``"Billing > Refund=0.4"`` as (label, threshold)."""
    label, sep, number = value.rpartition("=")
    try:
        if not sep:
            raise ValueError
        return label.strip(), float(number)
    except ValueError:
        raise click.BadParameter(f"use LABEL=THRESHOLD, e.g. 'Billing > Refund=0.4', got {value!r}") from None


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@click.group()
def streams() -> None:
    """Streams: per-dataset work queues for robots, pinned to a model with per-label thresholds."""


@streams.command("add")
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.argument("name")
@click.option("--threshold", "thresholds", multiple=True, metavar="LABEL=T", help="Repeat per label, e.g. 'A > B=0.4'.")
@click.option("--model-version", type=int, default=None, help="Pinned model version [newest].")
@click.option("--filter", "comment_filter", default=None, metavar="JSON", help="Comment filter (see README).")
@click.option("--deliver-all-filtered", is_flag=True, help="Deliver every message passing the filter (as CM does).")
@click.option("--queue", "queue", is_flag=True, help="Deliver on the stream's RabbitMQ queue instead of HTTP fetch.")
@click.option("--title", default="")
@click.option("--description", default="")
@pass_context
def streams_add(
    ctx: Context,
    dataset: str,
    name: str,
    thresholds: tuple[str, ...],
    model_version: int | None,
    comment_filter: str | None,
    deliver_all_filtered: bool,
    queue: bool,
    title: str,
    description: str,
) -> None:
    """Create the stream NAME in DATASET."""
    from commine.handlers.streams import create_stream

    try:
        parsed_filter = json.loads(comment_filter) if comment_filter else None
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"--filter is not JSON: {exc.msg}") from None
    pairs = [_threshold(t) for t in thresholds]
    stream = _call(
        create_stream,
        ctx.store,
        dataset,
        name,
        model_version=model_version,
        label_thresholds=[{"name": label, "threshold": value} for label, value in pairs],
        comment_filter=parsed_filter,
        title=title,
        description=description,
        deliver_all_filtered=deliver_all_filtered,
        delivery="queue" if queue else "fetch",
        actor=actor_name(),
    )
    click.echo(f"created stream {dataset}/{name} (id {stream['id']}) on model version {stream['model']['version']}")
    if queue:
        from commine.broker.streams import stream_queue

        click.echo(f"robots consume {stream_queue(ctx.settings.queue_prefix, stream['dataset_id'], name)}")


@streams.command("list")
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def streams_list(ctx: Context, dataset: str, as_json: bool) -> None:
    """The streams of DATASET with their model version, delivery and backlog."""
    from commine.handlers.streams import list_streams
    from commine.persistence.projections import catch_up

    catch_up(ctx.store)
    found = _call(list_streams, ctx.store, dataset)
    if as_json:
        _echo_json(found)
        return
    for s in found:
        click.echo(f"{s['name']:<24} model {s['model']['version']}  {s['delivery']:<5}  backlog {s['backlog']}")
    if not found:
        click.echo("no streams yet: commine streams add PROJECT/DATASET NAME --threshold 'LABEL=0.5'")


@streams.command("show")
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.argument("name")
@pass_context
def streams_show(ctx: Context, dataset: str, name: str) -> None:
    """The stream as JSON, with suggested thresholds from its model's validation and its exceptions."""
    from commine.handlers.streams import get_stream, list_exceptions, suggested_thresholds
    from commine.persistence.projections import catch_up

    catch_up(ctx.store)
    stream = _call(get_stream, ctx.store, dataset, name)
    stream["suggested_thresholds"] = suggested_thresholds(ctx.store, dataset, name)
    stream["exceptions"] = list_exceptions(ctx.store, dataset, name)
    _echo_json(stream)


@streams.command("threshold")
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.argument("name")
@click.argument("thresholds", nargs=-1, required=True, metavar="LABEL=T...")
@click.option("--preview", is_flag=True, help="Only say how many messages would enter or leave.")
@pass_context
def streams_threshold(ctx: Context, dataset: str, name: str, thresholds: tuple[str, ...], preview: bool) -> None:
    """Change label thresholds; applies to every message not yet delivered."""
    from commine.handlers.streams import change_threshold, preview_thresholds

    pairs = [_threshold(t) for t in thresholds]
    outlook = _call(preview_thresholds, ctx.store, dataset, name, dict(pairs))
    click.echo(
        f"{outlook['enter']} would enter, {outlook['leave']} would leave; backlog {outlook['backlog']} -> "
        f"{outlook['backlog_after']}"
    )
    if preview:
        return
    for label, value in pairs:
        changed = _call(change_threshold, ctx.store, dataset, name, label, value, actor=actor_name())
        click.echo(f"{label}: {value}" + ("" if changed else " (unchanged)"))


@streams.command("pin")
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.argument("name")
@click.argument("version", type=int)
@pass_context
def streams_pin(ctx: Context, dataset: str, name: str, version: int) -> None:
    """Pin model VERSION: messages not yet delivered are judged by it from now on."""
    from commine.handlers.streams import pin_model

    changed = _call(pin_model, ctx.store, dataset, name, version, actor=actor_name())
    click.echo(f"stream {name} pins model version {version}" + ("" if changed else " already"))


@streams.command("delete")
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask.")
@pass_context
def streams_delete(ctx: Context, dataset: str, name: str, yes: bool) -> None:
    """Delete the stream (and its RabbitMQ queues, if it delivers on one)."""
    from commine.handlers.streams import delete_stream

    if not yes:
        click.confirm(f"delete stream {dataset}/{name}?", abort=True)
    before = _call(delete_stream, ctx.store, dataset, name, actor=actor_name())
    if before["delivery"] == "queue" and not ctx.settings.embedded:
        from commine.broker.streams import delete_stream_queues, stream_queue

        delete_stream_queues(ctx.settings.amqp_url, stream_queue(ctx.settings.queue_prefix, before["dataset_id"], name))
    click.echo(f"deleted stream {dataset}/{name}")


@streams.command("fetch")
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.argument("name")
@click.option("--size", default=16, show_default=True, type=int)
@click.option("--max-filtered", default=None, type=int)
@pass_context
def streams_fetch(ctx: Context, dataset: str, name: str, size: int, max_filtered: int | None) -> None:
    """Print the next results past the cursor as JSON, without moving it.

    The results carry message text, so the fetch goes in the access log like an API read does.
    """
    from commine.handlers.audit import record_cli_read
    from commine.handlers.streams import fetch
    from commine.persistence.projections import catch_up

    catch_up(ctx.store)
    page = _call(fetch, ctx.store, dataset, name, size=size, max_filtered=max_filtered)
    detail = {"stream": name, "results": len(page["results"]), "sequence_id": page["sequence_id"]}
    record_cli_read(ctx.store, actor_name(), f"streams fetch {dataset} {name}", dataset.partition("/")[0], **detail)
    _echo_json(page)


@streams.command("advance")
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.argument("name")
@click.argument("sequence_id")
@pass_context
def streams_advance(ctx: Context, dataset: str, name: str, sequence_id: str) -> None:
    """Move the cursor past SEQUENCE_ID (one that fetch printed)."""
    from commine.handlers.streams import advance, get_stream

    _call(advance, ctx.store, dataset, name, sequence_id, actor=actor_name())
    click.echo(f"cursor at {get_stream(ctx.store, dataset, name)['cursor']}")


@streams.command("reset")
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.argument("name")
@click.argument("to_comment_created_at", metavar="ISO-TIME")
@pass_context
def streams_reset(ctx: Context, dataset: str, name: str, to_comment_created_at: str) -> None:
    """Deliver again every qualifying message first ingested at or after ISO-TIME."""
    from commine.handlers.streams import get_stream, reset

    _call(reset, ctx.store, dataset, name, to_comment_created_at, actor=actor_name())
    click.echo(f"stream {name} reset; backlog {get_stream(ctx.store, dataset, name)['backlog']}")

"""The ``commine`` command: administration, upload, worker, status, replay, demo and benchmarks."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from commine.domain.comment import parse_timestamp
from commine.domain.errors import CommentError, DomainError
from commine.scripts.context import Context, actor_name, fail, pass_context
from commine.settings import load_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--embedded",
    is_flag=True,
    envvar="COMMINE_EMBEDDED",
    help="Run on SQLite and the in-process broker (workers inside this process); no server needed.",
)
@click.pass_context
def cli(ctx: click.Context, embedded: bool) -> None:
    """commine: turn shared mailboxes, chats and surveys into labelled data and robot work queues."""
    settings = load_settings()
    if embedded:
        settings = settings.with_embedded()
    ctx.obj = Context(settings)
    ctx.call_on_close(ctx.obj.close)


@cli.group()
def projects() -> None:
    """Projects: the workspaces that own sources and datasets."""


@projects.command("add")
@click.argument("name")
@click.option("--title", default="")
@click.option("--description", default="")
@pass_context
def projects_add(ctx: Context, name: str, title: str, description: str) -> None:
    """Create the project NAME."""
    from commine.handlers.commands import create_project

    try:
        create_project(ctx.store, name, title=title, description=description, actor=actor_name())
    except DomainError as exc:
        fail(str(exc))
    click.echo(f"created project {name}")


@cli.group()
def sources() -> None:
    """Sources: the channels messages come from."""


@sources.command("add")
@click.argument("full_name", metavar="PROJECT/SOURCE")
@click.option("--title", default="")
@click.option("--description", default="")
@click.option("--language", default="en", show_default=True)
@pass_context
def sources_add(ctx: Context, full_name: str, title: str, description: str, language: str) -> None:
    """Create a source in an existing project."""
    from commine.handlers.commands import create_source

    try:
        source = create_source(
            ctx.store, full_name, title=title, description=description, language=language, actor=actor_name()
        )
    except DomainError as exc:
        fail(str(exc))
    click.echo(f"created source {full_name} (id {source.source_id})")


@sources.command("delete")
@click.argument("full_name", metavar="PROJECT/SOURCE")
@click.option("--reason", default="", help="Why, for the audit trail.")
@click.confirmation_option(prompt="Purge the source? Its messages' content is destroyed for good (crypto-shredded).")
@pass_context
def sources_delete(ctx: Context, full_name: str, reason: str) -> None:
    """Delete a source: ``SourcePurged`` destroys its data key, so no one can read its messages again."""
    from commine.handlers.commands import delete_source
    from commine.persistence.projections import catch_up

    try:
        source = delete_source(ctx.store, full_name, reason=reason, actor=actor_name())
    except DomainError as exc:
        fail(str(exc))
    catch_up(ctx.store)
    click.echo(f"purged source {full_name} (id {source.source_id}); the purge stays in the log for auditors")


@sources.command("comment")
@click.argument("full_name", metavar="PROJECT/SOURCE")
@click.argument("comment_id")
@pass_context
def sources_comment(ctx: Context, full_name: str, comment_id: str) -> None:
    """Print one stored comment as JSON; the read goes in the access log."""
    import json

    from commine.domain.names import split_full_name
    from commine.handlers.audit import record_cli_read
    from commine.persistence import readmodels
    from commine.persistence.encryption import is_purged, purged_message
    from commine.persistence.store import as_utc

    try:
        project, name = split_full_name("source", full_name)
    except DomainError as exc:
        fail(str(exc))
    source = readmodels.source_by_name(ctx.store.engine, project, name)
    comment = None
    if source is not None and not source.purged:
        comment = readmodels.get_comment(ctx.store.engine, source.source_id, comment_id)
    purged = source is not None and (source.purged or (comment is not None and is_purged(comment)))
    if source is not None:
        detail = {"comment_id": comment_id, "found": comment is not None, "purged": purged}
        record_cli_read(ctx.store, actor_name(), f"sources comment {full_name} {comment_id}", project, **detail)
    if purged:
        moment = as_utc(source.updated_at) if source.purged else None
        fail(purged_message(f"comment {comment_id!r} of source {full_name}", moment))
    if comment is None:
        fail(f"comment {comment_id!r} does not exist in {full_name}")
    click.echo(json.dumps(comment, indent=2, ensure_ascii=False))


@cli.group()
def datasets() -> None:
    """Datasets: sources grouped under one taxonomy of labels."""


@datasets.command("add")
@click.argument("full_name", metavar="PROJECT/DATASET")
@click.option("--source", "sources_", multiple=True, metavar="PROJECT/SOURCE", help="Repeat for each source.")
@click.option("--title", default="")
@click.option("--description", default="")
@click.option("--has-sentiment", is_flag=True, help="Every assigned label carries a positive or negative sentiment.")
@pass_context
def datasets_add(
    ctx: Context, full_name: str, sources_: tuple[str, ...], title: str, description: str, has_sentiment: bool
) -> None:
    """Create a dataset over one or more sources."""
    from commine.handlers.commands import create_dataset

    try:
        dataset = create_dataset(
            ctx.store,
            full_name,
            sources=list(sources_),
            title=title,
            description=description,
            has_sentiment=has_sentiment,
            actor=actor_name(),
        )
    except DomainError as exc:
        fail(str(exc))
    click.echo(f"created dataset {full_name} (id {dataset.dataset_id}) over {len(sources_)} source(s)")


@datasets.command("delete")
@click.argument("full_name", metavar="PROJECT/DATASET")
@click.option("--reason", default="", help="Why, for the audit trail.")
@click.confirmation_option(prompt="Delete the dataset with its annotations, models and streams?")
@pass_context
def datasets_delete(ctx: Context, full_name: str, reason: str) -> None:
    """Delete a dataset: its annotations, models, predictions and streams go; its sources stay."""
    from commine.handlers.commands import delete_dataset
    from commine.persistence.projections import catch_up

    try:
        dataset = delete_dataset(ctx.store, full_name, reason=reason, actor=actor_name())
    except DomainError as exc:
        fail(str(exc))
    catch_up(ctx.store)
    click.echo(f"deleted dataset {full_name} (id {dataset.dataset_id}); its sources stay")


@cli.command()
@click.option("--threads", type=int, default=None, help="Worker threads per process [COMMINE_WORKER_THREADS].")
@click.option("--processes", type=int, default=1, show_default=True, help="Worker processes to start.")
@pass_context
def worker(ctx: Context, threads: int | None, processes: int) -> None:
    """Run the actors that store what was ingested and keep the read models up to date."""
    if ctx.settings.embedded:
        fail("the embedded mode runs its workers inside each command; start no worker for it")
    from commine.workers.main import run_processes, run_worker

    if processes > 1:
        # Children starting together on a fresh database is safe: migrations take an advisory lock.
        argv = ["worker", "--processes", "1"] + (["--threads", str(threads)] if threads else [])
        sys.exit(run_processes(argv, processes))
    run_worker(ctx.app, threads=threads or ctx.settings.worker_threads)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@pass_context
def status(ctx: Context, as_json: bool) -> None:
    """Per project, source and dataset: messages, annotations, model version, stream backlogs."""
    from commine.persistence.projections import catch_up
    from commine.persistence.readmodels import status as read_status

    store = ctx.store
    catch_up(store)
    state = read_status(store.engine)
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    if not state["projects"]:
        click.echo("no projects yet: commine projects add NAME")
    for project in state["projects"]:
        click.echo(f"project {project['name']}")
        for source in project["sources"]:
            click.echo(f"  source  {source['name']:<24} {source['messages']:>9} messages")
        for dataset in project["datasets"]:
            model = dataset["model_version"] if dataset["model_version"] is not None else "none"
            click.echo(
                f"  dataset {dataset['name']:<24} {dataset['messages']:>9} messages "
                f"{dataset['annotations']:>7} annotated  model {model}"
            )
            for stream in dataset["streams"]:
                click.echo(f"    stream {stream['name']:<22} backlog {stream['backlog']}")


def parse_moment(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value, "--until")
    except CommentError as exc:
        raise click.BadParameter(exc.reason) from None


@cli.command()
@click.option("--until", "until", default=None, metavar="ISO-TIME", help="State as it was at this moment.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def replay(ctx: Context, until: str | None, as_json: bool) -> None:
    """Rebuild every read model from the log in a fresh schema and print a digest of the state.

    Without --until the digest of the rebuild is compared with the live read models; the
    command fails if they differ.
    """
    from tqdm import tqdm

    from commine.persistence import replay as replaying

    store = ctx.store
    moment = parse_moment(until)
    total = store.last_position()
    with tqdm(total=total, unit="event", desc="replay", file=sys.stderr, disable=None) as bar:
        if moment is None:
            live, rebuilt = replaying.verify(store, progress=bar.update)
        else:
            live, rebuilt = None, replaying.replay(store, until=moment, progress=bar.update)
    result: dict[str, Any] = {"until": moment.isoformat() if moment else None, **rebuilt.as_dict()}
    matches = live is None or live.total == rebuilt.total
    if live is not None:
        result["live_digest"] = live.total
        result["matches_live"] = matches
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for name, info in result["tables"].items():
            click.echo(f"{name:<16} {info['rows']:>9} rows  {info['sha256'][:16]}")
        click.echo(f"digest {rebuilt.total} at log position {rebuilt.position}")
        if live is not None:
            click.echo("rebuild equals the live state" if matches else f"MISMATCH: live digest {live.total}")
    if not matches:
        sys.exit(1)


@cli.command()
@click.option("--queue", default="ingest", show_default=True, help="Handler whose dead letters to show.")
@click.option("--limit", default=20, show_default=True)
@pass_context
def deadletters(ctx: Context, queue: str, limit: int) -> None:
    """Show messages in a handler's dead-letter queue with the reason each was rejected."""
    from commine.broker.dramatiq_broker import read_dead_letters
    from commine.broker.topology import queue_name

    if ctx.settings.embedded:
        fail("the embedded broker keeps no dead letters between commands")
    letters = read_dead_letters(ctx.settings.amqp_url, queue_name(ctx.settings.queue_prefix, queue), limit=limit)
    for letter in letters:
        click.echo(f"{letter.queue}: {letter.reason}  ({len(letter.body)} bytes)")
    click.echo(f"{len(letters)} dead letter(s) shown")


@cli.command()
@pass_context
def migrate(ctx: Context) -> None:
    """Create the database if needed and bring its schema to the newest migration."""
    store = ctx.store
    click.echo(f"schema up to date at {store.engine.url.render_as_string(hide_password=True)}")


def _register_subcommands() -> None:
    from commine.scripts import (  # noqa: F401 (bench_ml, bench_streams and bench_ui add to bench)
        admin,
        annotate,
        bench,
        bench_ml,
        bench_streams,
        bench_ui,
        demo,
        governance,
        integrations,
        keys,
        models,
        streams,
        upload,
    )

    cli.add_command(upload.upload)
    cli.add_command(annotate.annotate)
    cli.add_command(annotate.labels)
    cli.add_command(demo.demo)
    cli.add_command(bench.bench)
    cli.add_command(streams.streams)
    cli.add_command(keys.keys)
    cli.add_command(integrations.integrations)
    for command in [*models.COMMANDS, *admin.COMMANDS, *governance.COMMANDS]:
        cli.add_command(command)


_register_subcommands()


def main() -> None:
    cli(prog_name="commine")

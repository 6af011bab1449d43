"""``commine demo``: the whole pipeline in one process, on generated customer mail, no server."""

from __future__ import annotations

import contextlib
import csv
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from commine.integrations.csv_import import ColumnMapping
from commine.scripts.context import Context, actor_name, pass_context
from commine.scripts.sample_mail import generate, to_csv_rows

PROJECT, SOURCE, DATASET = "demo", "demo/support-inbox", "demo/support"


def write_csv(path: Path, count: int, seed: int, labelled: int) -> None:
    """Sample mail as a Communications Mining CSV; the first ``labelled`` rows keep their label."""
    rows = to_csv_rows(generate(count, seed=seed))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for index, row in enumerate(rows):
            writer.writerow(row if index < labelled else {**row, "label": ""})


@click.command()
@click.option("--messages", default=2000, show_default=True, help="Sample messages to generate.")
@click.option("--labelled", default=300, show_default=True, help="How many of them arrive annotated.")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo database here (default: a temporary folder, removed afterwards).",
)
@click.option("--serve", is_flag=True, help="Then serve the web UI on the trained demo dataset until Ctrl-C.")
@click.option("--port", default=8000, show_default=True, help="Port of the web UI with --serve.")
@pass_context
def demo(
    ctx: Context, messages: int, labelled: int, seed: int, home: Path | None, serve: bool = False, port: int = 8000
) -> None:
    """Run the pipeline end to end on the embedded default and print what happened."""
    from commine.bootstrap import bootstrap
    from commine.handlers.commands import create_dataset, create_project, create_source
    from commine.integrations.ingest_client import wait_for_receipts
    from commine.persistence import replay
    from commine.persistence.projections import catch_up
    from commine.persistence.readmodels import status
    from commine.scripts.upload import publish_csv

    started = time.perf_counter()
    with contextlib.ExitStack() as scratch:
        # A scratch folder only without --home: a demo that serves until it is stopped by a signal
        # never reaches the clean-up, and left an empty one behind on every run.
        folder = home or Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="commine-demo-")))
        # The transformer embedding runs at a few hundred messages a second: the demo shows the fast path.
        settings = replace(ctx.settings, home=folder, database_url=f"sqlite:///{folder / 'demo.db'}", transformer=False)
        settings = settings.with_embedded()
        app = bootstrap(settings)
        try:
            actor = actor_name()
            click.echo(f"1. store: SQLite at {folder / 'demo.db'}; broker: in-process; workers: in this process")
            create_project(app.store, PROJECT, title="Demo", actor=actor)
            source = create_source(app.store, SOURCE, title="Support inbox", actor=actor)
            create_dataset(app.store, DATASET, sources=[SOURCE], title="Support", actor=actor)
            click.echo(f"2. created project {PROJECT}, source {SOURCE} ({source.source_id}), dataset {DATASET}")

            path = folder / "support-inbox.csv"
            write_csv(path, messages, seed, labelled)
            mapping = ColumnMapping(subject="subject", sender="from", labels=("label",))
            for attempt in ("first upload", "same file again"):
                batch_ids, errors = publish_csv(app, SOURCE, path, mapping, dataset=DATASET)
                receipts = wait_for_receipts(app, batch_ids, timeout=60)
                new, unchanged = sum(r.new for r in receipts), sum(r.unchanged for r in receipts)
                updated = sum(r.updated for r in receipts)
                rejected = len(errors) + sum(r.rejected for r in receipts)
                click.echo(
                    f"3. {attempt}: {len(batch_ids)} batch(es) through the broker -> "
                    f"{new} new, {updated} updated, {unchanged} unchanged, {rejected} rejected"
                )

            catch_up(app.store)
            state = status(app.engine)["projects"][0]
            dataset = state["datasets"][0]
            click.echo(
                f"4. read models: {state['sources'][0]['messages']} messages in {SOURCE}; "
                f"{dataset['annotations']} annotated in {DATASET}"
            )
            _show_model(app)
            live, rebuilt = replay.verify(app.store)
            verdict = "equals" if live.total == rebuilt.total else "DIFFERS FROM"
            click.echo(
                f"7. replay: {app.store.last_position()} events rebuilt into a fresh schema; "
                f"digest {rebuilt.total[:16]} {verdict} the live state"
            )
            if live.total != rebuilt.total:
                raise click.ClickException("replay does not reproduce the live state")
            if serve:
                _serve(app, port)
        finally:
            app.close()
    click.echo(f"demo finished in {time.perf_counter() - started:.1f} s")


def _serve(app: Any, port: int) -> None:
    """A demo administrator with a token to sign in with, then the web UI over the demo dataset."""
    from commine.handlers.access import add_user, issue_token
    from commine.scripts.admin import run_server

    add_user(app.store, "demo-admin", admin=True, actor=actor_name())
    token = issue_token(app.store, "demo-admin", description="commine demo --serve", actor=actor_name()).token
    click.echo(f"8. web UI: open http://127.0.0.1:{port}/ and sign in with the token {token}")
    run_server(app, "127.0.0.1", port)


def _show_model(app: Any) -> None:
    """Train the model the annotations asked for, and show what it says."""
    from commine.handlers.insight import load_view, queue

    trained = app.training.run_pending() if app.training is not None else []
    if not trained:
        click.echo("5. model: nothing to train (no annotated message)")
        return
    model = trained[-1]
    rating = model.metrics.get("rating") or {}
    report = model.metrics.get("validation") or {}
    click.echo(
        f"5. model version {model.version}: trained on {model.training_size} annotated messages in "
        f"{model.metrics['train_seconds']:.1f} s, {len(model.labels)} labels; "
        f"MAP {report.get('mean_average_precision') or 0:.2f}, rating {rating.get('score', 'n/a')} "
        f"({rating.get('band', 'not validated')}); every message predicted"
    )
    view = load_view(app.store, model.dataset_id)
    for item in queue(view, "uncertain", n=2):
        best = item["predicted"][0]
        click.echo(f"6. to label next: {item['text'][:70]!r} (best guess {best['name']} {best['probability']:.2f})")

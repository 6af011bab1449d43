"""Model commands: train, trainer, dashboard, predict, validation, queue, discover, drift."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from tqdm import tqdm

from commine.domain.errors import DomainError
from commine.handlers.commands import NotFound, get_dataset
from commine.ml.active import MODES
from commine.scripts.context import Context, actor_name, fail, pass_context


def _dataset_id(ctx: Context, full_name: str) -> str:
    try:
        return get_dataset(ctx.store, full_name).dataset_id
    except (NotFound, DomainError) as exc:
        fail(str(exc))
        raise AssertionError("unreachable") from exc


def _record_read(ctx: Context, command: str, dataset: str, **detail: Any) -> None:
    """The command shows message text: it goes in the access log, for the audit trail."""
    from commine.handlers.audit import record_cli_read

    record_cli_read(ctx.store, actor_name(), command, dataset.partition("/")[0], **detail)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@click.command()
@click.argument("dataset")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the run and show its progress.")
@click.option("--inline", is_flag=True, help="Train in this process instead of on the RQ queue.")
@pass_context
def train(ctx: Context, dataset: str, wait: bool, inline: bool) -> None:
    """Train a new model version of DATASET (PROJECT/NAME) from its reviewed messages."""
    dataset_id = _dataset_id(ctx, dataset)
    if inline or ctx.settings.embedded:
        _train_inline(ctx, dataset_id)
        return
    from commine.workers.training import TrainingRequests

    requests = TrainingRequests(ctx.settings.redis_url, ctx.settings.database_url, ctx.settings.queue_prefix)
    job = requests.request(dataset_id)
    if job is None:
        click.echo("a training run for this dataset is already queued; it will include every annotation so far")
        return
    click.echo(f"queued {job.id} (run `commine trainer` to work the queue)")
    if wait:
        _follow_job(job)


def _train_inline(ctx: Context, dataset_id: str) -> None:
    from commine.handlers.training import NothingToTrain, train_dataset
    from commine.persistence import projections

    projections.catch_up(ctx.store)
    with tqdm(total=100, desc="training", unit="%") as bar:

        def progress(stage: str, fraction: float) -> None:
            bar.set_postfix_str(stage)
            bar.update(round(fraction * 100) - bar.n)

        try:
            trained = train_dataset(ctx.store, dataset_id, actor=actor_name(), progress=progress)
        except NothingToTrain as exc:
            fail(str(exc))
            return
    projections.catch_up(ctx.store)
    rating = trained.metrics.get("rating") or {}
    click.echo(
        f"model version {trained.version}: {trained.training_size} reviewed messages, {len(trained.labels)} labels, "
        f"rating {rating.get('score', 'n/a')} ({rating.get('band', 'not validated')})"
    )


def _follow_job(job: Any) -> None:
    with tqdm(total=100, desc="training", unit="%") as bar:
        while True:
            job.refresh()
            status = job.get_status()
            bar.set_postfix_str(f"{status} {job.meta.get('stage', '')}")
            bar.update(round(float(job.meta.get("progress", 0)) * 100) - bar.n)
            if status in ("finished", "failed", "canceled", "stopped"):
                break
            time.sleep(0.5)
    if status != "finished":
        fail(f"training {status}: {job.latest_result().exc_string if job.latest_result() else ''}")
    click.echo(json.dumps(job.return_value()))


@click.command()
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@pass_context
def trainer(ctx: Context, burst: bool) -> None:
    """Run a training worker: RQ on Redis, working the coalesced retraining jobs."""
    from commine.workers.training import run_trainer

    run_trainer(ctx.settings.redis_url, ctx.settings.queue_prefix, burst=burst)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9181, show_default=True)
@pass_context
def dashboard(ctx: Context, host: str, port: int) -> None:
    """Serve rq-dashboard: training jobs, their progress and failures."""
    app = dashboard_app(ctx.settings.redis_url)
    click.echo(f"rq-dashboard on http://{host}:{port}/")
    app.run(host=host, port=port)


def dashboard_app(redis_url: str) -> Any:
    """rq-dashboard's Flask app on the deployment's Redis."""
    from rq_dashboard.cli import make_flask_app

    app = make_flask_app(None, None, None, "")
    app.config["RQ_DASHBOARD_REDIS_URL"] = [redis_url]
    return app


@click.command()
@click.argument("dataset")
@click.option("--version", "version", type=int, help="Model version (default: the newest).")
@click.option("--threshold", default=0.0, show_default=True, help="Leave out labels below this probability.")
@pass_context
def predict(ctx: Context, dataset: str, version: int | None, threshold: float) -> None:
    """Predict comments read as JSON lines on stdin; one JSON line per comment on stdout."""
    from commine.domain.errors import CommentError
    from commine.handlers.insight import predict_comments

    dataset_id = _dataset_id(ctx, dataset)
    batch: list[tuple[int, Any]] = []
    for number, line in enumerate(sys.stdin, 1):
        if line.strip():
            try:
                batch.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                fail(f"line {number}: not JSON: {exc}")
        if len(batch) >= 1000:
            _predict_batch(ctx, dataset_id, batch, version, threshold, predict_comments, CommentError)
            batch = []
    _predict_batch(ctx, dataset_id, batch, version, threshold, predict_comments, CommentError)


def _predict_batch(
    ctx: Context,
    dataset_id: str,
    batch: list,
    version: int | None,
    threshold: float,
    predict_comments: Any,
    comment_error: type[Exception],
) -> None:
    if not batch:
        return
    try:
        results = predict_comments(ctx.store, dataset_id, [c for _, c in batch], version=version, threshold=threshold)
    except comment_error as exc:
        fail(f"lines {batch[0][0]}-{batch[-1][0]}: {exc}")
        return
    except LookupError as exc:
        fail(str(exc))
        return
    for result in results:
        click.echo(json.dumps(result))


@click.command()
@click.argument("dataset")
@click.option("--version", "version", type=int, help="Model version (default: the newest).")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def validation(ctx: Context, dataset: str, version: int | None, as_json: bool) -> None:
    """The model's validation: rating, factors, per-label precision, recall and average precision."""
    from commine.handlers.insight import load_view, validation_summary

    try:
        summary = validation_summary(load_view(ctx.store, _dataset_id(ctx, dataset), version))
    except LookupError as exc:
        fail(str(exc))
        return
    if as_json:
        _echo_json(summary)
        return
    _print_validation(summary)


def _print_validation(summary: dict[str, Any]) -> None:
    rating = summary.get("rating")
    report = summary.get("validation")
    click.echo(f"model version {summary['model_version']}")
    if not rating or not report:
        click.echo("  not validated: too few reviewed messages to hold some out")
        return
    click.echo(f"  rating {rating['score']} ({rating['band']}); next: {rating['next_action']}")
    for factor in rating["factors"]:
        click.echo(f"    {factor['name']:<24} {factor['score']:>3}  {'; '.join(factor['reasons'])}")
    click.echo(f"  MAP {report['mean_average_precision']:.3f}, coverage {summary['coverage']:.3f}")
    click.echo(f"  {'label':<40} {'support':>7} {'precision':>9} {'recall':>6} {'AP':>6}")
    for label in report["labels"]:
        ap = label["average_precision"]
        click.echo(
            f"  {label['name']:<40} {label['support']:>7} {label['precision']:>9.3f} {label['recall']:>6.3f} "
            f"{'n/a' if ap is None else format(ap, '.3f'):>6}"
        )


@click.command("queue")
@click.argument("dataset")
@click.option("--mode", type=click.Choice(MODES), default="shuffle", show_default=True)
@click.option("-n", "count", default=20, show_default=True)
@click.option("--label", help="The label to teach (mode teach).")
@click.option("--query", help="Words to search for (mode search).")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def queue_command(
    ctx: Context, dataset: str, mode: str, count: int, label: str | None, query: str | None, seed: int, as_json: bool
) -> None:
    """The next messages to label, chosen by an active-learning MODE (no near-duplicates in a batch)."""
    from commine.handlers.insight import load_view, queue

    try:
        picked = queue(
            load_view(ctx.store, _dataset_id(ctx, dataset)), mode, n=count, label=label, query=query, seed=seed
        )
    except (LookupError, ValueError) as exc:
        fail(str(exc))
        return
    _record_read(ctx, f"queue {dataset} --mode {mode}", dataset, shown=len(picked))
    if as_json:
        _echo_json(picked)
        return
    for item in picked:
        top = ", ".join(f"{p['name']} {p['probability']:.2f}" for p in item.get("predicted", []))
        click.echo(f"{item['uid']}  [{top}]\n    {item['text'][:160]!r}")


@click.command()
@click.argument("dataset")
@click.option("-k", "clusters", type=int, help="How many clusters (default: about sqrt(N/2), at most 30).")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def discover(ctx: Context, dataset: str, clusters: int | None, as_json: bool) -> None:
    """Clusters of unreviewed messages with their top terms and examples, to label a whole cluster at once."""
    from commine.handlers.insight import discover as find_clusters
    from commine.handlers.insight import load_view

    found = find_clusters(load_view(ctx.store, _dataset_id(ctx, dataset)), k=clusters)
    _record_read(ctx, f"discover {dataset}", dataset, clusters=len(found))
    if as_json:
        _echo_json(found)
        return
    for number, group in enumerate(found, 1):
        click.echo(f"cluster {number}: {group['size']} messages; {', '.join(group['top_terms'])}")
        for example in group["examples"][:3]:
            click.echo(f"    {example['text'][:140]!r}")


@click.command()
@click.argument("dataset")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def drift(ctx: Context, dataset: str, as_json: bool) -> None:
    """Whether messages since training are scored differently from those before (per label, and coverage)."""
    from commine.handlers.insight import drift as measure
    from commine.handlers.insight import load_view

    try:
        report = measure(load_view(ctx.store, _dataset_id(ctx, dataset)))
    except LookupError as exc:
        fail(str(exc))
        return
    if as_json or "labels" not in report:
        _echo_json(report)
        return
    flag = "SHIFTED" if report["shifted"] else "stable"
    click.echo(
        f"model version {report['model_version']}: {flag}; uncovered share "
        f"{report['uncovered_before']:.3f} -> {report['uncovered_after']:.3f}"
    )
    for label in report["labels"]:
        mark = "  <- shifted" if label["shifted"] else ""
        click.echo(f"  {label['label']:<40} PSI {label['psi']:.3f}  KS {label['ks']:.3f}{mark}")


@click.command()
@click.argument("dataset")
@click.option("--version", "version", type=int, required=True)
@pass_context
def reproduce(ctx: Context, dataset: str, version: int) -> None:
    """Train model VERSION again from the log as it stood then; fail unless the artifact is identical."""
    from commine.handlers.training import reproduce as train_again

    try:
        result = train_again(ctx.store, _dataset_id(ctx, dataset), version)
    except LookupError as exc:
        fail(str(exc))
        return
    verdict = "equals" if result.matches else "DIFFERS FROM"
    click.echo(
        f"version {version} retrained from the log up to position {result.trained_on_position}: artifact "
        f"sha256 {result.reproduced_hash[:16]} {verdict} the recorded {result.recorded_hash[:16]}"
    )
    if not result.matches:
        fail("the model version is not reproducible")


COMMANDS = [train, reproduce, trainer, dashboard, predict, validation, queue_command, discover, drift]

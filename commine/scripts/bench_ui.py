"""``commine bench ui``: the web UI's page latency over a large dataset (issue 7: under 300 ms a page).

One run on a scratch PostgreSQL database, deleted at the end:

1. **Seed.** ``--messages`` comments through the real ingest handler (as ``bench streams`` does),
   ``--labels`` labels defined, ``--reviewed`` messages annotated through the annotation handler,
   and a model version registered with a real validation report and rating (``ml.validation`` over
   synthetic held-out scores) and synthetic predictions for every message (``PredictionsRecorded``).
   No model is trained: the bench measures the pages, not fastText; but every message's embedding is
   computed and stored, as training does in a deployment (``embed_s``).
2. **Cold start.** ``commine serve`` in a subprocess, which starts preparing the dataset's view on a
   thread; as soon as it answers, signed in through the sign-in form, one visit of every page
   (``first``: its status, 202 while the page is "being prepared", and its time), then each page
   reloaded until it is ready (``ready_s``: from the server's start until the last page is ready).
   The pages include the Audit page's state of the dataset at a moment halfway through its history.
3. **Warm.** ``--requests`` timed requests per page; p50 and p95 per page.

The last line printed is a one-line JSON summary with the target's verdict.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import httpx
import numpy as np
from tqdm import tqdm

from commine.scripts.bench import bench, machine
from commine.scripts.bench_streams import (
    ACTOR,
    DATASET,
    PROJECT,
    SOURCES,
    World,
    analyze,
    cleanup,
    free_port,
    label_names,
    load_average,
    open_world,
    register_model,
    seed_messages,
    seed_predictions,
    start_server,
    synthetic_scores,
)
from commine.scripts.context import Context, pass_context

TARGET_MS = 300.0


def taxonomy(count: int) -> list[str]:
    """``count`` labels in all: areas of topics (``Area 03 > Topic 07``) and the areas themselves, which
    a dataset defines as the topics' ancestors (200 labels: 10 areas of 19 topics)."""
    areas = max(1, count // 20)
    leaves = label_names(areas, max(1, count // areas - 1))
    return sorted({*leaves, *(name.split(" > ")[0] for name in leaves)})[:count]


def define_labels(world: World) -> None:
    from commine.handlers.labels import define_label

    for name in tqdm([n for n in world.labels if " > " in n], desc="labels", file=sys.stderr, disable=None):
        define_label(world.store, DATASET, name, actor=ACTOR)


def reviewed_truth(world: World, version: int, count: int) -> np.ndarray:
    """The bench's "reviews": per message, the label its synthetic prediction favours (as seeded)."""
    scores = synthetic_scores(version * 1_000_003, min(20_000, len(world.uids)), len(world.labels))[:count]
    return scores.argmax(axis=1)


def annotate_some(world: World, version: int, count: int) -> np.ndarray:
    from commine.handlers.labels import AnnotationRequest, annotate
    from commine.persistence.projections import catch_up

    best = reviewed_truth(world, version, count)
    requests = []
    for i, j in enumerate(best):
        source_id, _, comment_id = world.uids[i].partition(".")
        source = f"{PROJECT}/inbox{world.source_ids.index(source_id)}"
        requests.append(AnnotationRequest(source=source, comment_id=comment_id, labels=(world.labels[j],)))
    for start in tqdm(range(0, len(requests), 500), desc="annotate", file=sys.stderr, disable=None):
        annotate(world.store, DATASET, requests[start : start + 500], actor=ACTOR)
    catch_up(world.store)
    return best


def model_metrics(world: World, version: int, best: np.ndarray) -> dict[str, Any]:
    """A real validation report and rating over synthetic held-out scores (a fifth of the reviews)."""
    from commine.ml import validation

    held = max(1, len(best) // 5)
    scores = synthetic_scores(version * 1_000_003, min(20_000, len(world.uids)), len(world.labels))[:held]
    truth = np.zeros_like(scores, dtype=bool)
    truth[np.arange(held), best[:held]] = True
    rng = np.random.default_rng(7)
    noisy = np.clip(scores + rng.normal(0, 0.15, scores.shape), 0, 1)
    report = validation.validate(world.labels, noisy, truth)
    thresholds = validation.preset_thresholds(report, "balanced")
    coverage = validation.coverage(noisy, thresholds)
    balance = validation.balance(rng.normal(size=(held, 16)), rng.normal(size=(held * 4, 16)), random_share=0.5)
    examples = {name: int((best == j).sum()) for j, name in enumerate(world.labels)}
    rating = validation.rating(report, coverage, balance, examples)
    return {
        "validation": report.to_dict(),
        "coverage": coverage,
        "balance": balance.to_dict(),
        "rating": rating.to_dict(),
        "examples": examples,
        "held_out": held,
        "train_seconds": 0.0,
    }


def admin_token(world: World) -> str:
    from commine.handlers.access import add_user, issue_token
    from commine.persistence.projections import catch_up

    add_user(world.store, "trainer", admin=True, actor=ACTOR)
    token = issue_token(world.store, "trainer", actor=ACTOR).token
    catch_up(world.store)
    return token


def pages(world: World) -> dict[str, Any]:
    """Each page the bench measures: a path, or a function of the request number giving one."""
    base = f"/d/{DATASET}"
    label = world.labels[0]
    return {
        "projects": "/",
        "overview": base,
        "messages": base + "/messages",
        "message": lambda k: f"{base}/m/{world.uids[(k * 7919) % len(world.uids)]}",
        "explore_shuffle": base + "/explore",
        "explore_teach": f"{base}/explore?queue_name=teach&label={label}",
        "explore_low_confidence": base + "/explore?queue_name=low-confidence",
        "discover": base + "/discover",
        "discover_cluster": base + "/discover?cluster=0",
        "refine_check": base + "/refine?mode=check",
        "refine_missed": base + "/refine?mode=missed",
        "validation": base + "/validation",
        "validation_label": f"{base}/validation?sort=average_precision&desc=true&label={world.labels[-1]}",
        "streams": base + "/streams",
        "reports": f"{base}/reports?label={label}",
        "audit": base + "/audit",
    }


def _get(client: httpx.Client, name: str, path: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    answer = client.get(path)
    ms = (time.perf_counter() - started) * 1000
    if answer.status_code not in (200, 202):
        raise click.ClickException(f"{name}: {path} answered {answer.status_code}: {answer.text[:300]}")
    return answer, ms


def _is_ready(answer: httpx.Response) -> bool:
    return answer.status_code == 200 and 'id="state-preparing"' not in answer.text


def cold(client: httpx.Client, paths: dict[str, str], started: float, timeout: float = 1800) -> dict[str, Any]:
    """Every page visited once right after the server's start, then reloaded until ready (as the page does)."""
    first = {}
    for name, path in paths.items():
        answer, ms = _get(client, name, path)
        first[name] = {"status": answer.status_code, "ms": round(ms, 1)}
    waiting = dict(paths)
    deadline = time.monotonic() + timeout
    while waiting:
        if time.monotonic() > deadline:
            raise click.ClickException(f"not ready after {timeout:.0f} s: {', '.join(waiting)}")
        for name, path in list(waiting.items()):
            if _is_ready(_get(client, name, path)[0]):
                del waiting[name]
        time.sleep(0.5)
    return {"first": first, "ready_s": round(time.monotonic() - started, 1)}


def warm(client: httpx.Client, world: World, paths: dict[str, Any], requests: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, target in tqdm(paths.items(), desc="pages", file=sys.stderr, disable=None):
        times = []
        for k in range(1, requests + 1):
            path = target if isinstance(target, str) else target(k)
            answer, ms = _get(client, name, path)
            if not _is_ready(answer):
                raise click.ClickException(f"{name}: {path} is being prepared again")
            times.append(ms)
        out[name] = {
            "p50_ms": round(float(np.percentile(times, 50)), 1),
            "p95_ms": round(float(np.percentile(times, 95)), 1),
            "kb": round(len(answer.content) / 1024, 1),
        }
    out["stream_preview"] = _preview(client, world, requests)
    return out


def measure(base: str, token: str, world: World, requests: int, started: float, moment: str) -> dict[str, Any]:
    paths = {**pages(world), "audit_state": f"/d/{DATASET}/audit?at={moment}"}
    with httpx.Client(base_url=base, timeout=600, follow_redirects=False) as client:
        signed = client.post("/login", data={"token": token, "next": "/"})
        if signed.status_code != 303:
            raise click.ClickException(f"sign-in failed: {signed.status_code}")
        fixed = {name: target if isinstance(target, str) else target(0) for name, target in paths.items()}
        return {"cold": cold(client, fixed, started), "pages": warm(client, world, paths, requests)}


def store_embeddings(world: World) -> None:
    """Every message's embedding computed and stored, as training stores them in a deployment."""
    from commine.handlers.training import embeddings, snapshot

    data = snapshot(world.store, world.dataset_id)
    with world.store.engine.begin() as conn:
        embeddings(conn, data.messages, data.texts, whole_dataset=True)


def _preview(client: httpx.Client, world: World, requests: int) -> dict[str, float]:
    """The stream editor's threshold preview (a JSON action, called as the slider moves)."""
    times = []
    for k in range(requests + 1):
        body = {"thresholds": {world.labels[j]: 0.3 + 0.05 * (k % 10) for j in range(10)}, "label": world.labels[0]}
        started = time.perf_counter()
        answer = client.post(f"/ui/d/{DATASET}/streams/preview", json=body, headers={"X-Commine-UI": "1"})
        if answer.status_code != 200:
            raise click.ClickException(f"preview answered {answer.status_code}: {answer.text[:300]}")
        if k:
            times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(float(np.percentile(times, 50)), 1), "p95_ms": round(float(np.percentile(times, 95)), 1)}


@bench.command("ui")
@click.option("--messages", default=100_000, show_default=True, help="Messages in the dataset.")
@click.option("--labels", "label_count", default=200, show_default=True, help="Labels of the dataset.")
@click.option("--reviewed", default=2000, show_default=True, help="Annotated messages.")
@click.option("--requests", default=10, show_default=True, help="Timed requests per page.")
@pass_context
def bench_ui(ctx: Context, messages: int, label_count: int, reviewed: int, requests: int) -> None:
    """Latency of every page of the web UI (p50, p95) on a dataset of MESSAGES messages and LABELS labels."""
    settings = ctx.settings
    if settings.embedded:
        raise click.ClickException("bench ui measures the real services; run it without --embedded")
    began = time.perf_counter()
    world = open_world(settings)
    summary: dict[str, Any] = {"benchmark": "ui", "messages": messages, "labels": label_count, "sources": SOURCES}
    server = None
    try:
        world.labels = taxonomy(label_count)
        started = time.perf_counter()
        seed_messages(world, messages)
        halfway = datetime.now(UTC)
        define_labels(world)
        best = annotate_some(world, 1, min(reviewed, messages))
        version = register_model(world, model_metrics(world, 1, best), len(best))
        seed_predictions(world, version, messages)
        analyze(world)
        summary["seed_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        store_embeddings(world)
        summary["embed_s"] = round(time.perf_counter() - started, 1)
        token = admin_token(world)
        port = free_port()
        summary["load_before"] = load_average()
        started = time.monotonic()
        server = start_server(world, port)
        moment = (halfway + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
        summary.update(measure(f"http://127.0.0.1:{port}", token, world, requests, started, moment))
        summary["load_after"] = load_average()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        cleanup(world, [])
    worst = max(v["p95_ms"] for v in summary["pages"].values())
    first = max(v["ms"] for v in summary["cold"]["first"].values())
    summary["worst_p95_ms"] = worst
    summary["worst_first_ms"] = first
    summary["target_met"] = worst < TARGET_MS and first < TARGET_MS
    summary["total_s"] = round(time.perf_counter() - began, 1)
    summary["machine"] = machine()
    click.echo(json.dumps(summary))

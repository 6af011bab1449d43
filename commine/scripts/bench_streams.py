"""``commine bench streams``: stream routing throughput and HTTP fetch latency over a large store (issue 4).

One run, on a scratch database and a scratch queue prefix, both deleted at the end:

1. **Seed.** ``--messages`` comments through the real ingest handler (``handle_ingest``, batches
   of 4,096, no broker in between) and the projections; then predictions for all of them under
   model version 1 (``PredictionsRecorded`` events as the predictor writes them, synthetic
   probabilities from a seeded numpy RNG). No stream pins version 1: that is the store's bulk.
2. **Routing.** ``--streams`` queue-delivered streams of ``--labels`` labels each pin version 2.
   Version 2's predictions for ``--route`` messages are appended in windows (untimed: that is
   the predictor's work), and after each window the timed part runs what a stream worker runs:
   the projections catch up (each message evaluated against every stream, entries written) and
   ``route_streams`` publishes the qualifying ones onto the quorum queues with publisher
   confirms and records ``StreamAdvanced``. Ceilings from the same run: the bare numpy
   evaluation of the same probabilities against the same thresholds, and a bare confirmed
   publisher onto a quorum queue.
3. **Fetch.** ``--robots`` fetch-delivered streams over version 2 (created through the service
   layer, timed), ``commine serve`` in a subprocess, and one robot per stream doing
   ``fetch(size=--batch)`` + ``advance`` over HTTP with a bearer token; p50 / p99 of fetch.
   Before them, the same loop by one robot alone on a stream of its own (``one_robot``): what a
   round costs without contention, the baseline from the same run that the robots' figures
   are read against.

The last line printed is a one-line JSON summary with the targets' verdicts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import httpx
import numpy as np
import pika
from numpy.typing import NDArray
from tqdm import tqdm

from commine.scripts.bench import WORDS, _scratch_database, bench, machine
from commine.scripts.context import Context, pass_context

PROJECT, DATASET, ACTOR = "bench", "bench/support", "bench"
#: Sources the messages are spread over (a dataset holds up to 20).
SOURCES = 4
#: Comments per ingest batch, and messages per routing window.
INGEST_BATCH = 4096
ROUTE_WINDOW = 5000
#: Targets of issue 4.
TARGET_ROUTING = 20_000
TARGET_FETCH_P99_MS = 50.0


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass
class World:
    """The bench's scratch store and what it created in it."""

    settings: Any
    store: Any
    url: str
    prefix: str
    dataset_id: str = ""
    source_ids: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    uids: list[str] = field(default_factory=list)


# --- seeding -------------------------------------------------------------------------------------------------------


def label_names(areas: int, per_area: int) -> list[str]:
    """``areas`` groups of ``per_area`` labels (``Area 03 > Topic 07``): one stream per area."""
    return [f"Area {a:02d} > Topic {j:02d}" for a in range(areas) for j in range(per_area)]


def make_comment(i: int, rng: np.random.Generator) -> dict[str, Any]:
    """A comment of about 500 bytes, one per second from 2026-01-01."""
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i)
    words = " ".join(WORDS[k] for k in rng.integers(0, len(WORDS), 60))
    return {
        "id": f"c{i:08d}",
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "messages": [{"from": f"customer{i % 9973}@example.com", "body": {"text": words}}],
        "user_properties": {"string:Region": ["north", "south", "east", "west"][i % 4]},
    }


def open_world(settings: Any) -> World:
    """A scratch database with the project, the sources and the dataset."""
    from commine.handlers.commands import create_dataset, create_project, create_source
    from commine.persistence.engine import ensure_database, make_engine, migrate
    from commine.persistence.projections import catch_up
    from commine.persistence.store import EventStore

    url = _scratch_database(settings.database_url, "streams")
    ensure_database(url)
    engine = make_engine(url)
    migrate(engine)
    store = EventStore(engine)
    world = World(settings, store, url, f"bench{uuid.uuid4().hex[:8]}")
    create_project(store, PROJECT, actor=ACTOR)
    sources = [f"{PROJECT}/inbox{k}" for k in range(SOURCES)]
    world.source_ids = [create_source(store, name, actor=ACTOR).source_id for name in sources]
    world.dataset_id = create_dataset(store, DATASET, sources=sources, actor=ACTOR).dataset_id
    catch_up(store)
    return world


def seed_messages(world: World, count: int) -> None:
    """``count`` comments through the ingest handler, round robin over the sources; projected."""
    from commine.handlers.ingest import handle_ingest
    from commine.integrations.ingest_client import make_body
    from commine.persistence.projections import catch_up

    rng = np.random.default_rng(1)
    with tqdm(total=count, desc="seed messages", unit="msg", file=sys.stderr, disable=None) as bar:
        for start in range(0, count, INGEST_BATCH):
            k = (start // INGEST_BATCH) % SOURCES
            comments = [make_comment(i, rng) for i in range(start, min(count, start + INGEST_BATCH))]
            handle_ingest(world.store, make_body(f"{PROJECT}/inbox{k}", comments, actor="integration:bench"))
            world.uids.extend(f"{world.source_ids[k]}.{c['id']}" for c in comments)
            bar.update(len(comments))
    catch_up(world.store, batch_size=20_000)


def analyze(world: World) -> None:
    """Fresh planner statistics after a bulk load, as autovacuum gives them a minute later: the
    bench measures the steady state, not the minute after a million rows arrived."""
    import sqlalchemy as sa

    with world.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE"))


def register_model(world: World, metrics: dict[str, Any] | None = None, training_size: int = 0) -> int:
    """A model version over the bench's labels (no artifact: the bench records its predictions)."""
    from commine.domain.model import ModelVersions, models_aggregate_id
    from commine.handlers.commands import run
    from commine.persistence.projections import catch_up

    registry = run(
        world.store,
        ModelVersions,
        models_aggregate_id(world.dataset_id),
        lambda m: m.register(
            labels=world.labels,
            hyperparameters={},
            training_size=training_size,
            metrics=metrics or {},
            artifact_hash=uuid.uuid4().hex * 2,
            trained_on_position=0,
            actor=ACTOR,
        ),
    )
    catch_up(world.store)
    return registry.latest


def synthetic_scores(seed: int, count: int, labels: int) -> NDArray[np.float64]:
    """Probabilities shaped like a one-vs-rest model's: one likely label per message (Beta(5, 2)),
    four unlikely ones (uniform 0.001..0.3), the rest below what ``PredictionsRecorded`` keeps."""
    rng = np.random.default_rng(seed)
    scores = np.zeros((count, labels))
    rows = np.arange(count)
    scores[rows, rng.integers(0, labels, count)] = rng.beta(5, 2, count)
    for _ in range(4):
        scores[rows, rng.integers(0, labels, count)] = rng.uniform(0.001, 0.3, count)
    return scores


def record_predictions(world: World, version: int, start: int, end: int) -> None:
    """Version ``version``'s predictions of messages ``start:end``, as the predictor records them."""
    from commine.handlers.training import prediction_events

    scores = synthetic_scores(version * 1_000_003 + start, end - start, len(world.labels))
    events = prediction_events(world.dataset_id, version, world.uids[start:end], world.labels, scores, ACTOR)
    world.store.append(events)


def seed_predictions(world: World, version: int, count: int) -> None:
    from commine.persistence.projections import catch_up

    with tqdm(total=count, desc=f"seed predictions v{version}", unit="msg", file=sys.stderr, disable=None) as bar:
        for start in range(0, count, 20_000):
            end = min(count, start + 20_000)
            record_predictions(world, version, start, end)
            catch_up(world.store, batch_size=500)
            bar.update(end - start)


def stream_thresholds(world: World, area: int, per_area: int, seed: int) -> list[dict[str, Any]]:
    """The area's labels, each with a threshold from 0.5 to 0.9 (as a precision preset would give)."""
    rng = np.random.default_rng(seed)
    names = world.labels[area * per_area : (area + 1) * per_area]
    return [{"name": name, "threshold": round(float(rng.uniform(0.5, 0.9)), 2)} for name in names]


def create_streams(
    world: World, names: list[str], version: int, per_area: int, delivery: str, *, deliver_all: bool = False
) -> None:
    from commine.handlers import streams

    areas = len(world.labels) // per_area
    for k, name in enumerate(tqdm(names, desc=f"create {delivery} streams", file=sys.stderr, disable=None)):
        thresholds = stream_thresholds(world, k % areas, per_area, seed=k)
        streams.create_stream(
            world.store,
            DATASET,
            name,
            model_version=version,
            label_thresholds=thresholds,
            deliver_all_filtered=deliver_all,
            delivery=delivery,
            actor=ACTOR,
        )


# --- routing -------------------------------------------------------------------------------------------------------


def run_routing(world: World, version: int, count: int) -> dict[str, Any]:
    """Messages per second through the stream worker's path: projection (evaluation, entries) + router."""
    from commine.broker.streams import StreamPublisher
    from commine.handlers.streams import route_streams
    from commine.persistence.projections import catch_up

    publisher = StreamPublisher(world.settings.amqp_url, world.prefix)
    evaluated = routed = 0.0
    published = 0
    try:
        with tqdm(total=count, desc="routing", unit="msg", file=sys.stderr, disable=None) as bar:
            for start in range(0, count, ROUTE_WINDOW):
                end = min(count, start + ROUTE_WINDOW)
                record_predictions(world, version, start, end)  # the predictor's work: untimed
                t0 = time.perf_counter()
                catch_up(world.store)
                t1 = time.perf_counter()
                published += route_streams(world.store, publisher)
                t2 = time.perf_counter()
                evaluated += t1 - t0
                routed += t2 - t1
                bar.update(end - start)
    finally:
        publisher.close()
    return {
        "messages": count,
        "published": published,
        "projection_s": round(evaluated, 2),
        "router_s": round(routed, 2),
        "per_s": round(count / (evaluated + routed)),
        "projection_per_s": round(count / evaluated),
        "router_per_s": round(count / routed),
    }


def evaluation_ceiling(world: World, streams: int, per_area: int, count: int) -> float:
    """Messages per second of bare numpy: the same probabilities against every stream's thresholds."""
    scores = synthetic_scores(2 * 1_000_003, count, len(world.labels))
    thresholds = np.full((streams, len(world.labels)), np.inf)
    areas = len(world.labels) // per_area
    for k in range(streams):
        for item in stream_thresholds(world, k % areas, per_area, seed=k):
            thresholds[k, world.labels.index(item["name"])] = item["threshold"]
    started = time.perf_counter()
    qualifying = 0
    for k in range(streams):
        qualifying += int((scores >= thresholds[k]).any(axis=1).sum())
    elapsed = time.perf_counter() - started
    return count / elapsed


def publish_ceiling(amqp_url: str, prefix: str, count: int, body: bytes) -> float:
    """Messages per second of a bare publisher onto one quorum queue, confirms awaited per 1,000.

    The product publisher's own technique on pika's underlying channel, without the database.
    """
    from commine.broker.streams import ConfirmedPublisher

    queue = f"{prefix}.ceiling"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        publisher = ConfirmedPublisher(connection)
        properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")
        started = time.perf_counter()
        for start in range(0, count, 1000):
            publisher.publish_all([(queue, body, properties)] * min(1000, count - start))
        elapsed = time.perf_counter() - started
        channel.queue_delete(queue)
    finally:
        connection.close()
    return count / elapsed


# --- fetch over HTTP -----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def robot_token(world: World) -> str:
    """A user allowed to consume the bench project's streams, and a bearer token for it."""
    from commine.domain.access import STREAMS_CONSUME
    from commine.handlers.access import add_user, grant, issue_token
    from commine.persistence.projections import catch_up

    add_user(world.store, "robot", actor=ACTOR)
    grant(world.store, "robot", PROJECT, [STREAMS_CONSUME], actor=ACTOR)
    token = issue_token(world.store, "robot", actor=ACTOR).token
    catch_up(world.store)
    return token


def start_server(world: World, port: int, workers: int) -> subprocess.Popen[bytes]:
    """``commine serve`` on the scratch database; the web UI's warm-up off (the API is measured)."""
    env = {
        **os.environ,
        "COMMINE_DATABASE_URL": world.url,
        "COMMINE_QUEUE_PREFIX": world.prefix,
        "COMMINE_UI_WARM": "off",
    }
    env.pop("COMMINE_EMBEDDED", None)
    command = [sys.executable, "-m", "commine", "serve", "--port", str(port), "--workers", str(workers)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
            return server
        except httpx.TransportError:
            if server.poll() is not None:
                raise click.ClickException("commine serve exited at start") from None
            time.sleep(0.2)
    server.terminate()
    raise click.ClickException("commine serve did not answer within 60 s")


def robot(
    base: str, token: str, stream: str, batch: int, requests: int, out: list[float], got: list[int], bar: Any
) -> None:
    """fetch + advance ``requests`` times; each fetch's latency in ms goes to ``out``, its result count to ``got``."""
    url = f"{base}/api/v1/datasets/{DATASET}/streams/{stream}"
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for _ in range(requests):
            started = time.perf_counter()
            answer = client.post(f"{url}/fetch", json={"size": batch})
            out.append((time.perf_counter() - started) * 1000)
            answer.raise_for_status()
            body = answer.json()
            got.append(len(body["results"]))
            if body["results"] or not body["is_end_sequence"]:
                client.post(f"{url}/advance", json={"sequence_id": body["sequence_id"]}).raise_for_status()
            bar.update(1)


def run_robots(
    base: str, token: str, names: list[str], batch: int, requests: int, desc: str
) -> tuple[NDArray[np.float64], list[int], float]:
    """``robot`` on each stream at once, one thread each: every fetch's latency, result counts, seconds taken."""
    latencies: list[list[float]] = [[] for _ in names]
    counts: list[int] = []
    with tqdm(total=len(names) * requests, desc=desc, unit="req", file=sys.stderr, disable=None) as bar:
        threads = [
            threading.Thread(target=robot, args=(base, token, name, batch, requests, latencies[i], counts, bar))
            for i, name in enumerate(names)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    every = np.array([x for robot_latencies in latencies for x in robot_latencies])
    if len(every) < len(names) * requests:
        raise click.ClickException(f"only {len(every)} of {len(names) * requests} fetches answered")
    return every, counts, elapsed


def run_fetch(world: World, names: list[str], solo: str, batch: int, requests: int, workers: int) -> dict[str, Any]:
    """The robots' fetch latency, and first the same loop with one robot alone on ``solo``: the
    time a round takes without contention, the baseline the concurrent figures are read against."""
    token = robot_token(world)
    port = free_port()
    server = start_server(world, port, workers)
    base = f"http://127.0.0.1:{port}"
    try:
        alone, _, alone_s = run_robots(base, token, [solo], batch, requests, "fetch, one robot")
        every, counts, elapsed = run_robots(base, token, names, batch, requests, "fetch")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "requests": len(every),
        "p50_ms": round(float(np.percentile(every, 50)), 1),
        "p99_ms": round(float(np.percentile(every, 99)), 1),
        "max_ms": round(float(every.max()), 1),
        "fetches_per_s": round(len(every) / elapsed),
        "results_per_fetch": round(sum(counts) / max(len(counts), 1), 1),
        "server_processes": workers,
        "one_robot": {
            "p50_ms": round(float(np.percentile(alone, 50)), 1),
            "p99_ms": round(float(np.percentile(alone, 99)), 1),
            "fetches_per_s": round(len(alone) / alone_s, 1),
        },
    }


# --- the command ---------------------------------------------------------------------------------------------------


def cleanup(world: World, queues: list[str]) -> None:
    """Drop the scratch database, the stream queues and the server's topology and training keys."""
    from commine.broker.streams import delete_stream_topology
    from commine.broker.topology import delete_topology
    from commine.persistence.engine import drop_database

    amqp = world.settings.amqp_url
    world.store.engine.dispose()
    delete_stream_topology(amqp, world.prefix, queues)
    delete_topology(amqp, world.prefix)
    delete_training_keys(world.settings.redis_url, world.prefix)
    drop_database(world.url)


def delete_training_keys(redis_url: str, prefix: str) -> None:
    """What the server may have left on Redis under the bench's prefix (its RQ training queue)."""
    import redis
    import rq

    from commine.workers.training import queue_name

    connection = redis.Redis.from_url(redis_url)
    rq.Queue(queue_name(prefix), connection=connection).delete(delete_jobs=True)
    for key in connection.scan_iter(f"{prefix}:*"):
        connection.delete(key)


@bench.command("streams")
@click.option("--messages", default=1_000_000, show_default=True, help="Messages in the store.")
@click.option("--route", default=100_000, show_default=True, help="Messages routed (timed) of those.")
@click.option("--streams", "stream_count", default=10, show_default=True, help="Queue streams routed to.")
@click.option("--labels", default=20, show_default=True, help="Labels per stream.")
@click.option("--robots", default=8, show_default=True, help="Concurrent HTTP robots, one fetch stream each.")
@click.option("--batch", default=64, show_default=True, help="fetch size.")
@click.option("--requests", default=250, show_default=True, help="fetch + advance rounds per robot.")
@click.option("--server-workers", default=1, show_default=True, help="Processes of the server the robots call.")
@pass_context
def bench_streams(
    ctx: Context,
    messages: int,
    route: int,
    stream_count: int,
    labels: int,
    robots: int,
    batch: int,
    requests: int,
    server_workers: int,
) -> None:
    """Routing throughput (messages/s against N streams) and HTTP fetch latency, over a large store."""
    settings = ctx.settings
    if settings.embedded:
        raise click.ClickException("bench streams measures the real services; run it without --embedded")
    route = min(route, messages)
    began = time.perf_counter()
    world = open_world(settings)
    queue_names = [f"route{k:02d}" for k in range(stream_count)]
    summary: dict[str, Any] = {"benchmark": "streams", "messages": messages, "load_before": load_average()}
    try:
        world.labels = label_names(max(stream_count, robots), labels)
        started = time.perf_counter()
        seed_messages(world, messages)
        summary["seed_messages_s"] = round(time.perf_counter() - started, 1)
        base, pinned = register_model(world), register_model(world)
        started = time.perf_counter()
        seed_predictions(world, base, messages)
        summary["seed_predictions_s"] = round(time.perf_counter() - started, 1)
        analyze(world)
        create_streams(world, queue_names, pinned, labels, "queue")
        summary["routing"] = run_routing(world, pinned, route)
        summary["load_routing"] = load_average()
        summary["ceiling_evaluation_per_s"] = round(evaluation_ceiling(world, stream_count, labels, route))
        body = json.dumps({"comment": make_comment(0, np.random.default_rng(0)), "sequence_id": "1"}).encode()
        published = summary["routing"]["published"]
        ceiling = publish_ceiling(settings.amqp_url, world.prefix, 20_000, body)
        summary["ceiling_publish_per_s"] = round(ceiling)
        # The router's ceiling: publishing this run's share of qualifying messages, and nothing else.
        summary["ceiling_routing_per_s"] = round(ceiling * route / max(published, 1))
        summary["ratio"] = round(summary["routing"]["per_s"] / summary["ceiling_routing_per_s"], 3)
        fetch_names = [f"robot{k:02d}" for k in range(robots)]
        started = time.perf_counter()
        # Delivering every message (the reference's behaviour) keeps each fetch a full batch for
        # as long as the bench runs: with thresholds alone, about 5,000 of the 100,000 qualify.
        create_streams(world, [*fetch_names, "alone"], pinned, labels, "fetch", deliver_all=True)
        summary["create_fetch_stream_s"] = round((time.perf_counter() - started) / (robots + 1), 2)
        analyze(world)
        summary["fetch"] = run_fetch(world, fetch_names, "alone", batch, requests, server_workers)
        summary["load_fetch"] = load_average()
    finally:
        cleanup(world, [stream_queue(world.prefix, world.dataset_id, name) for name in queue_names])
    summary["routing_target_met"] = summary["routing"]["per_s"] >= TARGET_ROUTING
    summary["fetch_target_met"] = summary["fetch"]["p99_ms"] < TARGET_FETCH_P99_MS
    summary["total_s"] = round(time.perf_counter() - began, 1)
    summary["machine"] = machine()
    click.echo(json.dumps(summary))


def stream_queue(prefix: str, dataset_id: str, name: str) -> str:
    from commine.broker.streams import stream_queue as queue_of

    return queue_of(prefix, dataset_id, name)

"""``commine bench``: benchmarks that print a one-line JSON summary last.

Each benchmark measures a ceiling in the same run, because this machine is shared and noisy:
only the ratio of two figures taken minutes apart on the same machine means much.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from statistics import median
from typing import Any

import click
import pika
import sqlalchemy as sa
from tqdm import tqdm

from commine.scripts.context import Context, pass_context

WORDS = [
    "account",
    "refund",
    "payment",
    "card",
    "transfer",
    "policy",
    "claim",
    "invoice",
    "charge",
    "delivery",
    "order",
    "cancel",
    "update",
    "address",
    "statement",
    "balance",
    "fee",
    "interest",
    "premium",
    "renewal",
    "document",
    "request",
    "confirm",
    "urgent",
    "please",
    "thanks",
    "number",
    "reference",
    "customer",
    "support",
    "issue",
    "problem",
    "received",
    "missing",
    "wrong",
    "twice",
    "yesterday",
    "today",
    "week",
    "month",
]


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def make_comments(count: int, *, seed: int = 0, size: int = 1000) -> list[dict[str, Any]]:
    """``count`` comments of about ``size`` bytes of JSON each, deterministic for a seed."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    comments = []
    for i in range(count):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < size - 250:
            words.append(rng.choice(WORDS))
        comments.append(
            {
                "id": f"bench-{i:08d}",
                "timestamp": (start + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
                "messages": [
                    {
                        "from": f"customer{rng.randrange(10_000)}@example.com",
                        "to": ["support@example.com"],
                        "subject": {"text": " ".join(rng.choice(WORDS) for _ in range(6))},
                        "body": {"text": " ".join(words)},
                    }
                ],
                "user_properties": {"string:Region": rng.choice(["north", "south", "east", "west"])},
            }
        )
    return comments


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# --- the ceiling: a bare pika publisher with confirms and bare consumers doing batched inserts ---


def _ceiling_consumer(amqp_url: str, queue: str, database_url: str, stop_after: int, stored: Any) -> None:
    """Consume batches, insert their rows into ``events`` in one transaction each, then ack.

    ``stored`` is a shared counter the consumer adds each committed batch to, so the run can see
    its progress without polling the table (which would load the very database being measured).
    """
    from commine.persistence.engine import make_engine
    from commine.persistence.schema import events

    engine = make_engine(database_url)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=4)
    done = 0
    for method, _properties, body in channel.consume(queue, inactivity_timeout=30):
        if method is None:
            break
        batch = json.loads(body)
        now = datetime.now(UTC)
        rows = [
            {
                "position": batch["first"] + i,
                "event_id": uuid.uuid4(),
                "aggregate_id": f"message:{batch['source_id']}/{c['id']}",
                "aggregate_version": 1,
                "type": "MessageIngested",
                "schema_version": 1,
                "occurred_at": now,
                "recorded_at": now,
                "actor": "bench",
                "payload": {"comment": c},
            }
            for i, c in enumerate(batch["comments"])
        ]
        with engine.begin() as conn:
            conn.execute(events.insert(), rows)
        channel.basic_ack(method.delivery_tag)
        with stored.get_lock():
            stored.value += len(rows)
        done += len(rows)
        if done >= stop_after:
            break
    connection.close()
    engine.dispose()


def _wait(label: str, total: int, current: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with tqdm(total=total, desc=label, unit="msg", file=sys.stderr, disable=None) as bar:
        while True:
            value = current()
            bar.update(value - bar.n)
            if value >= total:
                return
            if time.monotonic() > deadline:
                raise click.ClickException(f"{label}: only {value} of {total} after {timeout:.0f} s")
            time.sleep(0.05)


def run_ceiling(settings: Any, comments: list[dict[str, Any]], consumers: int, batch_size: int) -> float:
    """Messages per second through a bare publisher and bare batched-insert consumers."""
    from commine.persistence.engine import drop_database, ensure_database, make_engine, migrate

    url = _scratch_database(settings.database_url, "ceiling")
    queue = f"bench{uuid.uuid4().hex[:8]}.ceiling"
    ensure_database(url)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    channel.confirm_delivery()
    batches = chunks(comments, batch_size)
    shares = [len(batches[i::consumers]) * batch_size for i in range(consumers)]
    context = multiprocessing.get_context("spawn")
    stored = context.Value("q", 0)
    workers = [
        context.Process(target=_ceiling_consumer, args=(settings.amqp_url, queue, url, share, stored))
        for share in shares
    ]
    try:
        for process in workers:
            process.start()
        time.sleep(2)  # let the consumers connect, as the workers do before the end-to-end run
        started = time.perf_counter()
        properties = pika.BasicProperties(delivery_mode=2)
        for index, batch in enumerate(batches):
            body = json.dumps({"first": index * batch_size + 1, "source_id": "0" * 16, "comments": batch})
            channel.basic_publish("", queue, body.encode(), properties, mandatory=True)
        _wait("ceiling", len(comments), lambda: stored.value, timeout=1800)
        elapsed = time.perf_counter() - started
    finally:
        for process in workers:
            process.terminate()
            process.join()
        channel.queue_delete(queue)
        connection.close()
        drop_database(url)
    return len(comments) / elapsed


def _scratch_database(url: str, tag: str) -> str:
    base = sa.engine.make_url(url)
    return base.set(database=f"commine_bench_{tag}_{uuid.uuid4().hex[:8]}").render_as_string(hide_password=False)


# --- end to end: the integration publishes onto RabbitMQ, commine workers store it ---


def run_end_to_end(settings: Any, comments: list[dict[str, Any]], workers: int, batch_size: int) -> tuple[float, float]:
    """Messages per second stored (events committed) and projected (read model caught up)."""
    from commine.bootstrap import bootstrap
    from commine.handlers.commands import create_project, create_source
    from commine.integrations.ingest_client import make_body, send, wait_for_receipts
    from commine.persistence.schema import checkpoints

    url = _scratch_database(settings.database_url, "e2e")
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    settings = replace(settings, database_url=url, queue_prefix=prefix, embedded=False)
    app = bootstrap(settings)
    create_project(app.store, "bench", actor="bench")
    create_source(app.store, "bench/inbox", actor="bench")
    env = {
        **os.environ,
        "COMMINE_DATABASE_URL": url,
        "COMMINE_QUEUE_PREFIX": prefix,
        "COMMINE_ENCRYPTION": "on" if settings.encryption else "off",
    }
    env.pop("COMMINE_EMBEDDED", None)
    procs = [
        subprocess.Popen([sys.executable, "-m", "commine", "worker"], env=env, stdout=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    try:
        _wait_for_consumers(settings.amqp_url, f"{prefix}.ingest", workers)
        bodies = [make_body("bench/inbox", batch, actor="integration:bench") for batch in chunks(comments, batch_size)]
        started = time.perf_counter()
        batch_ids = [send(app, body) for body in bodies]
        published = time.perf_counter() - started
        with tqdm(total=len(batch_ids), desc="end to end", unit="batch", file=sys.stderr, disable=None) as bar:
            wait_for_receipts(app, batch_ids, timeout=1800, progress=bar.update)
        stored = time.perf_counter() - started
        last = app.store.last_position()

        def projected() -> int:
            with app.engine.connect() as conn:
                position = conn.execute(sa.select(checkpoints.c.position)).scalar() or 0
            return min(len(comments), max(0, int(position) - (last - len(comments))))

        _wait("projected", len(comments), projected, timeout=1800)
        projected_time = time.perf_counter() - started
    finally:
        _tear_down(procs, settings.amqp_url, prefix, app, url)
    return len(comments) / stored, len(comments) / projected_time, len(comments) / published


def _tear_down(procs: list[Any], amqp_url: str, prefix: str, app: Any, url: str) -> None:
    """Stop the workers, then delete the run's queues and database."""
    from commine.broker.topology import delete_topology
    from commine.persistence.engine import drop_database

    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=60)
    delete_topology(amqp_url, prefix)
    app.close()
    drop_database(url)


def _wait_for_consumers(amqp_url: str, queue: str, expected: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        while time.monotonic() < deadline:
            try:
                declared = channel.queue_declare(queue, passive=True)
                if declared.method.consumer_count >= expected:
                    return
            except pika.exceptions.ChannelClosedByBroker:
                channel = connection.channel()
            time.sleep(0.2)
    finally:
        connection.close()
    raise click.ClickException(f"workers did not start consuming {queue} within {timeout:.0f} s")


@click.group()
def bench() -> None:
    """Measure throughput against a ceiling taken in the same run."""


@bench.command("ingest")
@click.option("--messages", default=100_000, show_default=True, help="Comments of about 1 KB to ingest.")
@click.option("--workers", default=2, show_default=True, help="Worker processes (and ceiling consumers).")
@click.option("--batch-size", default=None, type=int, help="Comments per broker message [COMMINE_INGEST_BATCH_SIZE].")
@click.option(
    "--encryption",
    type=click.Choice(["on", "off", "both"]),
    default=None,
    help="Encrypt message text at rest; 'both' measures off then on in the same run [COMMINE_ENCRYPTION].",
)
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    type=click.IntRange(1),
    help="Ceiling and end to end measured this many times, alternately; the figures are the rounds' medians.",
)
@pass_context
def bench_ingest(
    ctx: Context, messages: int, workers: int, batch_size: int | None, encryption: str | None, rounds: int
) -> None:
    """End-to-end ingestion (RabbitMQ -> workers -> PostgreSQL) against a bare pika + INSERT ceiling.

    On a shared machine one end-to-end run can be a fifth faster or slower than the next with the
    same code; ``--rounds`` (3 by default, about four minutes) measures ceiling and end to end in
    turn and reports each round and their medians, so that one lucky or unlucky round does not
    make the figure.
    """
    settings = ctx.settings
    if settings.embedded:
        raise click.ClickException("bench ingest measures the real services; run it without --embedded")
    size = batch_size or settings.ingest_batch_size
    comments = make_comments(messages)
    average = sum(len(json.dumps(c)) for c in comments[:1000]) / min(1000, len(comments))
    click.echo(f"{messages} comments of {average:.0f} bytes, batches of {size}, {workers} worker process(es)")
    modes = {"on": [True], "off": [False], "both": [False, True]}[
        encryption or ("on" if settings.encryption else "off")
    ]
    measured = [_ingest_round(settings, comments, workers, size, modes) for _ in range(rounds)]
    ceiling = median(m["ceiling"] for m in measured)
    stored, projected, published = (median(m[modes[-1]][i] for m in measured) for i in range(3))
    ratios = [m[modes[-1]][0] / m["ceiling"] for m in measured]
    summary = {
        "benchmark": "ingest",
        "messages": messages,
        "bytes_per_message": round(average),
        "batch_size": size,
        "workers": workers,
        "end_to_end_per_s": round(stored),
        "projected_per_s": round(projected),
        "published_per_s": round(published),
        "ceiling_per_s": round(ceiling),
        "ratio": round(median(ratios), 3),
        "machine": machine(),
    }
    summary["encryption"] = "on" if modes[-1] else "off"
    if len(modes) == 2:
        off = median(m[False][0] for m in measured)
        summary["end_to_end_off_per_s"] = round(off)
        summary["encryption_cost"] = round(1 - stored / off, 3)
    if rounds > 1:
        summary["rounds"] = [
            {"end_to_end_per_s": round(m[modes[-1]][0]), "ceiling_per_s": round(m["ceiling"]), "ratio": round(r, 3)}
            for m, r in zip(measured, ratios, strict=True)
        ]
    click.echo(json.dumps(summary))


def _ingest_round(
    settings: Any, comments: list[dict[str, Any]], workers: int, size: int, modes: list[bool]
) -> dict[Any, Any]:
    """One ceiling, then one end-to-end run per encryption mode: ``{"ceiling": rate, mode: (stored,
    projected, published)}``."""
    ceiling = run_ceiling(settings, comments, workers, size)
    click.echo(f"ceiling (bare pika publisher with confirms + batched INSERT consumers): {ceiling:,.0f} msg/s")
    measured: dict[Any, Any] = {"ceiling": ceiling}
    for encrypted in modes:
        stored, projected, published = run_end_to_end(replace(settings, encryption=encrypted), comments, workers, size)
        measured[encrypted] = (stored, projected, published)
        click.echo(
            f"end to end, encryption {'on' if encrypted else 'off'}, stored as events: {stored:,.0f} msg/s; "
            f"read model caught up: {projected:,.0f} msg/s"
        )
    return measured


# --- Microsoft Graph mailbox sync ---------------------------------------------------------------------------------


def fake_graph_message(n: int, rng: random.Random) -> dict[str, Any]:
    """A Graph message of about 1 KB of HTML body, with a quoted reply every third one."""
    words = " ".join(rng.choice(WORDS) for _ in range(110))
    quote = '<div id="divRplyFwdMsg"><b>From:</b> support<br></div><div>earlier reply</div>' if n % 3 == 0 else ""
    return {
        "internetMessageId": f"<bench-{n:08d}@example.com>",
        "conversationId": f"conv-{n // 4}",
        "subject": " ".join(rng.choice(WORDS) for _ in range(6)),
        "body": {"contentType": "html", "content": f"<html><body><p>{words}</p>{quote}</body></html>"},
        "from": {"emailAddress": {"address": f"customer{rng.randrange(10_000)}@example.com"}},
        "toRecipients": [{"emailAddress": {"address": "support@example.com"}}],
        "receivedDateTime": (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n)).isoformat(),
        "sentDateTime": (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n)).isoformat(),
        "categories": [rng.choice(["Red", "Blue"])],
    }


def _serve_fake_graph(messages: int, folders: int, directory: str, pipe: Any) -> None:
    """In a child process (so it does not share the sync's GIL): a fake Graph with ``messages``."""
    from pathlib import Path

    from commine.integrations.graph_fake import FakeGraph

    graph = FakeGraph(secret="bench-secret")
    rng = random.Random(0)
    ids = [graph.add_folder("bench@example.com", f"Folder {i}") for i in range(folders)]
    for n in range(messages):
        attachments = [{"id": f"a{n}", "name": "x.pdf", "size": 10, "contentType": "application/pdf"}]
        graph.add_message(
            "bench@example.com", ids[n % folders], fake_graph_message(n, rng), attachments if n % 50 == 0 else None
        )
    with graph.serve(Path(directory)):
        pipe.send((graph.base_url, str(graph.ca_file)))
        pipe.recv()  # until told to stop


def raw_fetch_rate(base_url: str, ca_file: str, page_size: int) -> float:
    """Messages per second the fake server hands out to a bare httpx client (token, folders, delta pages)."""
    import httpx

    started = time.perf_counter()
    count = 0
    with httpx.Client(verify=ca_file, timeout=60) as client:
        form = {"grant_type": "client_credentials", "client_id": "client", "client_secret": "bench-secret"}
        token = client.post(f"{base_url}/tenant/oauth2/v2.0/token", data=form).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Prefer": f"odata.maxpagesize={page_size}"}
        folders = client.get(f"{base_url}/v1.0/users/bench@example.com/mailFolders", headers=headers).json()["value"]
        for folder in folders:
            url: str | None = f"{base_url}/v1.0/users/bench@example.com/mailFolders/{folder['id']}/messages/delta"
            while url:
                page = client.get(url, headers=headers).json()
                count += len(page["value"])
                url = page.get("@odata.nextLink")
    return count / (time.perf_counter() - started)


def mapping_rate(limit: int = 5000) -> float:
    """Graph messages (JSON, as the sync reads them) mapped to comments per second."""
    import orjson

    from commine.integrations.graph_mapping import map_message

    rng = random.Random(1)  # the same generator the server's messages come from
    parsed = [orjson.loads(json.dumps(fake_graph_message(n, rng))) for n in range(limit)]
    started = time.perf_counter()
    for message in parsed:
        map_message(message, mailbox="bench@example.com", folder="Folder 0")
    return len(parsed) / (time.perf_counter() - started)


def run_graph_sync(
    settings: Any, base_url: str, ca_file: str, messages: int, workers: int, page_size: int
) -> dict[str, float]:
    """Messages per second from the fake Graph into the store (receipts committed), and published."""
    from commine.bootstrap import bootstrap
    from commine.handlers.commands import create_project, create_source
    from commine.integrations.graph import SyncOptions, run_pass
    from commine.integrations.graph_config import Credential, Integration, Mailbox, add_integration
    from commine.integrations.ingest_client import wait_for_receipts

    url = _scratch_database(settings.database_url, "graph")
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    settings = replace(settings, database_url=url, queue_prefix=prefix, embedded=False)
    app = bootstrap(settings)
    create_project(app.store, "bench", actor="bench")
    create_source(app.store, "bench/inbox", actor="bench")
    integration = Integration("", "bench", "tenant", "client", base_url, f"{base_url}/v1.0")
    integration.mailboxes = [Mailbox("bench@example.com", "bench/inbox")]
    add_integration(app.engine, app.store.cipher.keyring, integration, Credential("secret", secret="bench-secret"))
    env = {**os.environ, "COMMINE_DATABASE_URL": url, "COMMINE_QUEUE_PREFIX": prefix}
    env.pop("COMMINE_EMBEDDED", None)
    procs = [
        subprocess.Popen([sys.executable, "-m", "commine", "worker"], env=env, stdout=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    try:
        _wait_for_consumers(settings.amqp_url, f"{prefix}.ingest", workers)
        started = time.perf_counter()
        with tqdm(total=messages, desc="sync", unit="message", file=sys.stderr, disable=None) as bar:
            results = run_pass(app, ["bench"], SyncOptions(page_size=page_size), progress=bar.update)
        published = time.perf_counter() - started
        batch_ids = [b for r in results for b in r.batch_ids]
        if sum(r.published for r in results) != messages or any(r.error for r in results):
            raise click.ClickException(f"the sync did not publish every message: {results}")
        with tqdm(total=len(batch_ids), desc="store", unit="batch", file=sys.stderr, disable=None) as bar:
            receipts = wait_for_receipts(app, batch_ids, timeout=1800, progress=bar.update)
        stored = time.perf_counter() - started
        if sum(r.new for r in receipts) != messages:
            raise click.ClickException("not every message was stored as new")
    finally:
        _tear_down(procs, settings.amqp_url, prefix, app, url)
    return {"end_to_end": messages / stored, "published": messages / published}


@bench.command("graph")
@click.option("--messages", default=20_000, show_default=True, help="Messages in the fake mailbox.")
@click.option("--folders", default=3, show_default=True)
@click.option("--page-size", default=100, show_default=True, help="Messages per Graph page (one ingest batch).")
@click.option("--workers", default=2, show_default=True, help="Worker processes.")
@pass_context
def bench_graph(ctx: Context, messages: int, folders: int, page_size: int, workers: int) -> None:
    """Mailbox sync: the local Graph server -> msgraph-sdk -> mapping -> RabbitMQ -> workers -> PostgreSQL.

    Also measured in the same run: the fake server's own rate to a bare httpx client (the ceiling of
    the Graph side) and the mapping alone (Graph message to comment, already parsed).
    """
    import tempfile

    settings = ctx.settings
    if settings.embedded:
        raise click.ClickException("bench graph measures the real services; run it without --embedded")
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()
    with tempfile.TemporaryDirectory() as directory:
        server = context.Process(target=_serve_fake_graph, args=(messages, folders, directory, child), daemon=True)
        server.start()
        base_url, ca_file = parent.recv()
        os.environ.update(REQUESTS_CA_BUNDLE=ca_file, SSL_CERT_FILE=ca_file)
        try:
            mapping = mapping_rate(min(messages, 5000))
            click.echo(f"mapping alone: {mapping:,.0f} messages/s")
            ceiling = raw_fetch_rate(base_url, ca_file, page_size)
            click.echo(f"fake Graph to a bare httpx client: {ceiling:,.0f} messages/s")
            rates = run_graph_sync(settings, base_url, ca_file, messages, workers, page_size)
        finally:
            parent.send("stop")
            server.join(timeout=30)
    click.echo(
        f"sync published {rates['published']:,.0f} messages/s; "
        f"end to end (stored as events): {rates['end_to_end']:,.0f} messages/s"
    )
    summary = {
        "benchmark": "graph",
        "messages": messages,
        "folders": folders,
        "page_size": page_size,
        "workers": workers,
        "end_to_end_per_s": round(rates["end_to_end"]),
        "published_per_s": round(rates["published"]),
        "mapping_per_s": round(mapping),
        "fake_graph_ceiling_per_s": round(ceiling),
        "ratio": round(rates["end_to_end"] / ceiling, 3),
        "machine": machine(),
    }
    click.echo(json.dumps(summary))

"""The runnable AMQP example and the ingest and streams benchmarks, against the real services."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
import sqlalchemy as sa

from commine.bootstrap import bootstrap
from commine.handlers.commands import create_project, create_source
from commine.persistence.schema import ingest_receipts, messages
from commine.scripts import publish_example
from commine.settings import Settings

pytestmark = pytest.mark.services


def _wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout:.0f} s")
        time.sleep(0.1)


def test_the_publish_example_is_stored_by_a_worker(service_settings: Settings, service_env: dict[str, str]) -> None:
    app = bootstrap(service_settings)
    create_project(app.store, "acme", actor="test")
    source = create_source(app.store, "acme/inbox", actor="test")
    worker = subprocess.Popen([sys.executable, "-m", "commine", "worker"], env=service_env)
    try:
        body = publish_example.example_batch("acme/inbox", 4)
        publish_example.publish(service_settings.amqp_url, service_settings.queue_prefix, body)

        def stored() -> bool:
            with app.engine.connect() as conn:
                return (
                    conn.execute(
                        sa.select(ingest_receipts.c.new).where(ingest_receipts.c.batch_id == body["batch_id"])
                    ).scalar()
                    == 4
                )

        _wait_for(stored)
        _wait_for(lambda: _count(app, source.source_id) == 4)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        app.close()


def _count(app, source_id: str) -> int:  # type: ignore[no-untyped-def]
    with app.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(messages.c.source_id == source_id)).scalar_one())


def _bench(env: dict[str, str], *arguments: str) -> dict[str, Any]:
    """``commine bench ...`` in a subprocess; its last line, the summary. A benchmark makes (and
    drops) its own databases and queues beside the test's."""
    command = [sys.executable, "-m", "commine", "bench", *arguments]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_bench_ingest_prints_its_figures_as_the_last_line(
    service_settings: Settings, service_env: dict[str, str]
) -> None:
    summary = _bench(service_env, "ingest", "--messages", "2000", "--workers", "1", "--rounds", "2")
    assert summary["benchmark"] == "ingest"
    assert summary["messages"] == 2000
    assert summary["end_to_end_per_s"] > 0 and summary["ceiling_per_s"] > 0
    rounds = summary["rounds"]  # ceiling and end to end measured in turn, twice
    assert len(rounds) == 2
    for measured in rounds:
        assert measured["ratio"] == pytest.approx(measured["end_to_end_per_s"] / measured["ceiling_per_s"], rel=0.01)
    assert summary["ratio"] == pytest.approx((rounds[0]["ratio"] + rounds[1]["ratio"]) / 2, abs=0.002)  # the median
    assert summary["ceiling_per_s"] == pytest.approx(
        (rounds[0]["ceiling_per_s"] + rounds[1]["ceiling_per_s"]) / 2, abs=1
    )
    assert summary["machine"]["cpus"] >= 1


def test_bench_streams_prints_its_figures_as_the_last_line(
    service_settings: Settings, service_env: dict[str, str]
) -> None:
    options = ["--messages", "600", "--route", "300", "--streams", "2", "--robots", "2", "--requests", "4"]
    summary = _bench(service_env, "streams", *options)
    assert summary["benchmark"] == "streams" and summary["messages"] == 600
    routing = summary["routing"]
    assert routing["messages"] == 300 and 0 < routing["published"] <= 2 * 300
    assert summary["ratio"] == pytest.approx(routing["per_s"] / summary["ceiling_routing_per_s"], abs=0.001)
    fetch = summary["fetch"]
    assert fetch["requests"] == 2 * 4 and fetch["results_per_fetch"] > 0
    # The one robot alone ran the same loop first, on its own stream: a baseline with figures of its own.
    alone = fetch["one_robot"]
    assert 0 < alone["p50_ms"] <= alone["p99_ms"] and alone["fetches_per_s"] > 0
    assert summary["fetch_target_met"] == (fetch["p99_ms"] < 50)


def test_waiting_for_a_batch_the_workers_rejected_fails_fast_with_the_reason(
    service_settings: Settings, service_env: dict[str, str]
) -> None:
    from commine.integrations.ingest_client import BatchRejected, make_body, send, wait_for_receipts

    app = bootstrap(service_settings)
    create_project(app.store, "acme", actor="test")
    create_source(app.store, "acme/inbox", actor="test")
    worker = subprocess.Popen([sys.executable, "-m", "commine", "worker"], env=service_env)
    try:
        # Given a batch for a source that does not exist (the CLI would refuse it; a raw integration need not)...
        comment = {"id": "c1", "timestamp": "2026-01-01T00:00:00Z", "messages": [{"body": {"text": "hi"}}]}
        good = send(app, make_body("acme/inbox", [comment], actor="test"))
        bad = send(app, make_body("acme/nowhere", [comment], actor="test"))
        # ...waiting for it ends with the dead-letter reason (at the timeout it would be IngestTimeout).
        with pytest.raises(BatchRejected, match="acme/nowhere does not exist"):
            wait_for_receipts(app, [good, bad], timeout=120)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        app.close()

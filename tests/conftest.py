"""Fixtures: fresh databases, unique queue names, and the real services.

Every test that touches a server gets its own PostgreSQL database and its own queue prefix,
removed afterwards, so the suite can run twice in a row and beside a running deployment.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from commine.broker.topology import delete_topology
from commine.persistence.engine import drop_database, ensure_database, make_engine, migrate
from commine.persistence.store import EventStore
from commine.settings import Settings, load_settings

PG_SERVER = os.environ.get("COMMINE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = os.environ.get("COMMINE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77"

# Property tests check behaviour, not speed: on a shared 2-core machine one example can take twice
# hypothesis' default 200 ms deadline (CI failed once on that). Speed is what the benchmarks measure.
hypothesis_settings.register_profile("commine", deadline=None)
hypothesis_settings.load_profile("commine")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def require_services() -> None:
    """Fail (in CI) or skip (elsewhere) when a server the test needs is not up."""
    missing = [name for name, port in (("PostgreSQL", 5432), ("RabbitMQ", 5672)) if not _listening(port)]
    if missing:
        message = f"{' and '.join(missing)} not listening on 127.0.0.1; run ../shared/scripts/ensure-services"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    require_services()
    url = f"{PG_SERVER}/commine_test_{uuid.uuid4().hex[:12]}"
    ensure_database(url)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'commine.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'commine.db'}"
        return
    yield request.getfixturevalue("pg_url")


@pytest.fixture
def store(database_url: str) -> Iterator[EventStore]:
    engine = make_engine(database_url)
    migrate(engine)
    try:
        yield EventStore(engine)
    finally:
        engine.dispose()


@pytest.fixture
def queue_prefix() -> Iterator[str]:
    """A queue prefix no one else uses; its queues and exchange, and its training jobs and keys on
    Redis (workers ask for retraining), are deleted after the test."""
    require_services()
    prefix = f"test{uuid.uuid4().hex[:10]}"
    try:
        yield prefix
    finally:
        delete_topology(AMQP_URL, prefix)
        delete_training_keys(prefix)


def delete_training_keys(prefix: str) -> None:
    """The RQ training queue of ``prefix`` with its jobs, results, registries and workers, and the
    coalescing keys."""
    import redis
    import rq

    from commine.workers.training import queue_name

    connection = redis.Redis.from_url(REDIS_URL)
    queue = rq.Queue(queue_name(prefix), connection=connection)
    registries = [
        queue.finished_job_registry,
        queue.failed_job_registry,
        queue.started_job_registry,
        queue.deferred_job_registry,
        queue.scheduled_job_registry,
        queue.canceled_job_registry,
    ]
    for registry in registries:
        for job_id in registry.get_job_ids():
            connection.delete(f"rq:job:{job_id}", f"rq:results:{job_id}")
        connection.delete(registry.key)
    for worker in rq.Worker.all(queue=queue):
        connection.srem("rq:workers", worker.key)
        connection.delete(worker.key)
    connection.delete(f"rq:workers:{queue.name}")
    queue.delete(delete_jobs=True)
    for key in connection.scan_iter(f"{prefix}:*"):
        connection.delete(key)


@pytest.fixture
def service_settings(pg_url: str, queue_prefix: str, tmp_path: Path) -> Settings:
    """Settings for the real services, on a fresh database and fresh queues."""
    return replace(
        load_settings({}),
        database_url=pg_url,
        amqp_url=AMQP_URL,
        queue_prefix=queue_prefix,
        home=tmp_path,
        # The transformer worker embeds at a few hundred messages a second: only its own tests run it.
        transformer=False,
    )


@pytest.fixture
def service_env(service_settings: Settings) -> dict[str, str]:
    """Environment for a ``commine`` subprocess on the test's database and queues."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMINE_")}
    env.update(
        COMMINE_DATABASE_URL=service_settings.database_url,
        COMMINE_AMQP_URL=service_settings.amqp_url,
        COMMINE_QUEUE_PREFIX=service_settings.queue_prefix,
        COMMINE_HOME=str(service_settings.home),
        COMMINE_TRANSFORMER="0",
    )
    return env


@pytest.fixture
def embedded_settings(tmp_path: Path) -> Settings:
    return replace(
        load_settings({}), home=tmp_path, database_url=f"sqlite:///{tmp_path / 'commine.db'}", transformer=False
    ).with_embedded()

"""End to end on the real services: an annotated upload through RabbitMQ and the workers, a model
trained by the RQ trainer, every message predicted, validation and rating reported."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from conftest import delete_training_keys
from test_ingest_services import (  # noqa: F401  (fixtures are used by name)
    COMMINE,
    CSV_OPTIONS,
    SOURCE,
    commine,
    sample_rows,
    source_id,
    store,
    wait_until,
    workers,
    write_csv,
)

from commine.handlers.commands import create_dataset
from commine.persistence import schema as t
from commine.persistence.store import EventStore
from commine.workers.training import queue_name

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture
def trainer(service_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``commine trainer`` on the test's RQ queue; its Redis keys and queue are removed afterwards."""
    log = (tmp_path / "trainer.log").open("wb")
    process = subprocess.Popen([*COMMINE, "trainer"], env=service_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
        prefix = service_env["COMMINE_QUEUE_PREFIX"]
        # Jobs and their results first, found through the queue's registries: their keys do not
        # name the queue, so the patterns below, which delete the registries, would leave them.
        delete_training_keys(prefix)
        connection = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for pattern in (f"{prefix}:*", f"rq:*{queue_name(prefix)}*"):
            for key in connection.scan_iter(pattern):
                connection.delete(key)


def _models(events: EventStore) -> list[Any]:
    with events.engine.connect() as conn:
        return list(conn.execute(sa.select(t.models).order_by(t.models.c.version)))


def _predicted(events: EventStore, dataset_id: str, version: int) -> int:
    with events.engine.connect() as conn:
        query = sa.select(sa.func.count()).where(
            t.predictions.c.dataset_id == dataset_id, t.predictions.c.model_version == version
        )
        return int(conn.execute(query).scalar() or 0)


def test_an_annotated_upload_gets_a_model_that_predicts_every_message(
    service_env: dict[str, str],
    store: EventStore,  # noqa: F811
    source_id: str,  # noqa: F811
    workers: Callable[..., Any],  # noqa: F811
    trainer: subprocess.Popen[bytes],
    tmp_path: Path,
) -> None:
    dataset_id = create_dataset(store, "p/ds", sources=[SOURCE], actor="test").dataset_id
    rows = sample_rows(600, seed=11)
    for row in rows[400:]:
        row["label"] = ""  # 400 annotated, 200 not
    labelled = sum(1 for row in rows if row["label"])
    workers()
    path = write_csv(tmp_path / "mail.csv", rows)
    commine(service_env, "upload", SOURCE, str(path), *CSV_OPTIONS, "--dataset", "p/ds", "--label-column", "label")

    def trained_on_everything() -> bool:
        models = _models(store)
        return bool(models) and models[-1].training_size == labelled

    wait_until(trained_on_everything, timeout=240, failure=lambda: f"models: {_models(store)}", workers=[trainer])
    newest = _models(store)[-1]
    assert len(_models(store)) <= 2  # annotations arriving in a few batches coalesce
    wait_until(
        lambda: _predicted(store, dataset_id, newest.version) == 600,
        timeout=120,
        failure=lambda: f"{_predicted(store, dataset_id, newest.version)} of 600 messages predicted",
    )
    summary = json.loads(commine(service_env, "validation", "p/ds", "--json").stdout)
    assert summary["model_version"] == newest.version
    assert summary["rating"]["band"] in {"Poor", "Average", "Good", "Excellent"}
    assert summary["validation"]["mean_average_precision"] > 0.7

    # A message uploaded now is predicted on ingestion, under the newest model.
    more = write_csv(tmp_path / "more.csv", sample_rows(610, seed=12)[600:])
    commine(service_env, "upload", SOURCE, str(more), *CSV_OPTIONS)
    wait_until(
        lambda: _predicted(store, dataset_id, newest.version) == 610,
        timeout=60,
        failure=lambda: f"{_predicted(store, dataset_id, newest.version)} of 610 messages predicted; {_debug(store)}",
    )


def _debug(events: EventStore) -> str:
    with events.engine.connect() as conn:
        tracking = conn.execute(sa.select(t.tracking)).all()
        checkpoints = conn.execute(sa.select(t.checkpoints)).all()
        last = conn.execute(sa.select(sa.func.max(t.events.c.position))).scalar()
        emb = conn.execute(sa.select(sa.func.count()).select_from(t.embeddings)).scalar()
        msgs = conn.execute(sa.select(sa.func.count()).select_from(t.messages)).scalar()
    return f"tracking {tracking} checkpoints {checkpoints} last {last} embeddings {emb} messages {msgs}"

"""Real-time retraining as jobs on Redis with RQ, coalesced per dataset.

``TrainingRequests.request(dataset_id)`` may be called for every annotation; it enqueues a job only
when none is waiting for that dataset, so a burst of annotations queues one job. A job takes the
dataset's lock (a run in progress makes the next one wait, never run beside it), waits until the
requests have been quiet for ``SETTLE`` seconds (a burst still arriving joins this run), and only
then clears the "waiting" mark: requests from then on queue exactly one more run, which will see
them. So many annotations give one run, and a run in progress gives exactly one more afterwards.

Jobs report their stage and progress in ``job.meta`` (visible in rq-dashboard: ``commine dashboard``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import redis
import rq

from commine.handlers.training import NothingToTrain, train_dataset
from commine.persistence import projections
from commine.persistence.store import EventStore

#: Seconds without a new request before a run reads its data.
SETTLE = 0.5
#: A run waits at most this long for a burst to end.
MAX_SETTLE = 10.0
#: A lock outlives a crashed run by at most this many seconds.
LOCK_TIMEOUT = 3600
ACTOR = "commine-trainer"


def queue_name(prefix: str) -> str:
    return f"{prefix}-training"


def _key(prefix: str, dataset_id: str, what: str) -> str:
    return f"{prefix}:train:{dataset_id}:{what}"


@dataclass
class TrainingRequests:
    """Enqueues coalesced training jobs for the deployment's database on its RQ queue."""

    redis_url: str
    database_url: str
    prefix: str

    def __post_init__(self) -> None:
        self.redis = redis.Redis.from_url(self.redis_url)
        self.queue = rq.Queue(queue_name(self.prefix), connection=self.redis)

    def request(self, dataset_id: str) -> rq.job.Job | None:
        """Ask for a run; returns the job when this call queued one."""
        self.redis.set(_key(self.prefix, dataset_id, "last"), time.time())
        if not self.redis.set(_key(self.prefix, dataset_id, "queued"), 1, nx=True, ex=LOCK_TIMEOUT):
            return None
        return self.queue.enqueue(
            run_training,
            dataset_id,
            self.database_url,
            self.redis_url,
            self.prefix,
            job_id=f"train-{dataset_id}-{uuid.uuid4().hex[:8]}",
            job_timeout=LOCK_TIMEOUT,
            result_ttl=7 * 86400,
            description=f"train dataset {dataset_id}",
        )


def run_training(dataset_id: str, database_url: str, redis_url: str, prefix: str) -> dict[str, Any]:
    """The RQ job: train the dataset once its burst of requests has settled."""
    connection = redis.Redis.from_url(redis_url)
    job = rq.get_current_job()
    store = _store(database_url)
    with connection.lock(_key(prefix, dataset_id, "lock"), timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_TIMEOUT):
        _settle(connection, _key(prefix, dataset_id, "last"))
        connection.delete(_key(prefix, dataset_id, "queued"))
        projections.catch_up(store)  # the annotations that asked for this run are in the read models
        try:
            trained = train_dataset(store, dataset_id, actor=ACTOR, progress=_reporter(job))
        except NothingToTrain as exc:
            return {"dataset_id": dataset_id, "skipped": str(exc)}
        projections.catch_up(store)
    return {
        "dataset_id": dataset_id,
        "version": trained.version,
        "training_size": trained.training_size,
        "rating": (trained.metrics.get("rating") or {}).get("score"),
    }


def _settle(connection: redis.Redis, last_key: str) -> None:
    deadline = time.monotonic() + MAX_SETTLE
    while time.monotonic() < deadline:
        last = float(connection.get(last_key) or 0)
        quiet = time.time() - last
        if quiet >= SETTLE:
            return
        time.sleep(SETTLE - quiet)


def _reporter(job: rq.job.Job | None) -> Any:
    def report(stage: str, fraction: float) -> None:
        if job is not None:
            job.meta.update(stage=stage, progress=round(fraction, 2))
            job.save_meta()

    return report


_STORES: dict[str, EventStore] = {}


def _store(database_url: str) -> EventStore:
    """One store per database per process (a SimpleWorker runs many jobs in one process)."""
    if database_url not in _STORES:
        from commine.bootstrap import open_store
        from commine.settings import load_settings

        _STORES[database_url] = open_store(replace(load_settings(), database_url=database_url))
    return _STORES[database_url]


def run_trainer(redis_url: str, prefix: str, *, burst: bool = False, fork: bool = True) -> None:
    """Run an RQ worker on the training queue (``commine trainer``)."""
    connection = redis.Redis.from_url(redis_url)
    worker_class = rq.Worker if fork else rq.SimpleWorker
    worker = worker_class([queue_name(prefix)], connection=connection)
    worker.work(burst=burst, with_scheduler=False)

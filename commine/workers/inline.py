"""Workers inside the calling process, for the embedded mode: no server, same actors."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq

from commine.bootstrap import App

log = logging.getLogger(__name__)

#: One in-process worker per broker: dramatiq registers a worker's middleware on its broker for
#: good, so a second worker on the same broker would process every message twice.
_workers: weakref.WeakKeyDictionary[dramatiq.Broker, dramatiq.Worker] = weakref.WeakKeyDictionary()


def worker_for(app: App) -> dramatiq.Worker:
    worker = _workers.get(app.broker)
    if worker is None:
        worker = dramatiq.Worker(app.broker, worker_threads=1)
        worker.start()
        _workers[app.broker] = worker
        app.on_close(worker.stop)
    return worker


@contextmanager
def inline_worker(app: App) -> Iterator[None]:
    """Run the actors on a thread of this process while the block runs; drain them at its end."""
    worker = worker_for(app)
    yield
    drain(app, worker)


def drain(app: App, worker: dramatiq.Worker) -> None:
    """Wait until every queue is empty; ingest first, since it enqueues the follow-up work."""
    for queue in app.actors.queues:
        # fail_fast: a message that failed raises its exception here, in the calling command.
        app.broker.join(queue, fail_fast=True)  # type: ignore[call-arg]
    worker.join()


def background_trainer(app: App, interval: float = 2.0) -> threading.Thread | None:
    """In the embedded mode, train the datasets whose labels changed, every ``interval`` seconds, on a thread.

    The embedded mode collects retraining requests (``bootstrap.PendingTraining``) and trains when a
    command asks; a long-running server (``commine serve``) asks here, so a trainer labelling in the web
    UI sees a new model version land without running anything else. None when retraining is off.
    """
    pending = app.training
    if pending is None or not hasattr(pending, "run_pending"):
        return None
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            try:
                pending.run_pending()
            except Exception:  # a failed run is logged; the next annotation asks again
                log.exception("background training failed")

    thread = threading.Thread(target=run, name="commine-trainer", daemon=True)
    thread.start()
    app.on_close(stop.set)
    return thread

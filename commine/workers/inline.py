"""Workers inside the calling process, for the embedded mode: no server, same actors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq

from commine.bootstrap import App


@contextmanager
def inline_worker(app: App) -> Iterator[None]:
    """Run the actors on a thread of this process while the block runs; drain them at its end."""
    worker = dramatiq.Worker(app.broker, worker_threads=1)
    worker.start()
    try:
        yield
        drain(app, worker)
    finally:
        worker.stop()


def drain(app: App, worker: dramatiq.Worker) -> None:
    """Wait until every queue is empty; ingest first, since it enqueues the follow-up work."""
    for queue in app.actors.queues:
        # fail_fast: a message that failed raises its exception here, in the calling command.
        app.broker.join(queue, fail_fast=True)  # type: ignore[call-arg]
    worker.join()

"""Worker entry points: run the actors in this process, or in several, until told to stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import dramatiq

from commine.bootstrap import App, tune_gc, tune_worker_threads
from commine.workers.streams import StreamLoop


def run_worker(app: App, *, threads: int) -> None:
    """Consume every handler queue until SIGTERM or SIGINT, then finish what is in hand."""
    stop = threading.Event()
    tune_gc()
    tune_worker_threads()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker = dramatiq.Worker(app.broker, worker_threads=threads, queues=set(app.actors.queues))
    worker.start()
    streams = StreamLoop(app.store, app.settings.amqp_url, app.settings.queue_prefix)
    streams.start()
    print(f"worker {os.getpid()} consuming {', '.join(sorted(app.actors.queues))}", flush=True)
    try:
        stop.wait()
    finally:
        streams.stop()
        worker.stop()
        app.broker.close()


def run_processes(argv: list[str], processes: int) -> int:
    """Start ``processes`` copies of this worker command and wait for them; forward signals."""
    children = [subprocess.Popen([sys.executable, "-m", "commine", *argv]) for _ in range(processes)]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    return max(child.wait() for child in children)

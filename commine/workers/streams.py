"""The worker's stream loop: route queue-delivered streams, record robots' exceptions, and drain
purged sources' messages off the stream queues (``handlers.purge``).

The ``project`` actor routes right after new predictions reach the read models; this loop
covers what no ingestion nudges (a stream created, a threshold changed or a reset from the
CLI or the API, a robot rejecting a message) by looking about once a second. Both are safe to
run at once and in many workers: routing takes each stream's routing row lock.
"""

from __future__ import annotations

import logging
import threading

from commine.broker.streams import StreamPublisher
from commine.handlers.purge import drain_purged_sources
from commine.handlers.streams import record_exceptions, route_streams
from commine.persistence.store import EventStore

log = logging.getLogger(__name__)

#: Seconds between two looks when there was nothing to do.
INTERVAL = 1.0


class StreamLoop(threading.Thread):
    """A daemon thread that routes streams and records exceptions until ``stop()``."""

    def __init__(self, store: EventStore, amqp_url: str, prefix: str) -> None:
        super().__init__(name="commine-streams", daemon=True)
        self.store = store
        self.amqp_url = amqp_url
        self.prefix = prefix
        self._stop_event = threading.Event()

    def run(self) -> None:
        publisher = StreamPublisher(self.amqp_url, self.prefix)
        try:
            while not self._stop_event.is_set():
                try:
                    busy = drain_purged_sources(self.store, self.amqp_url, self.prefix) > 0
                    busy |= route_streams(self.store, publisher) > 0
                    busy |= record_exceptions(self.store, self.amqp_url, self.prefix) > 0
                except Exception:  # a database or broker restart: log it and look again later
                    log.exception("stream routing failed; retrying")
                    busy = False
                if not busy:
                    self._stop_event.wait(INTERVAL)
        finally:
            publisher.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)

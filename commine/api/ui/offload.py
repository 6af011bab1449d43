"""The web UI's long reads (a dataset's view, its state at a moment) in child processes.

Building a dataset's view at 100,000 messages is about 14 s of Python (every comment opened and
parsed); on a thread of the server it held the GIL the pages need, and pages answered in
300-800 ms while it ran. ``commine serve`` turns this on (``use_processes``): a child process opens
its own store from the settings and returns the result, so the server only unpickles it. Apps run
in-process (tests, tools) keep the work on a thread of their own.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from commine.persistence.store import EventStore
from commine.settings import Settings

T = TypeVar("T")

#: Child processes: a view build and a past state can be prepared at once on the 2 cores we plan for.
WORKERS = 2

_lock = threading.Lock()
_settings: Settings | None = None
_pool: ProcessPoolExecutor | None = None
#: In a child: the store it opened, kept for the next job.
_child_store: EventStore | None = None


def use_processes(settings: Settings | None) -> None:
    """Run ``run``'s work in child processes opening the store of ``settings`` (None: in the caller)."""
    global _settings, _pool
    with _lock:
        _settings = settings
        old, _pool = _pool, None
    if old is not None:
        old.shutdown(wait=False, cancel_futures=True)


def run(function: Callable[..., T], store: EventStore, *args: Any) -> T:
    """``function(store, *args)``; in a child process when turned on, where ``store`` is the child's own
    store of the same database (``function`` and its result must pickle)."""
    global _pool
    for attempt in range(2):
        settings, pool = _current()
        if settings is None or pool is None:
            return function(store, *args)
        try:
            return pool.submit(_in_child, settings, function, args).result()
        except BrokenProcessPool:
            # A child died (killed, out of memory): the pool is unusable from then on, so start another.
            with _lock:
                if _pool is pool:
                    _pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            if attempt:
                raise
    raise AssertionError("unreachable")


def _current() -> tuple[Settings | None, ProcessPoolExecutor | None]:
    global _pool
    with _lock:
        if _settings is not None and _pool is None:
            # spawn, not fork: the server has threads, and a forked child would inherit their locks.
            context = multiprocessing.get_context("spawn")
            _pool = ProcessPoolExecutor(WORKERS, mp_context=context, initializer=_watch, initargs=(os.getpid(),))
        return _settings, _pool


def _watch(parent: int) -> None:
    """In a child: exit as soon as the process that started it is gone. Its siblings hold the work
    queue's pipe open, so without this an orphaned child would wait for work forever. Ctrl-C is the
    server's to handle: the child ignores it and is shut down by the server (``use_processes(None)``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="commine-ui: parent watch", daemon=True).start()


def _in_child(settings: Settings, function: Callable[..., T], args: tuple[Any, ...]) -> T:
    global _child_store
    if _child_store is None:
        from commine.persistence.encryption import cipher_for
        from commine.persistence.engine import make_engine

        _child_store = EventStore(make_engine(settings.database_url), cipher=cipher_for(settings))
    return function(_child_store, *args)

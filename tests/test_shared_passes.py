"""``projections.SharedPasses``: threads that need the read models caught up share passes, and
each returns only after a pass that started after it arrived (which therefore saw its writes)."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable

import pytest

from commine.persistence.projections import SharedPasses


def test_each_caller_is_covered_by_a_pass_that_started_after_it_arrived() -> None:
    passes = SharedPasses()
    started: list[float] = []
    finished: list[float] = []
    calls: list[tuple[float, float]] = []
    guard = threading.Lock()

    def one_pass() -> int:
        with guard:
            started.append(time.monotonic())
        time.sleep(0.02)
        with guard:
            finished.append(time.monotonic())
        return 1

    def caller() -> None:
        for _ in range(5):
            arrived = time.monotonic()
            passes.join(one_pass)
            calls.append((arrived, time.monotonic()))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 40
    # Shared: far fewer passes than callers (eight callers at a time, one pass at a time).
    assert len(started) < 30
    windows = list(zip(started, finished, strict=True))
    for arrived, returned in calls:
        assert any(arrived <= begin and end <= returned for begin, end in windows), (arrived, returned)
    # One at a time: no pass starts before the previous one finished.
    assert all(begin >= end for (_, end), (begin, _) in itertools.pairwise(windows))


def test_the_runner_gets_what_it_moved_and_the_joiners_zero() -> None:
    passes = SharedPasses()
    gate = threading.Event()
    results: list[int | None] = []

    def slow() -> int:
        gate.wait(5)
        return 7

    runner = threading.Thread(target=lambda: results.append(passes.join(slow)))
    runner.start()
    time.sleep(0.05)
    joiner = threading.Thread(target=lambda: results.append(passes.join(lambda: 3)))
    joiner.start()
    time.sleep(0.05)
    gate.set()
    runner.join()
    joiner.join()
    # The joiner arrived while the first pass ran, so it needed (and ran) the next one itself.
    assert sorted(results) == [3, 7]


def test_a_failed_pass_counts_for_nobody() -> None:
    """A caller and a waiter both need the pass after a running one; whichever of them runs it,
    the waiter returns only after a pass that succeeded (repeated: the order is the scheduler's)."""
    for _ in range(10):
        ran, returned = failed_pass_scenario()
        assert ran in (["first", "healthy"], ["first", "failed", "healthy"])
        assert returned == [len(ran)]
    with pytest.raises(RuntimeError):
        SharedPasses().join(failing([]))  # a pass of one's own reports its own failure


def failing(ran: list[str]) -> Callable[[], int]:
    def run() -> int:
        ran.append("failed")
        raise RuntimeError("database went away")

    return run


def failed_pass_scenario() -> tuple[list[str], list[int]]:
    passes = SharedPasses()
    gate = threading.Event()
    ran: list[str] = []
    returned: list[int] = []

    def blocking() -> int:
        gate.wait(5)
        ran.append("first")
        return 1

    def healthy() -> int:
        ran.append("healthy")
        return 1

    def fail_quietly() -> None:
        with contextlib.suppress(RuntimeError):
            passes.join(failing(ran))

    def wait_for_healthy() -> None:
        passes.join(healthy)
        returned.append(len(ran))

    first = threading.Thread(target=passes.join, args=(blocking,))
    first.start()
    time.sleep(0.02)
    others = [threading.Thread(target=fail_quietly), threading.Thread(target=wait_for_healthy)]
    for thread in others:
        thread.start()
    time.sleep(0.02)
    gate.set()
    for thread in [first, *others]:
        thread.join()
    return ran, returned


def test_a_pass_that_asks_for_a_pass_runs_it_itself() -> None:
    """Re-entrant: waiting for the pass one is running would hang forever."""
    passes = SharedPasses()
    inner: list[int | None] = []

    def outer() -> int:
        inner.append(passes.join(lambda: 5))
        return 1

    thread = threading.Thread(target=lambda: passes.join(outer), daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "a pass asking for a pass hung"
    assert inner == [5]

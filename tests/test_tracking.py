"""A follower's named position (``tracking.lock_position``) on the real PostgreSQL: created at 0,
held by one runner at a time; a runner that will not wait is told at once, even while the holder
has already moved the position and not yet committed."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from commine.persistence.store import EventStore
from commine.persistence.tracking import lock_position, save_position


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[EventStore]:
    from commine.persistence.engine import make_engine, migrate

    engine = make_engine(pg_url)
    migrate(engine)
    yield EventStore(engine)
    engine.dispose()


def other_runner(store: EventStore, *, wait: bool, name: str = "follower") -> tuple[threading.Thread, list[int | None]]:
    found: list[int | None] = []

    def run() -> None:
        with store.transaction() as conn:
            found.append(lock_position(conn, name, wait=wait))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, found


def test_a_new_position_starts_at_zero(pg_store: EventStore) -> None:
    with pg_store.transaction() as conn:
        assert lock_position(conn, "follower") == 0
        save_position(conn, "follower", 42)
    with pg_store.transaction() as conn:
        assert lock_position(conn, "follower") == 42


def test_a_runner_that_will_not_wait_is_told_at_once_while_the_holder_moves_the_position(
    pg_store: EventStore,
) -> None:
    with pg_store.transaction() as conn:
        lock_position(conn, "follower")
    with pg_store.transaction() as holder:
        assert lock_position(holder, "follower") == 0
        save_position(holder, "follower", 7)  # updated, not committed
        thread, found = other_runner(pg_store, wait=False)
        thread.join(timeout=10)
        # Before the fix the insert of the row it already had waited for this transaction to end.
        assert not thread.is_alive(), "lock_position(wait=False) waited for the holder"
        assert found == [None]
        waiting, seen = other_runner(pg_store, wait=True)
        waiting.join(timeout=0.5)
        assert waiting.is_alive() and seen == []  # a runner that waits, waits
    waiting.join(timeout=10)
    assert seen == [7]  # and then reads what the holder committed


def test_a_waiting_runner_gets_the_position_another_runner_created_meanwhile(pg_store: EventStore) -> None:
    """The row is created by another runner while this one waits: it gets a position, never None."""
    with pg_store.transaction() as creator:
        assert lock_position(creator, "fresh-follower") == 0  # created and held, not committed
        waiting, found = other_runner(pg_store, wait=True, name="fresh-follower")
        waiting.join(timeout=0.5)
        save_position(creator, "fresh-follower", 3)
    waiting.join(timeout=10)
    assert found == [3]


def test_a_bounded_follower_stops_at_its_bound_and_goes_on_once_the_bound_moves(pg_store: EventStore) -> None:
    from commine.handlers.commands import create_project
    from commine.persistence.tracking import follow

    for n in range(6):
        create_project(pg_store, f"bounded{n}", actor="test")
    last = pg_store.last_position()
    bound = [last - 3]
    windows: list[tuple[int, int]] = []

    def react(_conn: object, _events: object, start: int, end: int) -> None:
        windows.append((start, end))

    # Given a bound short of the log's end, the follower stops there...
    assert follow(pg_store, "bounded", react, batch_size=2, bound=lambda _conn: bound[0]) == last - 3
    assert windows[-1][1] == last - 3
    # ...and, the bound moved to the end, goes on from there to the end.
    windows.clear()
    bound[0] = last
    assert follow(pg_store, "bounded", react, batch_size=2, bound=lambda _conn: bound[0]) == 3
    assert windows == [(last - 3, last - 1), (last - 1, last)]

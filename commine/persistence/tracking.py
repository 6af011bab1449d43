"""Following the log: a named position, and the loop that reacts to what lies after it.

This is the seam every reaction to committed events plugs into: the read models follow the log
this way, and so will prediction (the models issue) and stream routing (the streams issue). A
follower's position moves in the same transaction as its database effects, so each event takes
effect exactly once; effects outside the database (publishing) happen at least once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from commine.persistence.engine import insert
from commine.persistence.schema import tracking
from commine.persistence.store import EventStore, StoredEvent

#: What a follower does with a window of the log (its events, and the positions after which it
#: starts and at which it ends), inside the transaction that moves its position.
Reaction = Callable[[Connection, list[StoredEvent], int, int], None]


def lock_position(conn: Connection, name: str, table: sa.Table = tracking, *, wait: bool = True) -> int | None:
    """The position named ``name``, row-locked until the transaction ends (0 the first time).

    The lock makes a second runner of the same handler wait instead of doing the same work twice;
    with ``wait=False`` it returns None at once when another runner holds the lock.
    """
    query = sa.select(table.c.position).where(table.c.name == name)
    # SQLite's BEGIN IMMEDIATE serialises writers already.
    sqlite = conn.dialect.name == "sqlite"
    locked = query if sqlite else query.with_for_update(skip_locked=not wait)
    position = conn.execute(locked).scalar()
    if position is None:
        # Missing, or (skipping locked rows) held by another runner: a plain read tells them
        # apart without waiting. The insert comes only for a missing row: on a row another
        # transaction is updating, INSERT ... ON CONFLICT waits for that transaction to end,
        # which made the "never waits" catch-up of every API read wait for a whole pass.
        if not wait and not sqlite and conn.execute(query).scalar() is not None:
            return None
        conn.execute(insert(conn, table).values(name=name, position=0).on_conflict_do_nothing())
        position = conn.execute(locked).scalar()
    return None if position is None else int(position)


def position_of(conn: Connection, name: str, table: sa.Table = tracking) -> int:
    """The position named ``name``, without a lock (0 before its first run)."""
    return int(conn.execute(sa.select(table.c.position).where(table.c.name == name)).scalar() or 0)


def save_position(conn: Connection, name: str, position: int, table: sa.Table = tracking) -> None:
    conn.execute(table.update().where(table.c.name == name).values(position=position))


def follow(
    store: EventStore,
    name: str,
    react: Reaction,
    *,
    table: sa.Table = tracking,
    skip_types: Collection[str] = (),
    batch_size: int = 2000,
    wait: bool = True,
    read_events: bool = True,
    bound: Callable[[Connection], int] | None = None,
) -> int | None:
    """React to every event after the position ``name``, a window at a time, until the end of the log.

    Returns how many positions the follower moved. Events of ``skip_types`` are not read (the
    position still moves past them). A second runner of the same follower waits on the row lock,
    or with ``wait=False`` returns None at once, leaving the work to the runner that has it.
    With ``read_events=False`` the reaction gets no events and reads its window itself.
    ``bound`` gives the last position the follower may reach for now (the read models'
    checkpoint, for a follower that reads them): it stops there, short of the log's end.
    """
    moved = 0
    while True:
        with store.transaction() as conn:
            position = lock_position(conn, name, table, wait=wait)
            if position is None:
                return None if moved == 0 else moved
            log_end = store.last_position(conn)
            last = log_end if bound is None else min(log_end, bound(conn))
            end = min(last, position + batch_size)
            if end <= position:
                return moved
            window = (
                list(
                    store.read_all(
                        position, to_position=end, exclude_types=skip_types, conn=conn, batch_size=batch_size
                    )
                )
                if read_events
                else []
            )
            react(conn, window, position, end)
            save_position(conn, name, end, table)
            moved += end - position
            # At the end of the log, and the reaction appended nothing (prediction appends its
            # own events): done, without another transaction on the lock only to find nothing
            # after the window, which cost a server's every write route a second turn on it.
            # At the bound short of the end: done for now, as the bound will not move meanwhile.
            done = end == last and (last < log_end or store.last_position(conn) == last)
        if done:
            return moved

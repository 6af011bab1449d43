"""Replay for auditors: rebuild every projection from the log in a fresh schema, and digest it.

The digest is a SHA-256 over every projection row in key order, with times in UTC and JSON in
canonical form, so the digest of a rebuild equals the live one exactly when their rows do.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from commine.persistence import projections
from commine.persistence.engine import is_sqlite, make_engine
from commine.persistence.schema import projection_metadata
from commine.persistence.store import EventStore


@dataclass(frozen=True)
class Digest:
    """Row counts and hashes per projection table, one hash over them all, and the log position
    the read models had reached."""

    tables: dict[str, tuple[int, str]]
    total: str
    position: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "digest": self.total,
            "position": self.position,
            "tables": {name: {"rows": rows, "sha256": digest} for name, (rows, digest) in self.tables.items()},
        }


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat()
    return value


def digest(engine: Engine) -> Digest:
    """Digest the read models as one consistent snapshot, even while workers keep writing.

    Each projection's rows and its checkpoint change in one transaction, so the snapshot is
    exactly the fold of the log up to the checkpoint it shows.
    """
    tables: dict[str, tuple[int, str]] = {}
    isolation = "SERIALIZABLE" if is_sqlite(engine) else "REPEATABLE READ"
    with engine.connect().execution_options(isolation_level=isolation) as conn, conn.begin():
        position = projections.checkpoint(conn)
        for table in projection_metadata.sorted_tables:
            sha = hashlib.sha256()
            count = 0
            query = sa.select(table).order_by(*table.primary_key.columns)
            for row in conn.execute(query):
                values = [_canonical(v) for v in row]
                sha.update(json.dumps(values, sort_keys=True, default=str).encode())
                sha.update(b"\n")
                count += 1
            tables[table.name] = (count, sha.hexdigest())
    total = hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()
    return Digest(tables, total, position)


@contextmanager
def fresh_schema(engine: Engine, *, keep: bool = False) -> Iterator[Engine]:
    """An engine whose projection tables live in a new, empty schema (a temporary file on SQLite)."""
    if is_sqlite(engine):
        folder = Path(tempfile.mkdtemp(prefix="commine-replay-"))
        target = make_engine(f"sqlite:///{folder / 'replay.db'}")
        try:
            projection_metadata.create_all(target)
            yield target
        finally:
            target.dispose()
            if not keep:
                for path in folder.iterdir():
                    path.unlink()
                folder.rmdir()
        return
    schema = f"replay_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    base = sa.create_engine(engine.url)
    target = base.execution_options(schema_translate_map={None: schema})
    try:
        projection_metadata.create_all(target)
        yield target
    finally:
        base.dispose()
        if not keep:
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


def replay(
    store: EventStore,
    *,
    until: datetime | None = None,
    to_position: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Digest:
    """Rebuild every projection from the log (up to ``until`` or ``to_position``) in a fresh schema."""
    with fresh_schema(store.engine) as target:
        projections.rebuild(store, target, until=until, to_position=to_position, progress=progress)
        return digest(target)


def verify(store: EventStore, *, progress: Callable[[int], None] | None = None) -> tuple[Digest, Digest]:
    """The live read models' digest, and that of a rebuild up to the very position they show."""
    projections.catch_up(store)
    live = digest(store.engine)
    return live, replay(store, to_position=live.position, progress=progress)

"""Key rotation without downtime: re-wrap data keys under a new master key, re-encrypt a source.

*Master key rotation* puts the new key first in ``COMMINE_MASTER_KEY`` (or the key file), keeps the
old one after it, and runs ``rotate_master``: every live data key is unwrapped with the old key and
wrapped with the new one, in one short transaction (there is one row per source and key version).
Processes still configured with the old key alone keep reading until they restart, because the old
key stays valid until it is removed from the configuration.

*Source key rotation* adds a new version of the source's data key (new writes use it at once) and
re-encrypts the source's stored records under it in the background, in batches, each batch
committed together with the rotation's progress in ``key_rotations``: a rotation killed midway
resumes after the last committed batch. Old key versions are kept, so every ciphertext still opens
during and after the rotation (each names its key version in its header). A record stored before
content hashes were keyed gets its keyed hash on the way (in the log and the read models), so the
rotation is also how an older deployment re-keys its hashes.

Re-encrypting event rows is a storage-level operation on an append-only log. Only the sealed part
of a ``MessageIngested`` comment changes (new nonce, new key version, same plaintext), and a plain
content hash becomes the keyed one; the event id, position, type, versions, times and every other
clear field stay exactly as they were, so positions, checkpoints, projections and the relayed
history are unaffected and replay gives the same state.
On PostgreSQL each batch's UPDATE holds a row lock mode that the appenders' ``LOCK TABLE events IN
EXCLUSIVE MODE`` waits for, so appends pause for at most one batch (about 500 records) at a time.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from commine.domain.comment import Hasher, content_hash
from commine.persistence import schema as t
from commine.persistence.encryption import (
    INGESTED,
    SEALED,
    Cipher,
    is_sealed,
    sealed_version,
    source_owner,
)


@dataclass(frozen=True)
class Rotation:
    """A source key rotation: the key version records are re-encrypted under, and how far it got."""

    owner: str
    version: int
    position: int
    records: int
    finished: bool
    #: Content hashes re-keyed by this run (a plain SHA-256 of older versions becomes the keyed one).
    rehashed: int = 0


def rotate_master(engine: Engine, cipher: Cipher) -> int:
    """Re-wrap every live data key with the current (first configured) master key; how many."""
    with engine.begin() as conn:
        return cipher.keyring.rewrap(conn)


def start_source_rotation(engine: Engine, cipher: Cipher, source_id: str) -> Rotation:
    """The unfinished rotation of the source if there is one (to resume), else a new key version and
    a rotation towards it."""
    owner = source_owner(source_id)
    r = t.key_rotations
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(r).where(r.c.owner == owner, r.c.finished_at.is_(None)).order_by(r.c.version.desc()).limit(1)
        ).first()
        if row is not None:
            return Rotation(owner, row.version, row.position, row.records, False)
        cipher.keyring.current(conn, owner)  # a purged source raises ContentPurged here
        version = cipher.keyring.add_version(conn, owner)
        now = datetime.now(UTC)
        conn.execute(r.insert().values(owner=owner, version=version, position=0, records=0, started_at=now))
    return Rotation(owner, version, 0, 0, False)


def records_of(engine: Engine, source_id: str) -> int:
    """How many ``MessageIngested`` records the source has (the total a progress bar shows)."""
    e = t.events
    query = sa.select(sa.func.count()).where(e.c.type == INGESTED, e.c.payload["source_id"].as_string() == source_id)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def rotate_source(
    engine: Engine,
    cipher: Cipher,
    source_id: str,
    *,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> Rotation:
    """Re-encrypt every record of the source under its newest key version; resumes an unfinished run.

    ``progress(n)`` is called as records are re-encrypted (before their batch commits).
    """
    rotation = start_source_rotation(engine, cipher, source_id)
    while not rotation.finished:
        with engine.begin() as conn:
            rotation = _next_batch(conn, cipher, source_id, rotation, batch_size, progress)
    return rotation


def _next_batch(
    conn: Connection,
    cipher: Cipher,
    source_id: str,
    rotation: Rotation,
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> Rotation:
    e, r = t.events, t.key_rotations
    rows = conn.execute(
        sa.select(e.c.position, e.c.event_id, e.c.payload)
        .where(
            e.c.position > rotation.position, e.c.type == INGESTED, e.c.payload["source_id"].as_string() == source_id
        )
        .order_by(e.c.position)
        .limit(batch_size)
    ).all()
    keys = cipher.keyring.load(conn, [rotation.owner])
    key = keys.get(rotation.owner, rotation.version, f"rotation of {rotation.owner}")
    hasher = cipher.content_hasher(conn, source_id)
    done = rehashed = 0
    for row in rows:
        if _needs_rotation(row, rotation.version):
            opened = (
                cipher.open_payload(keys, row.event_id, row.payload, strict=True)
                if is_sealed(row.payload)
                else row.payload
            )
            if hasher is not None and (keyed := _keyed_hash(conn, opened, hasher)) is not None:
                opened = {**opened, "content_hash": keyed}
                rehashed += 1
            sealed = cipher.seal_payload(row.event_id, opened, rotation.version, key)
            conn.execute(e.update().where(e.c.position == row.position).values(payload=sealed))
            done += 1
        if progress:
            progress(1)
    position = rows[-1].position if rows else rotation.position
    finished = len(rows) < batch_size
    values: dict[str, Any] = {"position": position, "records": rotation.records + done}
    if finished:
        values["finished_at"] = datetime.now(UTC)
    conn.execute(r.update().where(r.c.owner == rotation.owner, r.c.version == rotation.version).values(**values))
    return Rotation(
        rotation.owner, rotation.version, position, rotation.records + done, finished, rotation.rehashed + rehashed
    )


def _keyed_hash(conn: Connection, payload: dict[str, Any], hasher: Hasher) -> str | None:
    """The keyed content hash of a message stored with the plain SHA-256 of older versions (None for
    one already keyed), written into the read models that hold the plain one too.

    The plain hash of a known text would confirm that a source holds it; the keyed one confirms
    nothing without the source's hash key, which the purge destroys.
    """
    comment = payload["comment"]
    plain = content_hash(comment)
    if payload["content_hash"] != plain:
        return None
    keyed = content_hash(comment, hasher)
    for table in (t.messages, t.embeddings):
        conn.execute(
            table.update()
            .where(
                table.c.source_id == payload["source_id"],
                table.c.comment_id == payload["comment_id"],
                table.c.content_hash == plain,
            )
            .values(content_hash=keyed)
        )
    return keyed


def _needs_rotation(row: Any, version: int) -> bool:
    if not is_sealed(row.payload):
        return True
    blob = base64.b64decode(row.payload["comment"][SEALED])
    return sealed_version(blob, f"event {row.event_id}") != version


def status(engine: Engine) -> dict[str, Any]:
    """Per key owner: its key versions (master key id, or destroyed) and its rotations."""
    owners: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for row in conn.execute(sa.select(t.data_keys).order_by(t.data_keys.c.owner, t.data_keys.c.version)):
            entry = owners.setdefault(row.owner, {"versions": [], "rotations": []})
            entry["versions"].append(
                {
                    "version": row.version,
                    "master_key_id": row.master_key_id,
                    "destroyed": row.wrapped_key is None,
                    "created_at": row.created_at.isoformat(),
                }
            )
        r = t.key_rotations
        for row in conn.execute(sa.select(r).order_by(r.c.owner, r.c.version)):
            entry = owners.setdefault(row.owner, {"versions": [], "rotations": []})
            entry["rotations"].append(
                {
                    "version": row.version,
                    "position": row.position,
                    "records": row.records,
                    "finished": row.finished_at is not None,
                }
            )
    return owners

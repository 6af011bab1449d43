"""Encryption at rest: envelope encryption of customer text with AES-GCM, per-source data keys.

Every source (and every dataset, for its model artifacts) has its own 256-bit *data key*, kept in
the ``data_keys`` table wrapped by a *master key* from the configuration (``COMMINE_MASTER_KEY``,
``COMMINE_MASTER_KEY_FILE``, or a generated ``<home>/master.key``). The master key never touches
the database; a ``KeyWrapper`` is the seam where a KMS would wrap and unwrap instead.

A sealed value is ``header + nonce + ciphertext + tag``:

* header, 5 bytes: format version (1), then the data key version (big-endian uint32), so a record
  sealed before a key rotation still names the key that opens it;
* nonce, 12 bytes (96 bits, random per seal);
* ciphertext followed by its 16-byte GCM tag (what ``cryptography``'s ``AESGCM`` returns; the
  eventsourcing library stores ``nonce + tag + ct``, the same parts in another order).

The associated data is the header plus the record's identity (event id, source id, comment id for
an event; artifact hash and owner for an artifact), so a ciphertext copied onto another record, or
one flipped bit, fails authentication with ``AuthenticationFailed`` naming the record.

Only the customer text is sealed: in a ``MessageIngested`` the comment keeps ``id``, ``timestamp``
and ``thread_id`` in clear and everything else (messages, addresses, subjects, bodies, user
properties, attachments) moves into ``comment["sealed"]`` (base64). The log keeps its shape, and
the projections' fast path reads the clear fields straight from the stored JSON.

Content hashes (``MessageIngested.content_hash``, what re-sync compares) are HMAC-SHA256 under the
source's own *hash key* (owner ``hash:source:<id>``), so a hash of a known text confirms nothing.

Crypto-shredding: ``SourcePurged`` destroys the source's data keys and hash key in the purge's own transaction
(the rows stay, emptied, so nothing ever creates a key for that source again, and replay, which
never appends, cannot bring one back). Reads then give a placeholder comment
(``{"id", "timestamp", "purged": True}``) or, when asked to be strict, raise ``ContentPurged``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import struct
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import orjson
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.engine import Connection, Engine

from commine.persistence import schema as t
from commine.persistence.engine import insert
from commine.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: Format version of a sealed value (the first header byte).
FORMAT = 1
HEADER = struct.Struct(">BI")
NONCE_BYTES = 12
KEY_BYTES = 32
#: The key of a sealed comment's ciphertext, and the comment fields that stay in clear.
SEALED = "sealed"
CLEAR_COMMENT_FIELDS = ("id", "timestamp", "thread_id")
#: The marker a placeholder comment carries once its source was purged.
PURGED = "purged"
INGESTED = "MessageIngested"


class EncryptionError(Exception):
    """Customer text could not be sealed or opened."""


class AuthenticationFailed(EncryptionError):
    """A ciphertext did not authenticate: it was altered, or copied from another record."""


class ContentPurged(EncryptionError):
    """The content was crypto-shredded: its source was purged and its data key destroyed."""


class MissingKey(EncryptionError):
    """No data key (or no master key able to unwrap it) for a sealed record."""


def source_owner(source_id: str) -> str:
    return f"source:{source_id}"


def dataset_owner(dataset_id: str) -> str:
    return f"dataset:{dataset_id}"


def hash_owner(source_id: str) -> str:
    """The owner of a source's *hash key*, which keys its messages' content hashes (HMAC-SHA256).

    A key of its own, not a data key version: rotating the data key must not change the hashes
    (re-syncing an unchanged message stays ``unchanged``), and the purge destroys it with the data
    key, so a hash of known text can no longer confirm what a purged message said.
    """
    return f"hash:source:{source_id}"


# --- master keys ------------------------------------------------------------------------------------------------------


class KeyWrapper(Protocol):
    """Wraps and unwraps data keys: the local master keys here, a KMS client elsewhere."""

    @property
    def current_id(self) -> str:
        """The id of the key that wraps new data keys."""
        ...

    def key_ids(self) -> list[str]: ...

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        """(master key id, wrapped key), bound to ``context``."""
        ...

    def unwrap(self, key_id: str, wrapped: bytes, context: bytes) -> bytes: ...


def master_key_id(key: bytes) -> str:
    """A short, stable name for a master key that reveals nothing of it."""
    return hashlib.sha256(b"commine master key id|" + key).hexdigest()[:16]


class LocalKeyWrapper:
    """Master keys held in this process (from the environment or a file), newest first."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one master key is needed")
        self._keys = {master_key_id(key): AESGCM(key) for key in keys}
        self._order = [master_key_id(key) for key in keys]

    @property
    def current_id(self) -> str:
        return self._order[0]

    def key_ids(self) -> list[str]:
        return list(self._order)

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        return self.current_id, nonce + self._keys[self.current_id].encrypt(nonce, data_key, context)

    def unwrap(self, key_id: str, wrapped: bytes, context: bytes) -> bytes:
        master = self._keys.get(key_id)
        if master is None:
            raise MissingKey(
                f"a data key ({context.decode()}) is wrapped by master key {key_id}, which is not configured "
                f"(configured: {', '.join(self._order)}); add it to COMMINE_MASTER_KEY or the key file"
            )
        try:
            return master.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
        except InvalidTag:
            raise AuthenticationFailed(f"the wrapped data key {context.decode()} failed authentication") from None


def parse_master_keys(text: str, where: str) -> list[bytes]:
    """Base64 keys of 32 bytes, separated by commas or new lines, newest first."""
    keys = []
    for number, entry in enumerate(text.replace(",", "\n").split(), start=1):
        try:
            key = base64.b64decode(entry.replace("-", "+").replace("_", "/"), validate=True)
        except binascii.Error:
            key = b""
        if len(key) != KEY_BYTES:
            raise ValueError(f"{where}: key {number} is not the base64 of {KEY_BYTES} bytes")
        keys.append(key)
    if not keys:
        raise ValueError(f"{where}: no master key in it")
    return keys


def new_master_key() -> str:
    """A fresh master key, base64, as ``COMMINE_MASTER_KEY`` and the key file take it."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def master_keys(settings: Settings) -> list[bytes]:
    """The configured master keys: ``COMMINE_MASTER_KEY``, else the key file, else ``<home>/master.key``.

    The last is generated on first use (mode 0600), so the embedded demo and a single-machine server
    need no setup; a deployment of several machines must share one key through the variable or file.
    """
    if settings.master_key:
        return parse_master_keys(settings.master_key, "COMMINE_MASTER_KEY")
    path = settings.master_key_file
    if path is None:
        path = settings.default_master_key_file
        if not path.exists():
            _generate_key_file(path, server=not settings.embedded)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the master key file {path}: {exc.strerror}") from None
    if path.stat().st_mode & 0o077:
        log.warning("master key file %s is readable by others than its owner; chmod 600 it", path)
    return parse_master_keys(text, str(path))


def _generate_key_file(path: Path, *, server: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first; read theirs
        return
    with os.fdopen(fd, "w") as out:
        out.write(new_master_key() + "\n")
    if server:
        log.warning(
            "no master key configured: generated %s (mode 0600). Every process that reads this database "
            "needs it; set COMMINE_MASTER_KEY or COMMINE_MASTER_KEY_FILE on each, and back it up: "
            "without it the stored text cannot be read",
            path,
        )
    else:
        log.info("generated the master key file %s", path)


# --- data keys ----------------------------------------------------------------------------------------------------


@dataclass
class Keys:
    """The data keys of some owners, every version: an ``AESGCM``, or None where it was destroyed."""

    versions: dict[str, dict[int, AESGCM | None]] = field(default_factory=dict)

    def get(self, owner: str, version: int, record: str) -> AESGCM:
        found = self.versions.get(owner)
        if found is None:
            raise MissingKey(f"{record}: there is no data key for {owner}")
        if version not in found:
            raise MissingKey(f"{record}: {owner} has no data key version {version}")
        key = found[version]
        if key is None:
            raise ContentPurged(f"{record}: the content of {owner} was purged (its data key is destroyed)")
        return key

    def destroyed(self, owner: str) -> bool:
        found = self.versions.get(owner)
        return bool(found) and all(key is None for key in found.values())


def _key_context(owner: str, version: int) -> bytes:
    return f"data-key|{owner}|{version}".encode()


def _cache_key(row: Any) -> tuple[str, int, str, bytes]:
    # By the exact wrapped bytes read from the table: a row rolled back, re-wrapped or destroyed reads
    # differently, so a cache can never hand out a key the table no longer has.
    return (row.owner, row.version, row.master_key_id, bytes(row.wrapped_key))


class Keyring:
    """Creates, loads, rotates and destroys data keys in ``data_keys``, wrapped by a ``KeyWrapper``."""

    def __init__(self, wrapper: KeyWrapper) -> None:
        self.wrapper = wrapper
        # Both caches by ``_cache_key``: ciphers for data keys, raw bytes for every key (hash keys too).
        self._unwrapped: dict[tuple[str, int, str, bytes], AESGCM] = {}
        self._raw: dict[tuple[str, int, str, bytes], bytes] = {}

    def load(self, conn: Connection, owners: Iterable[str]) -> Keys:
        keys = Keys()
        wanted = sorted(set(owners))
        for start in range(0, len(wanted), 1000):
            query = sa.select(t.data_keys).where(t.data_keys.c.owner.in_(wanted[start : start + 1000]))
            for row in conn.execute(query):
                keys.versions.setdefault(row.owner, {})[row.version] = self._open(row)
        return keys

    def _open(self, row: Any) -> AESGCM | None:
        if row.wrapped_key is None:
            return None
        cache_key = _cache_key(row)
        key = self._unwrapped.get(cache_key)
        if key is None:
            key = self._unwrapped[cache_key] = AESGCM(self._unwrap(row))
        return key

    def _unwrap(self, row: Any) -> bytes:
        """A stored key's raw bytes, unwrapped by the master key once per wrapped value."""
        cache_key = _cache_key(row)
        raw = self._raw.get(cache_key)
        if raw is None:
            raw = self._raw[cache_key] = self.wrapper.unwrap(
                row.master_key_id, bytes(row.wrapped_key), _key_context(row.owner, row.version)
            )
        return raw

    def secret(self, conn: Connection, owner: str) -> bytes:
        """The raw bytes of ``owner``'s single-version key (created on first use): an HMAC key, not a cipher."""
        query = sa.select(t.data_keys).where(t.data_keys.c.owner == owner, t.data_keys.c.version == 1)
        row = conn.execute(query).first()
        if row is None:
            self.add_version(conn, owner, first=True)
            row = conn.execute(query).one()
        if row.wrapped_key is None:
            raise ContentPurged(f"{owner} was purged: its key is destroyed")
        return self._unwrap(row)

    def current(self, conn: Connection, owner: str, *, create: bool = True) -> tuple[int, AESGCM]:
        """The newest version of ``owner``'s data key (created if it has none and ``create``)."""
        versions = self.load(conn, [owner]).versions.get(owner)
        if not versions:
            if not create:
                raise MissingKey(f"there is no data key for {owner}")
            self.add_version(conn, owner, first=True)
            versions = self.load(conn, [owner]).versions[owner]
        version = max(versions)
        key = versions[version]
        if key is None:
            raise ContentPurged(f"{owner} was purged: its data key is destroyed, nothing can be sealed for it")
        return version, key

    def add_version(self, conn: Connection, owner: str, *, first: bool = False) -> int:
        """Store a new data key for ``owner``; its version is one past the newest (1 for a first key).

        A concurrent first key for the same owner is absorbed (``ON CONFLICT DO NOTHING``): both
        writers then read back the one that won.
        """
        newest = conn.execute(sa.select(sa.func.max(t.data_keys.c.version)).where(t.data_keys.c.owner == owner))
        version = (newest.scalar() or 0) + 1
        if first and version != 1:
            return version - 1
        key_id, wrapped = self.wrapper.wrap(AESGCM.generate_key(bit_length=256), _key_context(owner, version))
        row = {
            "owner": owner,
            "version": version,
            "master_key_id": key_id,
            "wrapped_key": wrapped,
            "created_at": datetime.now(UTC),
        }
        statement = insert(conn, t.data_keys).values(row)
        conn.execute(statement.on_conflict_do_nothing() if first else statement)
        return version

    def destroy(self, conn: Connection, owner: str) -> int:
        """Crypto-shred ``owner``: every version's key material is erased; the rows stay as tombstones."""
        now = datetime.now(UTC)
        erased = conn.execute(
            t.data_keys.update()
            .where(t.data_keys.c.owner == owner, t.data_keys.c.wrapped_key.is_not(None))
            .values(wrapped_key=None, master_key_id=None, destroyed_at=now)
        ).rowcount
        tombstone = {"owner": owner, "version": 1, "created_at": now, "destroyed_at": now}
        conn.execute(insert(conn, t.data_keys).values(tombstone).on_conflict_do_nothing())
        return erased

    def rewrap(self, conn: Connection) -> int:
        """Wrap every live data key with the current master key; how many were re-wrapped."""
        rows = conn.execute(
            sa.select(t.data_keys).where(
                t.data_keys.c.wrapped_key.is_not(None), t.data_keys.c.master_key_id != self.wrapper.current_id
            )
        ).all()
        for row in rows:
            context = _key_context(row.owner, row.version)
            raw = self.wrapper.unwrap(row.master_key_id, bytes(row.wrapped_key), context)
            key_id, wrapped = self.wrapper.wrap(raw, context)
            conn.execute(
                t.data_keys.update()
                .where(t.data_keys.c.owner == row.owner, t.data_keys.c.version == row.version)
                .values(master_key_id=key_id, wrapped_key=wrapped)
            )
        return len(rows)


def shred_source(conn: Connection, keyring: Keyring, source_id: str) -> None:
    """Crypto-shred a source: destroy its data keys and its hash key, and delete what was computed from
    its text and is kept outside the read models (its embeddings), which no key protects."""
    keyring.destroy(conn, source_owner(source_id))
    keyring.destroy(conn, hash_owner(source_id))
    conn.execute(t.embeddings.delete().where(t.embeddings.c.source_id == source_id))


# --- sealing --------------------------------------------------------------------------------------------------------


def seal(key: AESGCM, version: int, plaintext: bytes, identity: bytes) -> bytes:
    header = HEADER.pack(FORMAT, version)
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + key.encrypt(nonce, plaintext, header + b"|" + identity)


def sealed_version(blob: bytes, record: str) -> int:
    """The data key version a sealed value names."""
    if len(blob) < HEADER.size + NONCE_BYTES + 16:
        raise AuthenticationFailed(f"{record} failed authentication: its ciphertext is truncated")
    fmt, version = HEADER.unpack_from(blob)
    if fmt != FORMAT:
        raise AuthenticationFailed(f"{record} failed authentication: unknown ciphertext format {fmt}")
    return int(version)


def unseal(key: AESGCM, blob: bytes, identity: bytes, record: str) -> bytes:
    header, nonce, body = blob[: HEADER.size], blob[HEADER.size : HEADER.size + NONCE_BYTES], blob[HEADER.size + 12 :]
    try:
        return key.decrypt(nonce, body, header + b"|" + identity)
    except InvalidTag:
        raise AuthenticationFailed(
            f"{record} failed authentication: its ciphertext was altered, or copied from another record"
        ) from None


def _comment_identity(event_id: UUID | str, payload: Mapping[str, Any]) -> bytes:
    return f"event|{event_id}|{payload['source_id']}|{payload['comment_id']}".encode()


def _record(event_id: UUID | str, payload: Mapping[str, Any]) -> str:
    return f"event {event_id} (source {payload['source_id']}, comment {payload['comment_id']!r})"


def is_sealed(payload: Mapping[str, Any]) -> bool:
    comment = payload.get("comment")
    return isinstance(comment, dict) and SEALED in comment


def is_purged(comment: Mapping[str, Any]) -> bool:
    """Whether ``comment`` is the placeholder of a crypto-shredded one."""
    return bool(comment.get(PURGED))


def purged_message(what: str, moment: datetime | None = None) -> str:
    """What a read of crypto-shredded content says (the API with HTTP 410 Gone, the CLI as its error)."""
    at = f" on {moment.isoformat(timespec='seconds')}" if moment is not None else ""
    return f"{what} was purged{at}: its content was destroyed (crypto-shredded) and can no longer be read"


class Cipher:
    """Seals the customer text of payloads on append and opens it on read.

    ``enabled=False`` stops sealing new events; sealed ones still open while their keys exist.
    """

    def __init__(self, keyring: Keyring, *, enabled: bool = True) -> None:
        self.keyring = keyring
        self.enabled = enabled

    # -- writing --

    def on_append(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Seal the rows' customer text in place, and follow the key lifecycle events in the batch.

        ``SourceCreated`` creates the source's data key and ``SourcePurged`` destroys it, in the
        append's transaction: a purge that fails to commit destroys nothing.
        """
        for row in rows:
            if row["type"] == "SourcePurged":
                shred_source(conn, self.keyring, row["payload"]["source_id"])
            elif row["type"] == "SourceCreated" and self.enabled:
                self.keyring.current(conn, source_owner(row["payload"]["source_id"]))
        if not self.enabled:
            return
        ingested = [row for row in rows if row["type"] == INGESTED and not is_sealed(row["payload"])]
        current: dict[str, tuple[int, AESGCM]] = {}
        for row in ingested:
            owner = source_owner(row["payload"]["source_id"])
            if owner not in current:
                current[owner] = self.keyring.current(conn, owner)
            row["payload"] = self.seal_payload(row["event_id"], row["payload"], *current[owner])

    @staticmethod
    def seal_payload(event_id: UUID | str, payload: dict[str, Any], version: int, key: AESGCM) -> dict[str, Any]:
        comment = payload["comment"]
        clear = {name: comment[name] for name in CLEAR_COMMENT_FIELDS if name in comment}
        secret = {name: value for name, value in comment.items() if name not in CLEAR_COMMENT_FIELDS}
        blob = seal(key, version, orjson.dumps(secret), _comment_identity(event_id, payload))
        return {**payload, "comment": {**clear, SEALED: base64.b64encode(blob).decode()}}

    def content_hasher(self, conn: Connection, source_id: str) -> Callable[[bytes], str] | None:
        """HMAC-SHA256 under the source's hash key, hex: what ``MessageIngested.content_hash`` holds.

        Keyed, so a content hash in the log or the read models confirms nothing about a known text
        to whoever lacks the key, and nothing at all once the purge has destroyed it. None (the plain
        SHA-256) with encryption off: the text it hashes is stored in clear beside it anyway.
        """
        if not self.enabled:
            return None
        key = self.keyring.secret(conn, hash_owner(source_id))
        return lambda canonical: hmac.digest(key, canonical, "sha256").hex()  # one-shot, in OpenSSL

    # -- reading --

    def keys_for(self, conn: Connection, payloads: Iterable[tuple[str, Mapping[str, Any]]]) -> Keys:
        """The data keys the sealed ones among (type, payload) pairs need, in one query."""
        owners = {
            source_owner(payload["source_id"])
            for type_name, payload in payloads
            if type_name == INGESTED and is_sealed(payload)
        }
        return self.keyring.load(conn, owners) if owners else Keys()

    def open_payload(
        self, keys: Keys, event_id: UUID | str, payload: dict[str, Any], *, strict: bool = False
    ) -> dict[str, Any]:
        """``payload`` with its comment opened; a purged one becomes a placeholder (or, strict, raises)."""
        comment = payload["comment"]
        record = _record(event_id, payload)
        try:
            blob = base64.b64decode(comment[SEALED], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise AuthenticationFailed(f"{record} failed authentication: its ciphertext is not base64") from None
        clear = {name: comment[name] for name in CLEAR_COMMENT_FIELDS if name in comment}
        try:
            key = keys.get(source_owner(payload["source_id"]), sealed_version(blob, record), record)
        except ContentPurged:
            if strict:
                raise
            return {**payload, "comment": {**clear, PURGED: True}}
        secret = orjson.loads(unseal(key, blob, _comment_identity(event_id, payload), record))
        return {**payload, "comment": {**clear, **secret}}

    def open_comments(
        self, conn: Connection, records: Sequence[tuple[UUID | str, dict[str, Any]]], *, strict: bool = False
    ) -> list[dict[str, Any]]:
        """The comments of ``MessageIngested`` payloads given with their event ids, opened."""
        keys = self.keys_for(conn, ((INGESTED, payload) for _, payload in records))
        return [
            self.open_payload(keys, event_id, payload, strict=strict)["comment"]
            if is_sealed(payload)
            else payload["comment"]
            for event_id, payload in records
        ]

    # -- artifacts --

    def seal_artifact(self, conn: Connection, artifact_hash: str, data: bytes, owner: str) -> bytes:
        """``data`` sealed with ``owner``'s key, the owner's name in front (an artifact may outlive the
        dataset that trained it as another's model, so it says whose key opens it)."""
        if not self.enabled:
            return data
        version, key = self.keyring.current(conn, owner)
        name = owner.encode()
        return (
            ARTIFACT_MAGIC
            + bytes([len(name)])
            + name
            + seal(key, version, data, _artifact_identity(artifact_hash, owner))
        )

    def open_artifact(self, conn: Connection, artifact_hash: str, data: bytes) -> bytes:
        if not data.startswith(ARTIFACT_MAGIC):
            return data
        size = data[len(ARTIFACT_MAGIC)]
        start = len(ARTIFACT_MAGIC) + 1
        owner, blob = data[start : start + size].decode(), data[start + size :]
        record = f"model artifact {artifact_hash} ({owner})"
        key = self.keyring.load(conn, [owner]).get(owner, sealed_version(blob, record), record)
        return unseal(key, blob, _artifact_identity(artifact_hash, owner), record)


#: The first bytes of a sealed artifact (a fastText or numpy artifact never starts so).
ARTIFACT_MAGIC = b"CMNSEAL1"


def _artifact_identity(artifact_hash: str, owner: str) -> bytes:
    return f"artifact|{artifact_hash}|{owner}".encode()


# --- which cipher a connection uses ---------------------------------------------------------------------------------

_ATTACHED: weakref.WeakKeyDictionary[Engine, Cipher] = weakref.WeakKeyDictionary()


def cipher_for(settings: Settings) -> Cipher:
    """The cipher the settings describe (master keys read, or the key file generated, now)."""
    return Cipher(Keyring(LocalKeyWrapper(master_keys(settings))), enabled=settings.encryption)


_DEFAULTS: dict[tuple[Any, ...], Cipher] = {}


def default_cipher() -> Cipher:
    """The cipher of the environment's settings, built once per distinct configuration."""
    settings = load_settings()
    config = (settings.encryption, settings.master_key, settings.master_key_file, settings.home, settings.embedded)
    cipher = _DEFAULTS.get(config)
    if cipher is None:
        cipher = _DEFAULTS[config] = cipher_for(settings)
    return cipher


def attach(engine: Engine, cipher: Cipher) -> None:
    """Make ``cipher`` the one every reader on ``engine`` uses (the event store attaches its own)."""
    _ATTACHED[engine] = cipher


def cipher_of(conn: Connection | Engine) -> Cipher:
    engine = conn if isinstance(conn, Engine) else conn.engine
    cipher = _ATTACHED.get(engine)
    return cipher if cipher is not None else default_cipher()


def open_comments(
    conn: Connection, records: Sequence[tuple[UUID | str, dict[str, Any]]], *, strict: bool = False
) -> list[dict[str, Any]]:
    """The comments of ``MessageIngested`` payloads (with their event ids), opened with ``conn``'s cipher.

    Every reader that selects payloads straight from ``events`` goes through here, so none reads
    ciphertext as text.
    """
    return cipher_of(conn).open_comments(conn, records, strict=strict)

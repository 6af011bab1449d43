"""What the models read and keep: a dataset's messages and annotations, embeddings, artifacts.

Reads come from the read models (the messages of a dataset's sources, its annotations) and from
the log (comment text lives only in the ``MessageIngested`` events). Embeddings and artifacts are
stored here, outside the read models: both are costly to compute and neither is rebuilt on replay.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray
from sqlalchemy.engine import Connection

from commine.ml.text import comment_text
from commine.persistence import projections
from commine.persistence import schema as t
from commine.persistence.encryption import cipher_of, dataset_owner, open_comments
from commine.persistence.engine import insert
from commine.persistence.store import EventStore
from commine.persistence.tracking import Reaction, follow

#: Rows per query when reading by a list of keys.
CHUNK = 1000


@dataclass(frozen=True)
class MessageRow:
    source_id: str
    comment_id: str
    position: int
    content_hash: str

    @property
    def uid(self) -> str:
        """The Communications Mining uid: ``<source id>.<comment id>``."""
        return f"{self.source_id}.{self.comment_id}"


def dataset_messages(conn: Connection, dataset_id: str) -> list[MessageRow]:
    """Every live message of the dataset's sources, in a stable order."""
    m, ds = t.messages, t.dataset_sources
    query = (
        sa.select(m.c.source_id, m.c.comment_id, m.c.position, m.c.content_hash)
        .join(ds, ds.c.source_id == m.c.source_id)
        .where(ds.c.dataset_id == dataset_id, m.c.deleted.is_(False))
        .order_by(m.c.source_id, m.c.comment_id)
    )
    return [MessageRow(*row) for row in conn.execute(query)]


def annotations(conn: Connection, dataset_id: str) -> dict[str, list[str]]:
    """Assigned label names per reviewed uid (a message is reviewed when it has any label decision)."""
    a = t.annotations
    rows = conn.execute(sa.select(a.c.uid, a.c.assigned, a.c.dismissed).where(a.c.dataset_id == dataset_id))
    return {uid: [entry["name"] for entry in assigned] for uid, assigned, dismissed in rows if assigned or dismissed}


def label_names(conn: Connection, dataset_id: str) -> list[str]:
    query = sa.select(t.labels.c.name).where(t.labels.c.dataset_id == dataset_id).order_by(t.labels.c.name)
    return list(conn.execute(query).scalars())


def comments(conn: Connection, positions: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The comment of each ``MessageIngested`` event, by log position, its text opened."""
    out: dict[int, dict[str, Any]] = {}
    e = t.events
    for chunk in _chunks(list(positions)):
        rows = conn.execute(sa.select(e.c.position, e.c.event_id, e.c.payload).where(e.c.position.in_(chunk))).all()
        opened = open_comments(conn, [(row.event_id, row.payload) for row in rows])
        out.update((row.position, comment) for row, comment in zip(rows, opened, strict=True))
    return out


def texts(conn: Connection, rows: Sequence[MessageRow]) -> list[str]:
    by_position = comments(conn, [row.position for row in rows])
    return [comment_text(by_position[row.position]) for row in rows]


def load_embeddings(
    conn: Connection, rows: Sequence[MessageRow], encoder: str, dim: int, *, whole_sources: bool = False
) -> NDArray[np.float32]:
    """One row per message; NaN where no embedding of the message's current content is stored.

    ``whole_sources``: ``rows`` are (nearly) all of their sources' messages, as for a whole dataset, so
    each source's vectors are read in one pass rather than by IN lists of ids (about 400 queries at
    100,000 messages, 100 s here on a freshly loaded table, against 2.4 s).
    """
    out = np.full((len(rows), dim), np.nan, dtype=np.float32)
    index = {(row.source_id, row.comment_id): i for i, row in enumerate(rows)}
    e = t.embeddings
    by_source: dict[str, list[str]] = {}
    for row in rows:
        by_source.setdefault(row.source_id, []).append(row.comment_id)
    for source_id, ids in by_source.items():
        of_source = sa.select(e.c.comment_id, e.c.content_hash, e.c.vector).where(
            e.c.source_id == source_id, e.c.encoder == encoder
        )
        whole = whole_sources and len(ids) > CHUNK
        queries = [of_source] if whole else [of_source.where(e.c.comment_id.in_(chunk)) for chunk in _chunks(ids)]
        for query in queries:
            for comment_id, content_hash, vector in conn.execute(query):
                i = index.get((source_id, comment_id))
                if i is not None and rows[i].content_hash == content_hash:
                    out[i] = np.frombuffer(vector, dtype=np.float32)
    return out


def save_embeddings(conn: Connection, rows: Sequence[MessageRow], encoder: str, vectors: NDArray[np.float32]) -> None:
    records = [
        {
            "source_id": row.source_id,
            "comment_id": row.comment_id,
            "encoder": encoder,
            "content_hash": row.content_hash,
            "vector": np.ascontiguousarray(vector, dtype=np.float32).tobytes(),
        }
        for row, vector in zip(rows, vectors, strict=True)
    ]
    keys = ["source_id", "comment_id", "encoder"]
    for chunk in _chunks(records):
        statement = insert(conn, t.embeddings)
        update = {"content_hash": statement.excluded.content_hash, "vector": statement.excluded.vector}
        conn.execute(statement.on_conflict_do_update(index_elements=keys, set_=update), chunk)


def save_artifact(conn: Connection, artifact_hash: str, data: bytes, *, dataset_id: str | None = None) -> None:
    """Store an artifact, sealed with the data key of the dataset it was trained for (a model holds the
    vocabulary of its training text, so it is customer data too)."""
    owner = dataset_owner(dataset_id) if dataset_id else "artifacts"
    sealed = cipher_of(conn).seal_artifact(conn, artifact_hash, data, owner)
    row = {"artifact_hash": artifact_hash, "data": sealed, "created_at": datetime.now(UTC)}
    conn.execute(insert(conn, t.model_artifacts).values(row).on_conflict_do_nothing())


def drop_artifacts(conn: Connection, hashes: set[str], *, kept_for: str) -> int:
    """Delete the artifacts of ``hashes`` that no model of another dataset than ``kept_for`` uses; how many.

    Two datasets with the same annotations and seed train byte-identical models, which share one artifact.
    """
    m = t.models
    shared = sa.select(m.c.artifact_hash).where(m.c.dataset_id != kept_for, m.c.artifact_hash.in_(sorted(hashes)))
    dropped = sorted(hashes - {row.artifact_hash for row in conn.execute(shared)})
    if not dropped:
        return 0
    return conn.execute(t.model_artifacts.delete().where(t.model_artifacts.c.artifact_hash.in_(dropped))).rowcount


def load_artifact(conn: Connection, artifact_hash: str) -> bytes:
    query = sa.select(t.model_artifacts.c.data).where(t.model_artifacts.c.artifact_hash == artifact_hash)
    data = conn.execute(query).scalar()
    if data is None:
        raise LookupError(f"no model artifact {artifact_hash}")
    return cipher_of(conn).open_artifact(conn, artifact_hash, bytes(data))


def model_row(conn: Connection, dataset_id: str, version: int | None = None) -> Any:
    """The dataset's model ``version`` (the newest when None) from the read model, or None."""
    m = t.models
    query = sa.select(m).where(m.c.dataset_id == dataset_id)
    query = query.where(m.c.version == version) if version else query.order_by(m.c.version.desc()).limit(1)
    return conn.execute(query).first()


def latest_models(conn: Connection, source_ids: Sequence[str]) -> dict[str, list[tuple[str, int, str]]]:
    """Per source: (dataset id, model version, artifact hash) of each model that predicts its new
    messages: the newest of each dataset it belongs to, and any older version a stream pins."""
    m, ds = t.models, t.dataset_sources
    newest = sa.select(m.c.dataset_id, sa.func.max(m.c.version).label("version")).group_by(m.c.dataset_id).subquery()
    query = (
        sa.select(ds.c.source_id, m.c.dataset_id, m.c.version, m.c.artifact_hash)
        .join(newest, sa.and_(newest.c.dataset_id == m.c.dataset_id, newest.c.version == m.c.version))
        .join(ds, ds.c.dataset_id == m.c.dataset_id)
        .where(ds.c.source_id.in_(list(source_ids)))
    )
    # Older versions that streams pin predict new messages too, or those streams would get none.
    s = t.streams
    pinned = sa.select(s.c.dataset_id, s.c.model_version.label("version")).distinct().subquery()
    pinned_query = (
        sa.select(ds.c.source_id, m.c.dataset_id, m.c.version, m.c.artifact_hash)
        .join(pinned, sa.and_(pinned.c.dataset_id == m.c.dataset_id, pinned.c.version == m.c.version))
        .join(ds, ds.c.dataset_id == m.c.dataset_id)
        .where(ds.c.source_id.in_(list(source_ids)))
    )
    out: dict[str, list[tuple[str, int, str]]] = {}
    for source_id, dataset_id, version, artifact_hash in [*conn.execute(query), *conn.execute(pinned_query)]:
        models = out.setdefault(source_id, [])
        if (dataset_id, version, artifact_hash) not in models:
            models.append((dataset_id, version, artifact_hash))
    return out


def predictions(conn: Connection, dataset_id: str, version: int) -> dict[str, dict[str, float]]:
    p = t.predictions
    query = sa.select(p.c.uid, p.c.labels).where(p.c.dataset_id == dataset_id, p.c.model_version == version)
    return dict(conn.execute(query).all())


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def sources_in_datasets(conn: Connection) -> list[str]:
    """Every source some dataset reads: only their messages are embedded and predicted."""
    return sorted(conn.execute(sa.select(t.dataset_sources.c.source_id).distinct()).scalars())


#: Log positions a follower of the datasets' messages moves in one transaction while no dataset reads
#: any source: there is nothing to read in them, only the follower's transaction to pay for.
IDLE_WINDOW = 20000


def follow_datasets_messages(store: EventStore, name: str, react: Reaction, *, busy: int, wait: bool) -> int | None:
    """Follow the log for the datasets' messages, as prediction and embedding do.

    Windows of ``busy`` positions while some dataset reads a source, ``IDLE_WINDOW`` while none
    does; ``react`` reads each window itself. Each window still looks up the datasets' sources in
    its own transaction, so one created meanwhile is not missed: its first window is only larger.
    The follower goes no further than the read models' checkpoint: the sources come from them, and
    a window read before they hold a new dataset would skip that dataset's messages for good.
    """
    with store.engine.connect() as conn:
        window = busy if sources_in_datasets(conn) else IDLE_WINDOW
    return follow(store, name, react, wait=wait, batch_size=window, read_events=False, bound=projections.checkpoint)


def ingested_between(
    conn: Connection, start: int, end: int, sources: Sequence[str]
) -> list[tuple[MessageRow, dict[str, Any]]]:
    """The newest content of each message of ``sources`` ingested in the log window (start, end]."""
    from commine.events import MessageIngested

    e = t.events
    query = (
        sa.select(e.c.position, e.c.event_id, e.c.payload)
        .where(
            e.c.position > start,
            e.c.position <= end,
            e.c.type == MessageIngested.type_name(),
            e.c.payload["source_id"].as_string().in_(list(sources)),
        )
        .order_by(e.c.position)
    )
    latest: dict[tuple[str, str], tuple[MessageRow, int]] = {}
    records = []
    for i, (position, event_id, payload) in enumerate(conn.execute(query)):
        row = MessageRow(payload["source_id"], payload["comment_id"], position, payload["content_hash"])
        latest[(row.source_id, row.comment_id)] = (row, i)
        records.append((event_id, payload))
    # Only the newest content of each message is opened (in the order messages first appeared, as before).
    newest = list(latest.values())
    opened = open_comments(conn, [records[i] for _, i in newest])
    return [(row, comment) for (row, _), comment in zip(newest, opened, strict=True)]


def newest_models_of(conn: Connection, rows: Sequence[MessageRow]) -> dict[tuple[str, int, str], list[int]]:
    """(dataset id, version, artifact hash) -> indices into ``rows`` of the messages it predicts
    (newest versions, and versions streams pin)."""
    models = latest_models(conn, sorted({row.source_id for row in rows}))
    members: dict[tuple[str, int, str], list[int]] = {}
    for i, row in enumerate(rows):
        for key in models.get(row.source_id, []):
            members.setdefault(key, []).append(i)
    return members

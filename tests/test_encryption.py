"""Encryption at rest: sealed customer text, tampering, key rotation, crypto-shredding (issue 5, items 1-3).

Every test runs against the real stores (SQLite and PostgreSQL through the ``store`` fixture, or a
fresh PostgreSQL database) and cleans up after itself.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from commine.domain.comment import content_hash, normalise_comment
from commine.domain.message import Message, message_aggregate_id
from commine.events import MessageIngested, SourcePurged
from commine.handlers.commands import create_dataset, create_project, create_source, delete_source
from commine.handlers.ingest import handle_ingest
from commine.handlers.retrain import request_retraining
from commine.handlers.training import train_dataset
from commine.integrations.ingest_client import make_body
from commine.persistence import mldata, readmodels, replay
from commine.persistence import schema as t
from commine.persistence.encryption import (
    SEALED,
    AuthenticationFailed,
    Cipher,
    ContentPurged,
    Keyring,
    LocalKeyWrapper,
    MissingKey,
    cipher_for,
    is_purged,
    new_master_key,
    open_comments,
    parse_master_keys,
    sealed_version,
)
from commine.persistence.engine import make_engine, migrate
from commine.persistence.projections import catch_up
from commine.persistence.rotation import rotate_master, rotate_source, start_source_rotation, status
from commine.persistence.store import EventStore
from commine.scripts.sample_mail import generate
from commine.settings import load_settings

#: Lower case and one word, so it survives fastText's tokenizer and would show in a model's vocabulary.
MARKER = "zqxmarker7731"
ACTOR = "test"


def cipher(*keys: str, enabled: bool = True) -> Cipher:
    return Cipher(Keyring(LocalKeyWrapper([base64.b64decode(k) for k in keys])), enabled=enabled)


def marked_comment(comment_id: str, text: str = "") -> dict[str, Any]:
    """A comment carrying the marker in every customer field: subject, body, addresses, properties, attachments."""
    return {
        "id": comment_id,
        "timestamp": "2024-05-01T09:30:00Z",
        "thread_id": f"thread-{comment_id}",
        "messages": [
            {
                "from": f"{MARKER}@example.com",
                "to": [f"to.{MARKER}@example.com"],
                "cc": [f"cc.{MARKER}@example.com"],
                "bcc": [f"bcc.{MARKER}@example.com"],
                "subject": {"text": f"Subject {MARKER}"},
                "body": {"text": f"{text} {MARKER} body"},
            }
        ],
        "user_properties": {"string:Customer": f"Customer {MARKER}", "number:Tenure": 3},
        "attachments": [{"name": f"{MARKER}.pdf", "size": 10, "content_type": "application/pdf"}],
    }


def given_source(store: EventStore, ids: list[str], *, project: str = "p", source: str = "s") -> str:
    if not _exists(store, project):
        create_project(store, project, actor=ACTOR)
    source_id = create_source(store, f"{project}/{source}", actor=ACTOR).source_id
    handle_ingest(store, make_body(f"{project}/{source}", [marked_comment(i) for i in ids], actor="csv"))
    catch_up(store)
    return source_id


def _exists(store: EventStore, project: str) -> bool:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(t.projects.c.name).where(t.projects.c.name == project)).first() is not None


def ingested_rows(store: EventStore, source_id: str | None = None) -> list[Any]:
    e = t.events
    query = sa.select(e.c.position, e.c.event_id, e.c.payload).where(e.c.type == MessageIngested.type_name())
    with store.engine.connect() as conn:
        rows = conn.execute(query.order_by(e.c.position)).all()
    return [row for row in rows if source_id is None or row.payload["source_id"] == source_id]


def texts_of(store: EventStore, source_id: str) -> dict[str, str]:
    """comment id -> body text, through the read model and the log (the path the API and training take)."""
    out = {}
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(t.messages).where(t.messages.c.source_id == source_id)).all()
        comments = mldata.comments(conn, [row.position for row in rows])
    for row in rows:
        out[row.comment_id] = comments[row.position]["messages"][0]["body"]["text"]
    return out


# --- what is stored -------------------------------------------------------------------------------------------------


def test_message_text_is_stored_sealed_and_reads_back_whole(store: EventStore) -> None:
    source_id = given_source(store, ["c1", "c2"])
    for row in ingested_rows(store):
        comment = row.payload["comment"]
        assert set(comment) == {"id", "timestamp", "thread_id", SEALED}  # ids and times stay in clear
        assert MARKER not in str(row.payload)
    assert texts_of(store, source_id) == {"c1": f" {MARKER} body", "c2": f" {MARKER} body"}
    events = store.read_aggregate(f"message:{source_id}/c1")
    assert events[0].comment == {**marked_comment("c1"), "messages": events[0].comment["messages"]}
    assert events[0].comment["user_properties"]["string:Customer"] == f"Customer {MARKER}"
    assert readmodels.get_comment(store.engine, source_id, "c2")["attachments"][0]["name"] == f"{MARKER}.pdf"


def test_a_flipped_byte_fails_authentication_naming_the_record(store: EventStore) -> None:
    given_source(store, ["c1"])
    row = ingested_rows(store)[0]
    blob = bytearray(base64.b64decode(row.payload["comment"][SEALED]))
    blob[-20] ^= 0x01
    _store_payload(store, row.position, _with_sealed(row.payload, bytes(blob)))
    with pytest.raises(AuthenticationFailed, match=rf"event {row.event_id} .*comment 'c1'.* failed authentication"):
        store.read_aggregate(f"message:{row.payload['source_id']}/c1")
    with store.engine.connect() as conn, pytest.raises(AuthenticationFailed):
        mldata.comments(conn, [row.position])


def test_a_ciphertext_copied_onto_another_record_fails_authentication(store: EventStore) -> None:
    given_source(store, ["c1", "c2"])
    first, second = ingested_rows(store)
    # A whole sealed value, valid under the same key, moved from c1's event onto c2's.
    _store_payload(
        store, second.position, _with_sealed(second.payload, base64.b64decode(first.payload["comment"][SEALED]))
    )
    with store.engine.connect() as conn, pytest.raises(AuthenticationFailed, match=f"event {second.event_id}"):
        open_comments(conn, [(second.event_id, _reload(store, second.position))])
    # The clear ids are bound too: renaming the comment in clear breaks its own ciphertext.
    renamed = {**first.payload, "comment_id": "c9"}
    with store.engine.connect() as conn, pytest.raises(AuthenticationFailed):
        open_comments(conn, [(first.event_id, renamed)])


def _with_sealed(payload: dict[str, Any], blob: bytes) -> dict[str, Any]:
    return {**payload, "comment": {**payload["comment"], SEALED: base64.b64encode(blob).decode()}}


def _store_payload(store: EventStore, position: int, payload: dict[str, Any]) -> None:
    with store.engine.begin() as conn:
        conn.execute(t.events.update().where(t.events.c.position == position).values(payload=payload))


def _reload(store: EventStore, position: int) -> dict[str, Any]:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(t.events.c.payload).where(t.events.c.position == position)).scalar_one()


def test_with_encryption_off_new_text_is_clear_and_sealed_text_still_opens(store: EventStore) -> None:
    key = new_master_key()
    on = EventStore(store.engine, cipher=cipher(key))
    source_id = given_source(on, ["sealed"])
    off = EventStore(store.engine, cipher=cipher(key, enabled=False))
    handle_ingest(off, make_body("p/s", [marked_comment("clear")], actor="csv"))
    catch_up(off)
    by_id = {row.payload["comment_id"]: row.payload for row in ingested_rows(off)}
    assert SEALED in by_id["sealed"]["comment"] and SEALED not in by_id["clear"]["comment"]
    assert set(texts_of(off, source_id)) == {"sealed", "clear"}


def test_a_data_key_wrapped_by_an_unknown_master_key_says_which_key_is_missing(store: EventStore) -> None:
    old = new_master_key()
    given_source(EventStore(store.engine, cipher=cipher(old)), ["c1"])
    other = EventStore(store.engine, cipher=cipher(new_master_key()))
    with pytest.raises(MissingKey, match=r"wrapped by master key [0-9a-f]{16}, which is not configured"):
        list(other.read_all())


def test_without_configuration_a_master_key_file_is_generated_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = replace(load_settings({}), home=tmp_path / "home")
    first = cipher_for(settings)
    path = tmp_path / "home" / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cipher_for(settings).keyring.wrapper.current_id == first.keyring.wrapper.current_id
    assert len(parse_master_keys(path.read_text(), str(path))) == 1
    with pytest.raises(ValueError, match="COMMINE_MASTER_KEY: key 2 is not the base64 of 32 bytes"):
        parse_master_keys(f"{new_master_key()},c2hvcnQ=", "COMMINE_MASTER_KEY")
    with pytest.raises(ValueError, match="expected on or off"):
        load_settings({"COMMINE_ENCRYPTION": "maybe"})


# --- no customer text in clear anywhere in PostgreSQL -----------------------------------------------------------------


def scan(engine: sa.Engine, needle: str) -> list[str]:
    """``schema.table`` of every table (all schemas but the system's) whose rows hold ``needle``, as text
    or as bytes (bytea renders as hex)."""
    hexed = needle.encode().hex()
    found = []
    with engine.connect() as conn:
        tables = conn.execute(
            sa.text(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
        ).all()
        for schema, table in tables:
            hits = conn.execute(
                sa.text(
                    f'SELECT count(*) FROM "{schema}"."{table}" AS r WHERE position(:a IN lower(r::text)) > 0 '
                    f"OR position(:b IN lower(r::text)) > 0"
                ),
                {"a": needle, "b": hexed},
            ).scalar_one()
            if hits:
                found.append(f"{schema}.{table}")
    return found


@pytest.mark.services
def test_no_customer_text_in_clear_in_any_postgresql_table(pg_url: str) -> None:
    engine = make_engine(pg_url)
    migrate(engine)
    try:
        store = EventStore(engine, cipher=cipher(new_master_key()))
        create_project(store, "acme", actor=ACTOR)
        create_source(store, "acme/inbox", actor=ACTOR)
        dataset_id = create_dataset(store, "acme/support", sources=["acme/inbox"], actor=ACTOR).dataset_id
        messages = [m for m in generate(200, seed=3) if m.label is not None][:120]
        comments = [marked_comment(f"m{i}", m.comment["messages"][0]["body"]["text"]) for i, m in enumerate(messages)]
        annotations = {f"m{i}": [m.label] for i, m in enumerate(messages[:90])}
        body = make_body("acme/inbox", comments, actor="csv", dataset="acme/support", annotations=annotations)
        handle_ingest(store, body)
        catch_up(store)
        train_dataset(store, dataset_id, actor="trainer")  # artifact, predictions, embeddings
        catch_up(store)
        live, rebuilt = replay.verify(store)
        assert live.total == rebuilt.total
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(t.model_artifacts)).scalar_one() == 1
        assert scan(engine, MARKER) == []
        # The scan does find clear text: the same marker ingested with encryption off shows at once.
        handle_ingest(
            EventStore(engine, cipher=cipher(new_master_key(), enabled=False)),
            make_body("acme/inbox", [marked_comment("clear")], actor="csv"),
        )
        assert scan(engine, MARKER) == ["public.events"]
    finally:
        engine.dispose()


# --- key rotation ---------------------------------------------------------------------------------------------------


def sealed_versions(store: EventStore, source_id: str) -> list[int]:
    return [
        sealed_version(base64.b64decode(row.payload["comment"][SEALED]), "test")
        for row in ingested_rows(store, source_id)
    ]


def test_master_key_rotation_rewraps_every_data_key_and_the_old_key_can_go(store: EventStore) -> None:
    old, new = new_master_key(), new_master_key()
    source_id = given_source(EventStore(store.engine, cipher=cipher(old)), ["c1", "c2"])
    both = EventStore(store.engine, cipher=cipher(new, old))
    assert set(texts_of(both, source_id)) == {"c1", "c2"}  # during: the old key still unwraps
    assert rotate_master(store.engine, both.cipher) == 2  # the source's data key and its hash key
    assert rotate_master(store.engine, both.cipher) == 0  # nothing left on the old key
    after = EventStore(store.engine, cipher=cipher(new))
    assert texts_of(after, source_id) == {"c1": f" {MARKER} body", "c2": f" {MARKER} body"}
    handle_ingest(after, make_body("p/s", [marked_comment("c3")], actor="csv"))
    catch_up(after)
    assert set(texts_of(after, source_id)) == {"c1", "c2", "c3"}


def test_source_key_rotation_reencrypts_every_record_and_old_ciphertexts_read_meanwhile(store: EventStore) -> None:
    key = new_master_key()
    store = EventStore(store.engine, cipher=cipher(key))
    source_id = given_source(store, [f"c{i}" for i in range(12)])
    other_id = given_source(store, ["o1"], source="other")
    positions_before = [row.position for row in ingested_rows(store)]
    rotation = start_source_rotation(store.engine, store.cipher, source_id)
    assert rotation.version == 2
    # During the rotation: old records (v1) read, new writes use v2.
    handle_ingest(store, make_body("p/s", [marked_comment("new")], actor="csv"))
    catch_up(store)
    assert sorted(set(sealed_versions(store, source_id))) == [1, 2]
    assert len(texts_of(store, source_id)) == 13
    done = rotate_source(store.engine, store.cipher, source_id, batch_size=5)
    assert done.finished and done.records == 12  # the new message was sealed under v2 already
    assert set(sealed_versions(store, source_id)) == {2}
    assert set(sealed_versions(store, other_id)) == {1}
    assert [row.position for row in ingested_rows(store)][: len(positions_before)] == positions_before
    assert texts_of(store, source_id)["c7"] == f" {MARKER} body"
    live, rebuilt = replay.verify(store)
    assert live.total == rebuilt.total
    assert status(store.engine)[f"source:{source_id}"]["rotations"][0]["finished"] is True


_KILLED_ROTATION = """
import os, signal, sys
from commine.persistence.engine import make_engine
from commine.persistence.encryption import cipher_for
from commine.persistence.rotation import rotate_source
from commine.settings import load_settings
done = 0
def progress(n):
    global done
    done += n
    if done == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)  # killed midway through a batch, before it commits
rotate_source(make_engine(sys.argv[1]), cipher_for(load_settings()), sys.argv[2], batch_size=10, progress=progress)
"""


#: A store sealing with a fresh master key, and the environment of a CLI process on the same database and key.
KeyedCli = tuple[EventStore, dict[str, str]]


@pytest.fixture
def keyed_cli(database_url: str, tmp_path: Path) -> Iterator[KeyedCli]:
    key = new_master_key()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMINE_")}
    env.update(COMMINE_MASTER_KEY=key, COMMINE_DATABASE_URL=database_url, COMMINE_HOME=str(tmp_path))
    engine = make_engine(database_url)
    migrate(engine)
    try:
        yield EventStore(engine, cipher=cipher(key)), env
    finally:
        engine.dispose()


def test_a_source_key_rotation_killed_midway_resumes_from_its_last_committed_batch(
    keyed_cli: KeyedCli,
) -> None:
    store, env = keyed_cli
    engine = store.engine
    source_id = given_source(store, [f"c{i:02d}" for i in range(45)])
    database_url = env["COMMINE_DATABASE_URL"]
    killed = subprocess.run([sys.executable, "-c", _KILLED_ROTATION, database_url, source_id, "25"], env=env)
    assert killed.returncode == -signal.SIGKILL
    progress = status(engine)[f"source:{source_id}"]["rotations"]
    assert progress == [{"version": 2, "position": progress[0]["position"], "records": 20, "finished": False}]
    assert sorted(sealed_versions(store, source_id)).count(2) == 20
    assert len(texts_of(store, source_id)) == 45  # every message reads, whichever key it is under
    resumed = subprocess.run(
        [sys.executable, "-m", "commine", "keys", "rotate-source", "p/s", "--batch-size", "10"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "45 record(s) re-encrypted under data key v2" in resumed.stdout
    assert set(sealed_versions(store, source_id)) == {2}
    assert texts_of(store, source_id)["c44"] == f" {MARKER} body"
    shown = subprocess.run([sys.executable, "-m", "commine", "keys", "status"], env=env, capture_output=True, text=True)
    assert f"source:{source_id}: v1 wrapped by" in shown.stdout and "45 records, finished" in shown.stdout


def test_a_source_key_rotation_rekeys_content_hashes_stored_plain_in_the_log_and_read_models(
    keyed_cli: KeyedCli,
) -> None:
    store, env = keyed_cli
    engine = store.engine
    source_id = given_source(store, ["c1"])
    other_id = given_source(store, [], source="other")
    legacy = {(source_id, "l1"), (source_id, "l2"), (other_id, "l3")}
    for owner, comment_id in sorted(legacy):  # stored by a version that hashed without a key
        message = Message(message_aggregate_id(owner, comment_id))
        message.ingest(normalise_comment(marked_comment(comment_id)), actor="csv")
        store.append(message.collect())
    catch_up(store)
    plain = {c: content_hash(normalise_comment(marked_comment(c))) for c in ("c1", "l1", "l2", "l3")}
    with engine.begin() as conn:
        row = {"source_id": source_id, "comment_id": "l1", "encoder": "e", "content_hash": plain["l1"]}
        conn.execute(t.embeddings.insert().values(**row, vector=b"\0" * 4))
    assert plain["l1"] in everything_hashed(store) and plain["c1"] not in everything_hashed(store)

    rotated = subprocess.run(
        [sys.executable, "-m", "commine", "keys", "rotate-source", "--all"], env=env, capture_output=True, text=True
    )
    assert rotated.returncode == 0, rotated.stderr
    out = rotated.stdout
    assert "source p/other: 1 record(s) re-encrypted under data key v2; 1 content hash(es) re-keyed" in out
    assert "source p/s: 3 record(s) re-encrypted under data key v2; 2 content hash(es) re-keyed" in out
    stored = everything_hashed(store)
    assert not any(digest in stored for digest in plain.values())
    with engine.connect() as conn:
        hashers = {owner: store.cipher.content_hasher(conn, owner) for owner in (source_id, other_id)}
        hashes = dict(conn.execute(sa.select(t.messages.c.comment_id, t.messages.c.content_hash)).all())
        embedded = conn.execute(sa.select(t.embeddings.c.content_hash)).scalar_one()
    keyed = {c: content_hash(normalise_comment(marked_comment(c)), hashers[o]) for o, c in legacy}
    assert {c: hashes[c] for c in keyed} == keyed and embedded == keyed["l1"]
    # Re-sync still tells unchanged from changed, and replay rebuilds the same read models.
    assert handle_ingest(store, make_body("p/s", [marked_comment("l1")], actor="csv")).unchanged == 1
    assert handle_ingest(store, make_body("p/s", [marked_comment("l2", "new")], actor="csv")).updated == 1
    live, rebuilt = replay.verify(store)
    assert live.total == rebuilt.total
    again = subprocess.run(
        [sys.executable, "-m", "commine", "keys", "rotate-source", "p/s"], env=env, capture_output=True, text=True
    )
    assert "under data key v3" in again.stdout and "re-keyed" not in again.stdout  # nothing plain is left
    refused = subprocess.run(
        [sys.executable, "-m", "commine", "keys", "rotate-source"], env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "name one source (PROJECT/SOURCE) or give --all" in refused.stderr


def everything_hashed(store: EventStore) -> str:
    """The stored events and the messages and embeddings rows, as one text to search for a hash."""
    with store.engine.connect() as conn:
        events = conn.execute(sa.select(t.events.c.payload)).scalars().all()
        messages = conn.execute(sa.select(t.messages.c.content_hash)).scalars().all()
        embedded = conn.execute(sa.select(t.embeddings.c.content_hash)).scalars().all()
    return json.dumps([events, messages, embedded])


# --- crypto-shredding ------------------------------------------------------------------------------------------------


def test_a_purge_shreds_the_source_every_read_says_so_and_replay_still_runs(store: EventStore) -> None:
    source_id = given_source(store, ["c1", "c2"])
    kept_id = given_source(store, ["k1"], source="kept")
    create_dataset(store, "p/ds", sources=["p/s", "p/kept"], actor=ACTOR)
    request_retraining(store, lambda _dataset: None)  # the follower is past the dataset's creation
    positions = [row.position for row in ingested_rows(store, source_id)]
    with store.engine.begin() as conn:  # an embedding, computed from the text, as training stores them
        vector = {"source_id": source_id, "comment_id": "c1", "encoder": "w", "content_hash": "h", "vector": b"1234"}
        conn.execute(t.embeddings.insert().values(vector))
    delete_source(store, "p/s", reason="customer asked", actor=ACTOR)
    catch_up(store)
    # The key material is gone; the rows stay as tombstones.
    with store.engine.connect() as conn:
        keys = conn.execute(sa.select(t.data_keys).where(t.data_keys.c.owner == f"source:{source_id}")).all()
        assert conn.execute(sa.select(t.embeddings).where(t.embeddings.c.source_id == source_id)).first() is None
    assert keys and all(row.wrapped_key is None and row.destroyed_at is not None for row in keys)
    # Every read path: the log, the read model, the training reads, the raw reader in strict mode.
    events = store.read_aggregate(f"message:{source_id}/c1")
    assert is_purged(events[0].comment) and events[0].comment["id"] == "c1" and "messages" not in events[0].comment
    assert readmodels.get_comment(store.engine, source_id, "c1") is None
    row = ingested_rows(store, source_id)[0]
    with store.engine.connect() as conn:
        assert all(is_purged(comment) for comment in mldata.comments(conn, positions).values())
        with pytest.raises(ContentPurged, match=f"source:{source_id} was purged"):
            open_comments(conn, [(row.event_id, row.payload)], strict=True)
    purged = [stored.event for stored in store.read_all() if getattr(stored.event, "source_id", None) == source_id]
    assert sum(isinstance(e, MessageIngested) for e in purged) == 2 and MARKER not in str(purged)
    # Other sources are untouched; the purge is in the log; replay runs end to end and agrees.
    assert texts_of(store, kept_id) == {"k1": f" {MARKER} body"}
    assert [type(e) for e in store.read_aggregate("source:p/s")][-1] is SourcePurged
    live, rebuilt = replay.verify(store)
    assert live.total == rebuilt.total
    # Nothing can be sealed for it again, and the models that learned from it are retrained.
    with store.engine.begin() as conn, pytest.raises(ContentPurged):
        store.cipher.keyring.current(conn, f"source:{source_id}")
    requested: list[str] = []
    request_retraining(store, requested.append)
    assert requested == [_dataset_id(store, "p/ds")]


def _dataset_id(store: EventStore, name: str) -> str:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(t.datasets.c.dataset_id).where(t.datasets.c.name == name.split("/")[1])
        ).scalar_one()


@pytest.fixture
def artifact_store(store: EventStore) -> Iterator[EventStore]:
    yield EventStore(store.engine, cipher=cipher(new_master_key()))


def test_model_artifacts_are_sealed_with_their_datasets_key(artifact_store: EventStore) -> None:
    with artifact_store.transaction() as conn:
        mldata.save_artifact(conn, "h1", f"model {MARKER}".encode(), dataset_id="d1")
    with artifact_store.engine.connect() as conn:
        raw = conn.execute(sa.select(t.model_artifacts.c.data)).scalar_one()
        assert MARKER.encode() not in raw
        assert mldata.load_artifact(conn, "h1") == f"model {MARKER}".encode()
        conn.execute(t.model_artifacts.update().values(artifact_hash="h2"))
        with pytest.raises(AuthenticationFailed, match=r"model artifact h2 .*failed authentication"):
            mldata.load_artifact(conn, "h2")


# --- the benchmark ---------------------------------------------------------------------------------------------------


@pytest.mark.services
def test_bench_ingest_measures_encryption_off_and_on_in_one_run(service_env: dict[str, str]) -> None:
    command = ["bench", "ingest", "--messages", "2000", "--workers", "1", "--encryption", "both"]
    result = subprocess.run(
        [sys.executable, "-m", "commine", *command], env=service_env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["encryption"] == "on" and summary["end_to_end_off_per_s"] > 0
    assert summary["encryption_cost"] == pytest.approx(
        1 - summary["end_to_end_per_s"] / summary["end_to_end_off_per_s"], abs=0.01
    )

"""Bulk statements on PostgreSQL: arrays sent as one text, predictions sent as one JSON document,
look-ups of many keys that probe an index whatever the statistics say, and no JIT compilation."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from conftest import PG_SERVER, require_services
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streams_helpers import make_world

from commine.events import PredictionsRecorded
from commine.persistence import projections, stream_projection, streamdata
from commine.persistence import schema as t
from commine.persistence.engine import drop_database, ensure_database, make_engine, matches_any, migrate, text_array
from commine.persistence.store import EventStore, StoredEvent


@pytest.fixture(scope="module")
def pg_engine() -> Iterator[sa.Engine]:
    """One scratch database for the module: the property test runs 150 examples in it."""
    require_services()
    url = f"{PG_SERVER}/commine_test_{uuid.uuid4().hex[:12]}"
    ensure_database(url)
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        drop_database(url)


# PostgreSQL text cannot hold NUL; anything else may be in a comment id.
texts = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(texts, max_size=20))
def test_a_text_array_reads_back_as_the_strings_sent(pg_engine: sa.Engine, values: list[str]) -> None:
    with pg_engine.connect() as conn:
        query = sa.select(sa.func.unnest(text_array("values", values)))
        assert list(conn.execute(query).scalars()) == values


def test_matches_any_finds_the_same_rows_on_both_databases(pg_engine: sa.Engine, sqlite_url: str) -> None:
    wanted = ["a,b", 'q"uote', "back\\slash", "{brace}", "NULL", "missing"]
    stored = [*wanted[:-1], "other"]
    table = sa.Table("words", sa.MetaData(), sa.Column("word", sa.String, primary_key=True))
    sqlite = make_engine(sqlite_url)
    try:
        for engine in (pg_engine, sqlite):
            with engine.begin() as conn:
                table.create(conn)
                conn.execute(table.insert(), [{"word": w} for w in stored])
                query = sa.select(table.c.word).where(matches_any(conn, table.c.word, wanted, "words"))
                assert sorted(conn.execute(query).scalars()) == sorted(wanted[:-1])
                table.drop(conn)
    finally:
        sqlite.dispose()


def test_connections_run_without_jit_unless_the_url_says_otherwise(pg_engine: sa.Engine) -> None:
    with pg_engine.connect() as conn:
        assert conn.execute(sa.text("SHOW jit")).scalar() == "off"
    own = make_engine(pg_engine.url.update_query_dict({"options": "-c jit=on"}).render_as_string(hide_password=False))
    try:
        with own.connect() as conn:
            assert conn.execute(sa.text("SHOW jit")).scalar() == "on"
    finally:
        own.dispose()


def _stored(position: int, dataset_id: str, uid: str, labels: dict[str, float]) -> StoredEvent:
    event = PredictionsRecorded(
        aggregate_id=f"predictions:{uuid.uuid4().hex}",
        aggregate_version=1,
        actor="predictor",
        dataset_id=dataset_id,
        model_version=1,
        predictions=[{"uid": uid, "labels": labels}],
    )
    return StoredEvent(position, datetime.now(UTC), event)


def test_a_prediction_row_keeps_the_newest_prediction_whatever_order_they_come_in(store: EventStore) -> None:
    world = make_world(store)
    uid = world.uid("m1")
    older = _stored(10_000, world.dataset_id, uid, {"Billing": 0.1234567890123})
    newer = _stored(10_001, world.dataset_id, uid, {"Billing": 0.75, "Card": 1e-05})
    p = t.predictions
    for batches in ([[older], [newer]], [[newer], [older]], [[older, newer]]):
        with store.engine.begin() as conn:
            conn.execute(p.delete())
            for batch in batches:
                projections._predictions(conn, batch)
            rows = conn.execute(sa.select(p.c.uid, p.c.labels, p.c.position)).all()
        assert [tuple(row) for row in rows] == [(uid, {"Billing": 0.75, "Card": 1e-05}, 10_001)]
    with store.engine.begin() as conn:  # an older one alone writes its own probabilities exactly
        conn.execute(p.delete())
        projections._predictions(conn, [older])
        assert conn.execute(sa.select(p.c.labels)).scalar_one() == {"Billing": 0.1234567890123}


def test_the_entry_look_up_probes_the_index_even_on_statistics_of_an_empty_table(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        migrate(engine)
        entries = t.stream_entries
        with engine.begin() as conn:
            conn.execute(
                sa.text("ANALYZE stream_entries")
            )  # statistics of an empty table, as after a stream's creation
            rows = [
                {
                    "stream_id": f"s{k}",
                    "seq": i,
                    "uid": f"src.c{i}",
                    "source_id": "src",
                    "first_position": i,
                    "created_at": datetime.now(UTC),
                    "passes_filter": True,
                    "qualifies": False,
                    "labels": [],
                }
                for k in range(4)
                for i in range(5000)
            ]
            conn.execute(entries.insert(), rows)
            target = stream_projection.Target(conn, conn)
            found = stream_projection._existing(target, ["s1", "s2"], ["src.c7", "src.c4999", "src.none"])
            assert found == {"s1": {"src.c7": 7, "src.c4999": 4999}, "s2": {"src.c7": 7, "src.c4999": 4999}}
            # 500 uids, as a prediction event brings: the planner without statistics expects
            # each to match 1/200 of the table, and a scan of it then looks cheaper than 500 probes.
            many = [f"src.c{i}" for i in range(0, 5000, 10)]
            plan = _plan(conn, lambda: stream_projection._existing(target, ["s1"], many))
        assert "Seq Scan on stream_entries" not in plan
        assert "uq_stream_entries_uid" in plan
    finally:
        engine.dispose()


def _plan(conn: sa.Connection, call: Callable[[], object]) -> str:
    """PostgreSQL's plan of the last statement ``call`` runs on ``conn``, with its parameters."""
    captured: list[tuple[str, dict[str, object]]] = []
    sa.event.listen(conn, "before_cursor_execute", lambda *a: captured.append((a[2], a[3])))
    call()
    statement, parameters = captured[-1]
    return "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters))


def test_a_batch_of_comments_probes_the_messages_key_rather_than_hashing_every_message(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        migrate(engine)
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(
                t.messages.insert(),
                [
                    {
                        "source_id": "src",
                        "comment_id": f"c{i}",
                        "timestamp": now,
                        "content_hash": "0" * 64,
                        "version": 1,
                        "position": i,
                        "deleted": False,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in range(30_000)
                ],
            )
            conn.execute(sa.text("ANALYZE messages"))
            uids = [f"src.c{i}" for i in range(0, 30_000, 60)]  # 500, a chunk
            plan = _plan(conn, lambda: streamdata.comments(conn, "dataset", uids))
        assert "Seq Scan on messages" not in plan
        assert "messages_pkey" in plan
    finally:
        engine.dispose()

"""Streams on the real stores (SQLite and PostgreSQL): fetch, advance, reset, thresholds, re-pinning,
exceptions, backlog, and a replay that equals the live read model."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from streams_helpers import DATASET, World, make_world, refund

from commine.domain.errors import DomainError, NotFound
from commine.events import StreamAdvanced, ThresholdChanged
from commine.handlers import streams
from commine.handlers.ingest import handle_ingest
from commine.handlers.prediction import predict_new
from commine.handlers.training import train_dataset
from commine.integrations.ingest_client import make_body
from commine.persistence import replay
from commine.persistence.engine import make_engine, migrate
from commine.persistence.projections import catch_up
from commine.persistence.readmodels import status
from commine.persistence.store import EventStore
from commine.scripts.sample_mail import generate

THRESHOLDS = [{"name": ["Billing", "Refund"], "threshold": 0.5}]


@pytest.fixture
def world(store: EventStore) -> World:
    return make_world(store)


def uids(world: World, batch: dict) -> list[str]:
    return [result["comment"]["uid"] for result in batch["results"]]


def ids(world: World, batch: dict) -> list[str]:
    return [uid.partition(".")[2] for uid in uids(world, batch)]


def test_fetch_without_advance_repeats_and_advance_moves_on(world: World) -> None:
    version = world.train()
    world.ingest([f"m{i}" for i in range(10)])
    world.predict(version, {f"m{i}": refund(0.9 if i % 2 == 0 else 0.1) for i in range(10)})
    streams.create_stream(world.store, DATASET, "refunds", label_thresholds=THRESHOLDS, actor="user:ann")

    first = streams.fetch(world.store, DATASET, "refunds", size=3)
    again = streams.fetch(world.store, DATASET, "refunds", size=3)
    assert first == again
    assert ids(world, first) == ["m0", "m2", "m4"]
    assert first["filtered"] == 2  # m1 and m3 were scanned past
    assert first["results"][0]["labels"] == [{"name": ["Billing", "Refund"], "probability": 0.9}]
    comment = first["results"][0]["comment"]
    assert comment["uid"] == world.uid("m0") and comment["messages"][0]["body"]["text"] == "message m0"
    assert {"created_at", "has_annotations", "id", "timestamp"} <= set(comment)

    streams.advance(world.store, DATASET, "refunds", first["sequence_id"], actor="robot")
    after = streams.fetch(world.store, DATASET, "refunds", size=3)
    assert ids(world, after) == ["m6", "m8"]
    assert after["is_end_sequence"] is True
    # An advance by a single result's id also works, and repeating an advance records nothing.
    streams.advance(world.store, DATASET, "refunds", after["results"][0]["sequence_id"], actor="robot")
    streams.advance(world.store, DATASET, "refunds", after["results"][0]["sequence_id"], actor="robot")
    assert ids(world, streams.fetch(world.store, DATASET, "refunds", size=3)) == ["m8"]
    advances = [s.event for s in world.store.read_all() if isinstance(s.event, StreamAdvanced)]
    assert len(advances) == 2


def test_messages_enter_in_ingestion_order_and_late_predictions_are_not_skipped(world: World) -> None:
    version = world.train()
    world.ingest(["a", "b", "c", "d"])
    streams.create_stream(world.store, DATASET, "refunds", label_thresholds=THRESHOLDS, actor="user:ann")
    # Predictions arrive out of order: d and b first, in reverse.
    world.predict(version, {"d": refund(0.8), "b": refund(0.8)})
    batch = streams.fetch(world.store, DATASET, "refunds", size=10)
    assert ids(world, batch) == ["b", "d"]
    streams.advance(world.store, DATASET, "refunds", batch["sequence_id"], actor="robot")

    # a and c are predicted after the cursor passed b and d: they come next, not lost behind it.
    world.predict(version, {"c": refund(0.7), "a": refund(0.7)})
    assert ids(world, streams.fetch(world.store, DATASET, "refunds", size=10)) == ["a", "c"]


def test_the_filter_and_the_deliver_all_option(world: World) -> None:
    version = world.train()
    properties = {f"m{i}": {"string:Country": "uk" if i < 3 else "fr", "number:NPS": i} for i in range(6)}
    world.ingest([f"m{i}" for i in range(6)], properties)
    world.predict(version, {f"m{i}": refund(0.9 if i in (0, 3) else 0.2) for i in range(6)})
    uk = {"user_properties": {"string:Country": {"one_of": ["uk"]}}}
    streams.create_stream(world.store, DATASET, "uk", label_thresholds=THRESHOLDS, comment_filter=uk, actor="user:ann")
    streams.create_stream(
        world.store,
        DATASET,
        "uk-all",
        label_thresholds=THRESHOLDS,
        comment_filter=uk,
        deliver_all_filtered=True,
        actor="user:ann",
    )
    nps = {"user_properties": {"number:NPS": {"minimum": 2, "maximum": 4}}}
    streams.create_stream(world.store, DATASET, "nps", label_thresholds=THRESHOLDS, comment_filter=nps, actor="a")

    assert ids(world, streams.fetch(world.store, DATASET, "uk", size=10)) == ["m0"]
    everything = streams.fetch(world.store, DATASET, "uk-all", size=10)
    assert ids(world, everything) == ["m0", "m1", "m2"]  # every uk message, labels trimmed
    assert [r["labels"] for r in everything["results"]][1:] == [[], []]
    assert ids(world, streams.fetch(world.store, DATASET, "nps", size=10)) == ["m3"]
    # max_filtered stops the scan; advancing to the batch's sequence id skips the filtered block.
    block = streams.fetch(world.store, DATASET, "uk", size=10, max_filtered=1)
    assert block["results"] and block["filtered"] == 1
    with pytest.raises(DomainError):
        streams.fetch(world.store, DATASET, "uk", size=0)
    with pytest.raises(DomainError):
        streams.fetch(world.store, DATASET, "uk", size=1025)


def test_reset_redelivers_exactly_the_qualifying_messages_after_the_time(world: World) -> None:
    version = world.train()
    world.ingest(["old1", "old2"])
    moment = datetime.now(UTC)
    world.ingest(["new1", "new2", "new3"])
    world.predict(version, {c: refund(0.9 if c != "new2" else 0.1) for c in ["old1", "old2", "new1", "new2", "new3"]})
    streams.create_stream(world.store, DATASET, "refunds", label_thresholds=THRESHOLDS, actor="user:ann")
    everything = streams.fetch(world.store, DATASET, "refunds", size=10)
    assert ids(world, everything) == ["old1", "old2", "new1", "new3"]
    streams.advance(world.store, DATASET, "refunds", everything["sequence_id"], actor="robot")
    assert streams.fetch(world.store, DATASET, "refunds", size=10)["results"] == []

    streams.reset(world.store, DATASET, "refunds", moment.isoformat(), actor="robot")
    assert ids(world, streams.fetch(world.store, DATASET, "refunds", size=10)) == ["new1", "new3"]
    # Sequence ids are never reused: an advance with a stale one changes nothing.
    streams.advance(world.store, DATASET, "refunds", everything["results"][0]["sequence_id"], actor="robot")
    assert ids(world, streams.fetch(world.store, DATASET, "refunds", size=10)) == ["new1", "new3"]


def test_threshold_changes_apply_past_the_cursor_and_are_recorded(world: World) -> None:
    version = world.train()
    world.ingest([f"m{i}" for i in range(6)])
    world.predict(version, {f"m{i}": refund(p) for i, p in enumerate([0.9, 0.4, 0.9, 0.4, 0.9, 0.4])})
    streams.create_stream(world.store, DATASET, "refunds", label_thresholds=THRESHOLDS, actor="user:ann")
    first = streams.fetch(world.store, DATASET, "refunds", size=1)
    streams.advance(world.store, DATASET, "refunds", first["sequence_id"], actor="robot")  # past m0

    preview = streams.preview_thresholds(world.store, DATASET, "refunds", {"Billing > Refund": 0.3})
    assert (preview["enter"], preview["leave"]) == (3, 0)  # m1, m3, m5: m0 was delivered
    assert streams.change_threshold(world.store, DATASET, "refunds", ["Billing", "Refund"], 0.3, actor="user:bob")
    assert ids(world, streams.fetch(world.store, DATASET, "refunds", size=10)) == ["m1", "m2", "m3", "m4", "m5"]
    assert streams.get_stream(world.store, DATASET, "refunds")["backlog"] == 5

    proposal = [{"name": "Billing > Refund", "threshold": 0.95}]
    preview = streams.preview_thresholds(world.store, DATASET, "refunds", proposal)
    assert (preview["enter"], preview["leave"], preview["backlog_after"]) == (0, 5, 0)
    streams.change_threshold(world.store, DATASET, "refunds", "Billing > Refund", 0.95, actor="user:cy")
    assert streams.fetch(world.store, DATASET, "refunds", size=10)["results"] == []
    assert not streams.change_threshold(world.store, DATASET, "refunds", "Billing > Refund", 0.95, actor="user:cy")

    changes = [s.event for s in world.store.read_all() if isinstance(s.event, ThresholdChanged)]
    assert [(c.actor, c.previous, c.threshold) for c in changes] == [("user:bob", 0.5, 0.3), ("user:cy", 0.3, 0.95)]


def test_pinning_another_version_replaces_what_is_not_yet_delivered(world: World) -> None:
    v1 = world.train()
    world.ingest(["a", "b", "c"])
    world.predict(v1, {"a": refund(0.9), "b": refund(0.9), "c": refund(0.1)})
    streams.create_stream(world.store, DATASET, "refunds", model_version=v1, label_thresholds=THRESHOLDS, actor="u")
    first = streams.fetch(world.store, DATASET, "refunds", size=1)
    streams.advance(world.store, DATASET, "refunds", first["sequence_id"], actor="robot")  # a delivered
    v2 = world.train()
    world.predict(v2, {"a": refund(0.1), "b": refund(0.1), "c": refund(0.9)})

    assert streams.pin_model(world.store, DATASET, "refunds", v2, actor="user:ann")
    assert ids(world, streams.fetch(world.store, DATASET, "refunds", size=10)) == ["c"]
    with pytest.raises(NotFound):
        streams.pin_model(world.store, DATASET, "refunds", 7, actor="user:ann")


def test_exceptions_are_tagged_and_untagged_by_uid(world: World) -> None:
    world.train()
    streams.create_stream(world.store, DATASET, "refunds", label_thresholds=THRESHOLDS, actor="user:ann")
    uid = world.uid("m1")
    streams.tag_exceptions(world.store, DATASET, "refunds", [{"uid": uid, "metadata": {"type": "Wrong"}}], actor="r")
    assert streams.list_exceptions(world.store, DATASET, "refunds")[0]["metadata"] == {"type": "Wrong"}
    streams.untag_exceptions(world.store, DATASET, "refunds", [uid], actor="r")
    assert streams.list_exceptions(world.store, DATASET, "refunds") == []
    with pytest.raises(DomainError):
        streams.tag_exceptions(world.store, DATASET, "refunds", [{"uid": "no-dot"}], actor="r")


def test_bad_requests_get_clear_errors(world: World) -> None:
    with pytest.raises(DomainError, match="no model"):
        streams.create_stream(world.store, DATASET, "refunds", actor="u")
    world.train()
    streams.create_stream(world.store, DATASET, "refunds", label_thresholds=THRESHOLDS, actor="u")
    with pytest.raises(DomainError, match="exists already"):
        streams.create_stream(world.store, DATASET, "refunds", actor="u")
    with pytest.raises(DomainError, match="never handed out"):
        streams.advance(world.store, DATASET, "refunds", "99", actor="robot")
    with pytest.raises(DomainError, match="sequence_id"):
        streams.advance(world.store, DATASET, "refunds", "abc", actor="robot")
    with pytest.raises(DomainError, match="0 to 1"):
        streams.change_threshold(world.store, DATASET, "refunds", "Card", 1.5, actor="u")
    with pytest.raises(NotFound):
        streams.fetch(world.store, DATASET, "nope")
    with pytest.raises(DomainError):
        streams.create_stream(world.store, DATASET, "x", comment_filter={"colour": 1}, actor="u")
    streams.delete_stream(world.store, DATASET, "refunds", actor="u")
    with pytest.raises(NotFound):
        streams.get_stream(world.store, DATASET, "refunds")
    assert streams.list_streams(world.store, DATASET) == []


def test_suggested_thresholds_come_from_the_pinned_models_validation(world: World) -> None:
    presets = {"high_precision": 0.8, "balanced": 0.5, "high_recall": 0.2}
    metrics = {"validation": {"labels": [{"name": "Billing > Refund", "presets": presets}]}}
    world.train(metrics)
    streams.create_stream(world.store, DATASET, "refunds", label_thresholds=THRESHOLDS, actor="u")
    assert streams.suggested_thresholds(world.store, DATASET, "refunds") == {"Billing > Refund": presets}


def test_status_shows_the_backlog_and_a_replay_equals_the_live_streams(world: World) -> None:
    version = world.train()
    world.ingest([f"m{i}" for i in range(8)])
    streams.create_stream(world.store, DATASET, "refunds", label_thresholds=THRESHOLDS, actor="u")
    world.predict(version, {f"m{i}": refund(0.9 if i < 6 else 0.2) for i in range(8)})
    batch = streams.fetch(world.store, DATASET, "refunds", size=2)
    streams.advance(world.store, DATASET, "refunds", batch["sequence_id"], actor="robot")
    streams.change_threshold(world.store, DATASET, "refunds", "Billing > Refund", 0.15, actor="u")
    streams.tag_exceptions(world.store, DATASET, "refunds", [{"uid": world.uid("m3"), "metadata": {}}], actor="r")
    world.ingest(["late"])
    world.predict(version, {"late": refund(0.5)})

    (project,) = status(world.store.engine)["projects"]
    (stream,) = project["datasets"][0]["streams"]
    assert stream["backlog"] == 7  # m2..m7 and late

    live, rebuilt = replay.verify(world.store)
    assert live.tables["stream_entries"][0] == 9
    assert rebuilt == live


def test_new_messages_are_predicted_under_an_older_version_a_stream_pins(sqlite_url: str) -> None:

    engine = make_engine(sqlite_url)
    migrate(engine)
    store = EventStore(engine)
    world = make_world(store)
    messages = generate(120, seed=11)

    labelled = {m.comment["id"]: [m.label] for m in messages[:100] if m.label}
    handle_ingest(
        store,
        make_body("acme/inbox", [m.comment for m in messages[:100]], actor="t", dataset=DATASET, annotations=labelled),
    )
    catch_up(store)
    v1 = train_dataset(store, world.dataset_id, actor="trainer").version
    catch_up(store)
    streams.create_stream(store, DATASET, "old", model_version=v1, deliver_all_filtered=True, actor="u")
    train_dataset(store, world.dataset_id, actor="trainer")  # v2: the newest
    catch_up(store)
    predict_new(store, wait=True)  # everything so far is predicted already
    before = streams.get_stream(store, DATASET, "old")["backlog"]

    handle_ingest(store, make_body("acme/inbox", [m.comment for m in messages[100:]], actor="t"))
    catch_up(store)
    predict_new(store, wait=True)
    catch_up(store)

    assert streams.get_stream(store, DATASET, "old")["backlog"] == before + 20
    engine.dispose()


def test_a_long_lived_stream_loads_from_its_snapshot_and_the_advances_after_it(world: World) -> None:
    from commine.domain.stream import Stream, stream_aggregate_id
    from commine.handlers.commands import load, run
    from commine.persistence import schema as t

    world.train()
    streams.create_stream(world.store, DATASET, "refunds", label_thresholds=THRESHOLDS, actor="user:ann")
    aggregate_id = stream_aggregate_id(world.dataset_id, "refunds")
    for n in range(1, 251):  # a robot's advances: one event each, versions 2..251
        run(world.store, Stream, aggregate_id, lambda s, n=n: s.advance(str(n), actor="robot"))
    with world.store.engine.connect() as conn:
        version, state = world.store.snapshot(aggregate_id, conn)  # type: ignore[misc]
    assert version == 200 and state["cursor"] == 199 and state["schema"] == Stream.snapshot_schema
    whole = Stream.replay(aggregate_id, world.store.read_aggregate(aggregate_id))
    loaded = load(world.store, Stream, aggregate_id)
    assert (loaded.version, loaded.state()) == (whole.version, whole.state()) and loaded.cursor == 250

    def kept(state: dict) -> None:
        with world.store.engine.begin() as conn:
            conn.execute(t.snapshots.update().where(t.snapshots.c.aggregate_id == aggregate_id).values(state=state))

    kept({**state, "cursor": 10_000})  # proof that loading starts from the snapshot, not from the first event
    assert load(world.store, Stream, aggregate_id).cursor == 10_000
    kept({**state, "schema": -1})  # a snapshot of another shape is ignored: the whole history is replayed
    assert load(world.store, Stream, aggregate_id).state() == whole.state()

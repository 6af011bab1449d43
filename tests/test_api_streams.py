"""Streams over HTTP (``/api/v1/datasets/<p>/<d>/streams...``), in the reference's shapes.

Every test runs on SQLite and on PostgreSQL (the ``store`` fixture). The dataset's messages are
ingested and predicted the way ``test_streams_services`` does it (``streams_helpers.World``): a
registered model version whose predictions the test records itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from api_helpers import Api
from streams_helpers import World, refund

from commine.events import StreamAdvanced, ThresholdChanged
from commine.handlers import streams
from commine.persistence.store import EventStore

DATASET = "/api/v1/datasets/acme/support"
STREAMS = f"{DATASET}/streams"
REFUNDS = f"{STREAMS}/refunds"
THRESHOLDS = [{"name": ["Billing", "Refund"], "threshold": 0.5}]
#: What the reference's ``re`` client requires of a stream.
STREAM_FIELDS = {"id", "dataset_id", "name", "title", "description", "created_at", "updated_at"}


@pytest.fixture
def api(store: EventStore) -> Api:
    return Api(store)


@pytest.fixture
def world(api: Api) -> World:
    """``acme/inbox`` and ``acme/support`` (made through the API), and a registered model version."""
    source_id, dataset_id = api.setup_source_and_dataset()
    world = World(api.store, source_id, dataset_id)
    world.train()
    return world


def create(api: Api, name: str = "refunds", **fields: Any) -> dict[str, Any]:
    body = {"name": name, "model": {"version": 1, "label_thresholds": THRESHOLDS}, **fields}
    return api.ok("PUT", STREAMS, json={"stream": body})["stream"]


def fetch(api: Api, size: int = 10, path: str = REFUNDS, headers: dict[str, str] | None = None, **extra: Any) -> Any:
    return api.ok("POST", f"{path}/fetch", headers, json={"size": size, **extra})


def ids(batch: dict[str, Any]) -> list[str]:
    return [result["comment"]["id"] for result in batch["results"]]


def test_create_list_get_delete(api: Api, world: World) -> None:
    stream = create(api, title="Refunds", description="for the refund robot")
    assert set(stream) >= STREAM_FIELDS
    assert (stream["name"], stream["title"], stream["dataset_id"]) == ("refunds", "Refunds", world.dataset_id)
    assert stream["model"] == {"version": 1, "label_thresholds": THRESHOLDS}
    assert "exists already" in api.fails(409, "PUT", STREAMS, json={"stream": {"name": "refunds"}})
    # Without a model: the dataset's newest version, no thresholds.
    assert create(api, "all", model=None, deliver_all_filtered=True)["model"]["version"] == 1

    assert [s["name"] for s in api.ok("GET", STREAMS)["streams"]] == ["all", "refunds"]
    assert api.ok("GET", REFUNDS)["stream"] == stream
    # re sends project/dataset as one percent-encoded segment.
    assert api.ok("GET", "/api/v1/datasets/acme%2Fsupport/streams/refunds")["stream"]["id"] == stream["id"]
    assert len(api.ok("GET", "/api/v1/datasets/acme%2Fsupport/streams")["streams"]) == 2

    assert api.ok("DELETE", REFUNDS) == {"status": "ok"}
    api.fails(404, "GET", REFUNDS)
    api.fails(404, "DELETE", REFUNDS)
    assert [s["name"] for s in api.ok("GET", STREAMS)["streams"]] == ["all"]


def test_fetch_repeats_until_advance_moves_on(api: Api, world: World) -> None:
    world.ingest([f"m{i}" for i in range(10)])
    world.predict(1, {f"m{i}": refund(0.9 if i % 2 == 0 else 0.1) for i in range(10)})
    create(api)

    first = fetch(api, 3)
    assert fetch(api, 3) == first
    assert ids(first) == ["m0", "m2", "m4"]
    assert (first["filtered"], first["is_end_sequence"]) == (2, False)
    result = first["results"][0]
    assert set(result) == {"comment", "labels", "entities", "sequence_id"}
    assert result["labels"] == [{"name": ["Billing", "Refund"], "probability": 0.9}] and result["entities"] == []
    assert result["comment"]["uid"] == world.uid("m0")
    assert {"id", "timestamp", "messages", "created_at", "has_annotations"} <= set(result["comment"])
    assert isinstance(first["sequence_id"], str)

    assert api.ok("POST", f"{REFUNDS}/advance", json={"sequence_id": first["sequence_id"]}) == {"status": "ok"}
    after = fetch(api, 3)
    assert ids(after) == ["m6", "m8"] and after["is_end_sequence"] is True
    # Advancing to one result's id; repeating it records nothing; a number is taken as well as a string.
    api.ok("POST", f"{REFUNDS}/advance", json={"sequence_id": after["results"][0]["sequence_id"]})
    api.ok("POST", f"{REFUNDS}/advance", json={"sequence_id": int(after["results"][0]["sequence_id"])})
    assert ids(fetch(api, 3)) == ["m8"]
    advances = [s.event for s in api.store.read_all() if isinstance(s.event, StreamAdvanced)]
    assert [a.actor for a in advances] == ["api:root", "api:root"]
    # max_filtered stops the scan at the filtered block.
    api.ok("POST", f"{REFUNDS}/reset", json={"to_comment_created_at": "2000-01-01T00:00:00Z"})
    block = fetch(api, 10, max_filtered=1)
    assert ids(block) == ["m0"] and block["filtered"] == 1


def test_reset_delivers_exactly_the_qualifying_messages_after_the_time(api: Api, world: World) -> None:
    world.ingest(["old1", "old2"])
    moment = datetime.now(UTC)
    world.ingest(["new1", "new2", "new3"])
    world.predict(1, {c: refund(0.1 if c == "new2" else 0.9) for c in ["old1", "old2", "new1", "new2", "new3"]})
    create(api)
    everything = fetch(api)
    assert ids(everything) == ["old1", "old2", "new1", "new3"]
    api.ok("POST", f"{REFUNDS}/advance", json={"sequence_id": everything["sequence_id"]})
    assert fetch(api)["results"] == []

    answer = api.ok("POST", f"{REFUNDS}/reset", json={"to_comment_created_at": moment.isoformat()})
    assert int(answer["sequence_id"]) >= int(everything["sequence_id"])
    assert ids(fetch(api)) == ["new1", "new3"]
    api.fails(400, "POST", f"{REFUNDS}/reset", json={"to_comment_created_at": "yesterday"})
    api.fails(400, "POST", f"{REFUNDS}/reset", json={"to_comment_created_at": "2024-01-01\x00"})
    api.fails(400, "POST", f"{REFUNDS}/reset", json={})


def test_exceptions_are_tagged_and_untagged_by_uid(api: Api, world: World) -> None:
    create(api)
    one, two = world.uid("m1"), world.uid("m2")
    body = {"exceptions": [{"uid": one, "metadata": {"type": "No Prediction"}}, {"uid": two, "metadata": {}}]}
    assert api.ok("PUT", f"{REFUNDS}/exceptions", json=body) == {"status": "ok"}
    tagged = api.ok("GET", f"{REFUNDS}/exceptions")["exceptions"]
    assert {(e["uid"], e["metadata"]["type"]) for e in tagged} == {(one, "No Prediction"), (two, "")}

    assert api.ok("DELETE", f"{REFUNDS}/exceptions?uid={one}&uid={two}") == {"status": "ok"}
    assert api.ok("GET", f"{REFUNDS}/exceptions")["exceptions"] == []
    api.fails(400, "PUT", f"{REFUNDS}/exceptions", json={"exceptions": [{"uid": "no-dot"}]})
    api.fails(400, "PUT", f"{REFUNDS}/exceptions", json={"exceptions": [{"uid": one, "metadata": {"type": "x\x00"}}]})
    api.fails(400, "PUT", f"{REFUNDS}/exceptions", json={"exceptions": [{"uid": one, "metadata": {"type": "x" * 257}}]})
    api.fails(400, "DELETE", f"{REFUNDS}/exceptions")
    api.fails(404, "PUT", f"{STREAMS}/nope/exceptions", json=body)


def test_threshold_changes_through_the_update_route_apply_past_the_cursor(api: Api, world: World) -> None:
    world.ingest([f"m{i}" for i in range(6)])
    world.predict(1, {f"m{i}": refund(p) for i, p in enumerate([0.9, 0.4, 0.9, 0.4, 0.9, 0.4])})
    create(api)
    first = fetch(api, 1)
    api.ok("POST", f"{REFUNDS}/advance", json={"sequence_id": first["sequence_id"]})  # m0 delivered

    lower = {"stream": {"model": {"label_thresholds": [{"name": ["Billing", "Refund"], "threshold": 0.3}]}}}
    stream = api.ok("POST", REFUNDS, json=lower)["stream"]
    assert stream["model"]["label_thresholds"] == [{"name": ["Billing", "Refund"], "threshold": 0.3}]
    assert stream["backlog"] == 5
    assert ids(fetch(api)) == ["m1", "m2", "m3", "m4", "m5"]

    higher = {"stream": {"model": {"label_thresholds": [{"name": "Billing > Refund", "threshold": 0.95}]}}}
    api.ok("POST", REFUNDS, json=higher)
    assert fetch(api)["results"] == []
    changes = [s.event for s in api.store.read_all() if isinstance(s.event, ThresholdChanged)]
    assert [(c.actor, c.previous, c.threshold) for c in changes] == [("api:root", 0.5, 0.3), ("api:root", 0.3, 0.95)]

    # Re-pinning through the same route: version 2 judges what is not yet delivered.
    world.train()
    world.predict(2, {f"m{i}": refund(0.99) for i in range(6)})
    assert api.ok("POST", REFUNDS, json={"stream": {"model": {"version": 2}}})["stream"]["model"]["version"] == 2
    assert ids(fetch(api)) == ["m1", "m2", "m3", "m4", "m5"]
    # Nothing is recorded when one part of an update is bad.
    bad = {"stream": {"model": {"version": 1, "label_thresholds": [{"name": "", "threshold": 0.1}]}}}
    api.fails(400, "POST", REFUNDS, json=bad)
    assert api.ok("GET", REFUNDS)["stream"]["model"]["version"] == 2
    api.fails(404, "POST", REFUNDS, json={"stream": {"model": {"version": 7}}})
    api.fails(400, "POST", REFUNDS, json={"stream": {"model": {"label_thresholds": [{"name": "A", "threshold": 2}]}}})
    api.fails(400, "POST", REFUNDS, json={"stream": {"title": "renamed"}})
    api.fails(404, "POST", f"{STREAMS}/nope", json=lower)


def test_bad_requests_are_400_and_unknown_streams_404(api: Api, world: World) -> None:
    create(api)
    for body in ({"size": 0}, {"size": 1025}, {}, {"size": "5"}, {"size": True}, {"size": 8, "max_filtered": 0}):
        api.fails(400, "POST", f"{REFUNDS}/fetch", json=body)
    assert fetch(api, 1024)["results"] == [] and fetch(api, 1, max_filtered=1024)["results"] == []
    assert "never handed out" in api.fails(400, "POST", f"{REFUNDS}/advance", json={"sequence_id": "99"})
    api.fails(400, "POST", f"{REFUNDS}/advance", json={"sequence_id": "abc"})
    api.fails(400, "POST", f"{REFUNDS}/advance", json={})

    assert "does not exist" in api.fails(404, "POST", f"{STREAMS}/nope/fetch", json={"size": 1})
    api.fails(404, "GET", f"{STREAMS}/nope")
    api.fails(404, "POST", f"{STREAMS}/nope/advance", json={"sequence_id": "1"})
    api.fails(404, "POST", f"{STREAMS}/nope/reset", json={"to_comment_created_at": "2024-01-01T00:00:00Z"})
    api.fails(404, "DELETE", f"{STREAMS}/nope/exceptions?uid=a.b")
    api.fails(404, "GET", "/api/v1/datasets/acme/nowhere/streams")
    api.fails(404, "POST", "/api/v1/datasets/acme/nowhere/streams/refunds/fetch", json={"size": 1})

    api.fails(400, "GET", f"{STREAMS}/bad%20name")
    api.fails(400, "PUT", STREAMS, json={"stream": {"name": "bad name"}})
    api.fails(400, "PUT", STREAMS, json={"stream": {"name": "x", "model": {"version": 0}}})
    api.fails(404, "PUT", STREAMS, json={"stream": {"name": "x", "model": {"version": 9}}})
    api.fails(400, "PUT", STREAMS, json={"stream": {"name": "x", "comment_filter": {"colour": "red"}}})
    api.fails(400, "PUT", STREAMS, json={"stream": {"name": "x", "title": "t\x00"}})
    api.fails(400, "PUT", STREAMS, json={"stream": {"name": "x", "model": {"label_thresholds": [{"name": "A"}]}}})
    api.fails(405, "PATCH", REFUNDS)


def test_a_dataset_without_a_model_has_no_streams_yet(api: Api) -> None:
    api.setup_source_and_dataset()
    assert "no model" in api.fails(400, "PUT", STREAMS, json={"stream": {"name": "refunds"}})


#: Each stream endpoint and the one permission it needs.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("GET", STREAMS, None, "triggers-consume"),
    ("GET", REFUNDS, None, "triggers-consume"),
    ("POST", f"{REFUNDS}/fetch", {"size": 4}, "triggers-consume"),
    ("POST", f"{REFUNDS}/advance", {"sequence_id": "0"}, "triggers-consume"),
    ("POST", f"{REFUNDS}/reset", {"to_comment_created_at": "2024-01-01T00:00:00Z"}, "triggers-consume"),
    ("GET", f"{REFUNDS}/exceptions", None, "triggers-consume"),
    ("PUT", f"{REFUNDS}/exceptions", {"exceptions": [{"uid": "a.b", "metadata": {"type": "t"}}]}, "triggers-consume"),
    ("DELETE", f"{REFUNDS}/exceptions?uid=a.b", None, "triggers-consume"),
    ("PUT", STREAMS, {"stream": {"name": "another"}}, "triggers-admin"),
    (
        "POST",
        REFUNDS,
        {"stream": {"model": {"label_thresholds": [{"name": "Card", "threshold": 0.7}]}}},
        "triggers-admin",
    ),
    ("DELETE", f"{STREAMS}/another", None, "triggers-admin"),
]


@pytest.mark.parametrize("permission", ["triggers-consume", "triggers-admin", "voc-readonly", "sources-read", None])
def test_each_stream_endpoint_needs_its_permission(api: Api, world: World, permission: str | None) -> None:
    create(api)
    headers = api.user(*([permission] if permission else []))
    for method, path, body, needed in ENDPOINTS:
        response = api.call(method, path, headers, json=body)
        assert response.json()["status"] == ("ok" if response.status_code == 200 else "error"), response.text
        expected = 200 if needed == permission else 403
        assert response.status_code == expected, (permission, method, path, response.text)
    for method, path, body, _ in ENDPOINTS:
        api.fails(401, method, path, headers={}, json=body)
    elsewhere = api.user("triggers-consume", "triggers-admin", project="other")
    api.fails(403, "POST", f"{REFUNDS}/fetch", elsewhere, json={"size": 1})


def test_sensitive_user_properties_need_their_permission(api: Api, world: World) -> None:
    api.ok("POST", "/api/v1/sources/acme/inbox", json={"source": {"sensitive_properties": ["string:Email"]}})
    world.ingest(["m1"], {"m1": {"string:Email": "ann@example.com", "string:Country": "uk"}})
    world.predict(1, {"m1": refund(0.9)})
    create(api)
    assert fetch(api)["results"][0]["comment"]["user_properties"]["string:Email"] == "ann@example.com"
    robot = api.user("triggers-consume")
    assert fetch(api, headers=robot)["results"][0]["comment"]["user_properties"] == {"string:Country": "uk"}
    trusted = api.user("triggers-consume", "sources-read-sensitive")
    assert "string:Email" in fetch(api, headers=trusted)["results"][0]["comment"]["user_properties"]


def test_the_routes_and_the_services_agree(api: Api, world: World) -> None:
    """What the CLI sees through the services is what the API answers."""
    world.ingest(["a", "b"])
    world.predict(1, {"a": refund(0.9), "b": refund(0.8)})
    create(api)
    assert fetch(api, 5) == {"status": "ok", **streams.fetch(api.store, "acme/support", "refunds", size=5)}
    assert api.ok("GET", REFUNDS)["stream"] == streams.get_stream(api.store, "acme/support", "refunds")

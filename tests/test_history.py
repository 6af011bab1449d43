"""Point in time: a scripted history of a dataset reconstructed exactly at three moments, and the diff."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from streams_helpers import DATASET, World, make_world, refund

from commine.handlers import history, streams
from commine.handlers import labels as service
from commine.handlers.labels import AnnotationRequest
from commine.persistence.projections import catch_up
from commine.persistence.store import EventStore


def moment() -> datetime:
    """Now, with the log's clock clearly on one side of it."""
    time.sleep(0.05)
    now = datetime.now(UTC)
    time.sleep(0.05)
    return now


def label(world: World, comment_id: str, *names: str) -> None:
    request = AnnotationRequest("acme/inbox", comment_id, labels=names)
    service.annotate(world.store, DATASET, [request], actor="trainer")
    catch_up(world.store)


def test_a_scripted_history_is_reconstructed_exactly_at_three_moments(store: EventStore) -> None:
    before = moment()
    world = make_world(store)
    world.ingest(["c1", "c2", "c3"])
    label(world, "c1", "Billing > Refund")
    label(world, "c2", "Card")
    version = world.train()
    world.predict(version, {"c1": refund(0.9), "c2": refund(0.2), "c3": refund(0.7)})
    streams.create_stream(store, DATASET, "refunds", label_thresholds=[thresholds("Billing > Refund", 0.5)], actor="a")
    first = moment()

    service.rename_label(store, DATASET, "Card", "Cards", actor="trainer")
    streams.change_threshold(store, DATASET, "refunds", ["Billing", "Refund"], 0.8, actor="robot-admin")
    fetched = streams.fetch(store, DATASET, "refunds", size=1)
    streams.advance(store, DATASET, "refunds", fetched["results"][0]["sequence_id"], actor="robot")
    catch_up(store)
    second = moment()

    label(world, "c3", "Cards")
    newer = world.train()
    streams.pin_model(store, DATASET, "refunds", newer, actor="robot-admin")
    catch_up(store)
    third = moment()

    assert history.dataset_at(store, DATASET, before)["exists"] is False
    at_first = history.dataset_at(store, DATASET, first)
    assert list(at_first["taxonomy"]) == ["Billing", "Billing > Refund", "Card"]
    uid = world.uid
    assert at_first["annotations"] == {
        uid("c1"): {"assigned": ["Billing", "Billing > Refund"], "dismissed": []},
        uid("c2"): {"assigned": ["Card"], "dismissed": []},
    }
    assert at_first["model"]["version"] == version
    assert at_first["streams"]["refunds"]["thresholds"] == {"Billing > Refund": 0.5}
    assert at_first["streams"]["refunds"]["cursor"] == 0

    at_second = history.dataset_at(store, DATASET, second)
    assert list(at_second["taxonomy"]) == ["Billing", "Billing > Refund", "Cards"]
    assert at_second["annotations"][uid("c2")] == {"assigned": ["Cards"], "dismissed": []}
    assert at_second["streams"]["refunds"]["thresholds"] == {"Billing > Refund": 0.8}
    assert at_second["streams"]["refunds"]["cursor"] == int(fetched["results"][0]["sequence_id"])
    assert at_second["model"] == at_first["model"]

    at_third = history.dataset_at(store, DATASET, third)
    assert at_third["annotations"][uid("c3")] == {"assigned": ["Cards"], "dismissed": []}
    assert at_third["model"]["version"] == newer
    assert at_third["streams"]["refunds"]["model_version"] == newer
    assert at_third["streams"]["refunds"]["cursor"] == at_second["streams"]["refunds"]["cursor"]
    # The last moment is the live state: the rebuild and the live read models agree.
    assert [s["model"]["version"] for s in streams.list_streams(store, DATASET)] == [newer]

    changes = history.diff(at_first, at_second)
    assert changes["taxonomy"] == {"added": {"Cards": ""}, "removed": {"Card": ""}}
    assert changes["annotations"]["changed"] == {
        uid("c2"): {
            "before": {"assigned": ["Card"], "dismissed": []},
            "after": {"assigned": ["Cards"], "dismissed": []},
        }
    }
    refunds = changes["streams"]["changed"]["refunds"]
    assert refunds["before"]["thresholds"] == {"Billing > Refund": 0.5}
    assert refunds["after"]["thresholds"] == {"Billing > Refund": 0.8}
    assert "model" not in changes
    assert history.diff(at_second, at_third)["model"]["after"]["version"] == newer
    assert history.diff(at_third, at_third) == {"from": at_third["at"], "to": at_third["at"]}


def thresholds(name: str, value: float) -> dict[str, object]:
    return {"name": name.split(" > "), "threshold": value}

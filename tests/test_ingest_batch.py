"""The envelope of an ingest message: what is malformed goes to the dead-letter queue at once."""

from __future__ import annotations

from typing import Any

import pytest

from commine.handlers.ingest import MalformedMessage, parse_batch


def body(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"batch_id": "b1", "source": "acme/inbox", "comments": []}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_a_well_formed_batch_parses_with_its_annotations() -> None:
    batch = parse_batch(body(dataset="acme/ds", actor="integration:crm", annotations=[{"id": "c1", "labels": ["A"]}]))
    assert (batch.actor, batch.dataset, batch.annotations) == ("integration:crm", "acme/ds", {"c1": ["A"]})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"comments": None}, "comments"),
        ({"batch_id": ""}, "batch_id"),
        ({"comments": "x"}, "comments must be a list"),
        ({"extra": 1}, "unknown field"),
        ({"source": "no-slash"}, "PROJECT/NAME"),
        ({"source": 5}, "source must be a string"),
        ({"dataset": ["acme/ds"]}, "dataset must be a string"),
        ({"actor": "x" * 257}, "actor must be a string of at most 256"),
        ({"actor": 7}, "actor must be a string"),
        ({"dataset": "acme/ds", "annotations": 5}, "annotations must be a list"),
        ({"dataset": "acme/ds", "annotations": [{"id": 1, "labels": ["A"]}]}, "each annotation"),
        ({"dataset": "acme/ds", "annotations": [{"id": "c", "labels": "A"}]}, "each annotation"),
        ({"annotations": [{"id": "c", "labels": ["A"]}]}, "annotations need a dataset"),
    ],
)
def test_a_malformed_envelope_is_refused_with_a_reason_that_names_the_problem(
    changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        parse_batch(body(**changes))


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(MalformedMessage, match="JSON object"):
        parse_batch(["not", "an", "object"])

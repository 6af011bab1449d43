"""Annotation: the labels a trainer assigned to (or dismissed from) one comment in one dataset.

A child label implies its parent: assigning ``Billing > Refund`` assigns ``Billing`` too.
"""

from __future__ import annotations

from typing import Any

from commine.domain.aggregate import Aggregate
from commine.domain.errors import DomainError
from commine.domain.names import label_ancestors, label_name
from commine.events import LabelApplied

SENTIMENTS = ("positive", "negative")


def annotation_aggregate_id(dataset_id: str, uid: str) -> str:
    return f"annotation:{dataset_id}/{uid}"


def with_ancestors(names: list[str]) -> list[str]:
    """Canonical names plus every ancestor, each once, ancestors first."""
    out: list[str] = []
    for name in names:
        canonical = label_name(name)
        for label in [*label_ancestors(canonical), canonical]:
            if label not in out:
                out.append(label)
    return out


def _label_set(entries: list[dict[str, Any]]) -> set[tuple[str, str | None]]:
    return {(entry["name"], entry.get("sentiment")) for entry in entries}


class Annotation(Aggregate):
    prefix = "annotation:"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.dataset_id, _, self.uid = aggregate_id.removeprefix(self.prefix).partition("/")
        self.assigned: list[dict[str, Any]] = []
        self.dismissed: list[str] = []

    def label(
        self,
        assigned: list[str],
        *,
        dismissed: list[str] | None = None,
        sentiment: str | None = None,
        has_sentiment: bool = False,
        actor: str,
    ) -> bool:
        """Assign labels (their parents implied) and dismiss others; False when nothing changed."""
        if sentiment is not None and (not has_sentiment or sentiment not in SENTIMENTS):
            raise DomainError(
                "sentiment must be positive or negative, on a dataset created with sentiment"
                if has_sentiment
                else "this dataset has no sentiment; leave sentiment out"
            )
        names = with_ancestors(assigned)
        gone = list(dict.fromkeys(label_name(d) for d in dismissed or []))
        clash = set(names) & set(gone)
        if clash:
            raise DomainError(f"a label cannot be both assigned and dismissed: {', '.join(sorted(clash))}")
        entries = [{"name": n, "sentiment": sentiment} for n in names]
        # Compared as sets: the same labels sent again in another order (a redelivery, a UI that
        # sorts differently) are no change and must not record an event.
        if _label_set(entries) == _label_set(self.assigned) and set(gone) == set(self.dismissed):
            return False
        self.record(LabelApplied, actor, dataset_id=self.dataset_id, uid=self.uid, assigned=entries, dismissed=gone)
        return True

    def _on_LabelApplied(self, event: LabelApplied) -> None:
        self.assigned = list(event.assigned)
        self.dismissed = list(event.dismissed)

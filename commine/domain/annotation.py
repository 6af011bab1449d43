"""Annotation: the labels a trainer assigned to (or dismissed from) one comment in one dataset.

A child label implies its parent: assigning ``Billing > Refund`` assigns ``Billing`` too, and
removing ``Billing`` removes ``Billing > Refund``.

``LabelApplied`` carries the whole labelling of the comment (what the reference API's
``labellings`` endpoint takes); ``LabelRemoved`` the names taken off it. Renaming, merging and
deleting labels are events of the dataset, not of each annotation: an annotation *follows* them
(``follow``), in log order, so that what it records next is in today's names and an old name
never comes back through a later re-labelling.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

from commine.domain.aggregate import Aggregate
from commine.domain.errors import DomainError
from commine.domain.names import label_ancestors, label_name
from commine.domain.taxonomy import TaxonomyChange, in_subtree, relabel
from commine.events import DomainEvent, LabelApplied, LabelRemoved

SENTIMENTS = ("positive", "negative")

#: An assigned label: ``{"name": "Billing > Refund", "sentiment": "positive" | "negative" | None}``.
Entry = dict[str, Any]


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


def _label_set(entries: list[Entry]) -> set[tuple[str, str | None]]:
    return {(entry["name"], entry.get("sentiment")) for entry in entries}


def _canonical(names: Iterable[str | list[str]]) -> list[str]:
    return list(dict.fromkeys(label_name(name) for name in names))


def check_sentiment(sentiment: str | None, has_sentiment: bool) -> None:
    """Sentiment is positive or negative, and only on a dataset created with sentiment."""
    if sentiment is not None and (not has_sentiment or sentiment not in SENTIMENTS):
        raise DomainError(
            "sentiment must be positive or negative, on a dataset created with sentiment"
            if has_sentiment
            else "this dataset has no sentiment; leave sentiment out"
        )


def follow_change(assigned: list[Entry], dismissed: list[str], event: TaxonomyChange) -> tuple[list[Entry], list[str]]:
    """A labelling after a rename, merge or deletion of labels.

    Names move with the taxonomy; deleted ones go. Where two names become one (a merge) the
    first keeps its place and sentiment; a label moved under a new parent brings that parent
    (a child implies its parent); a name both assigned and dismissed stays assigned only.
    """
    moved: dict[str, Entry] = {}
    for entry in assigned:
        name = relabel(entry["name"], event)
        if name is not None and name not in moved:
            moved[name] = {**entry, "name": name}
    out: dict[str, Entry] = {}
    for name, entry in moved.items():
        for ancestor in label_ancestors(name):
            if ancestor not in out:
                out[ancestor] = moved.get(ancestor, {**entry, "name": ancestor})
        out.setdefault(name, entry)
    gone = [n for n in dict.fromkeys(relabel(name, event) for name in dismissed) if n is not None and n not in out]
    return list(out.values()), gone


class Annotation(Aggregate):
    prefix = "annotation:"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.dataset_id, _, self.uid = aggregate_id.removeprefix(self.prefix).partition("/")
        self.assigned: list[Entry] = []
        self.dismissed: list[str] = []

    @classmethod
    def replay_following(
        cls,
        aggregate_id: str,
        events: Iterable[tuple[int, DomainEvent]],
        changes: Iterable[tuple[int, TaxonomyChange]],
    ) -> Self:
        """Replay its own events and follow the dataset's taxonomy changes, both by log position."""
        annotation = cls(aggregate_id)
        own = [(position, 0, event) for position, event in events]
        taxonomy = [(position, 1, event) for position, event in changes]
        for _, kind, event in sorted(own + taxonomy, key=lambda item: (item[0], item[1])):
            if kind == 0:
                annotation.apply(event)
            elif annotation.exists:
                annotation.follow(event)  # type: ignore[arg-type]
        return annotation

    def follow(self, event: TaxonomyChange) -> None:
        """Take a rename, merge or deletion of labels into the state (the version stays)."""
        self.assigned, self.dismissed = follow_change(self.assigned, self.dismissed, event)

    def label(
        self,
        assigned: list[str],
        *,
        dismissed: list[str] | None = None,
        sentiment: str | None = None,
        has_sentiment: bool = False,
        queue: str = "",
        actor: str,
    ) -> bool:
        """Replace the labelling: assign labels (parents implied), dismiss others; False when nothing changed."""
        check_sentiment(sentiment, has_sentiment)
        names = with_ancestors(assigned)
        gone = _canonical(dismissed or [])
        _refuse_clash(names, gone)
        entries = [{"name": n, "sentiment": sentiment} for n in names]
        return self._apply_labelling(entries, gone, actor, queue)

    def annotate(
        self,
        assign: list[str] | None = None,
        *,
        dismiss: list[str] | None = None,
        remove: list[str] | None = None,
        sentiment: str | None = None,
        has_sentiment: bool = False,
        queue: str = "",
        actor: str,
    ) -> bool:
        """Change the labelling: remove names, then add assigned and dismissed ones; False when nothing changed.

        Unlike ``label`` this keeps what is there: assigning a label leaves the others alone.
        ``sentiment`` goes to the labels assigned here (and their parents); a label assigned
        again without one keeps its sentiment. Dismissing a label un-assigns it and its
        children; assigning one un-dismisses it and its parents. Everything is checked before
        anything is recorded, so a refused command records nothing.
        """
        check_sentiment(sentiment, has_sentiment)
        names, gone, removing = with_ancestors(assign or []), _canonical(dismiss or []), _canonical(remove or [])
        _refuse_clash(names, gone)
        touched = sorted(n for n in [*names, *gone] if any(in_subtree(n, r) for r in removing))
        if touched:
            raise DomainError(f"a label cannot be removed and assigned or dismissed at once: {', '.join(touched)}")
        removed = self._removable(removing)
        assigned = [e for e in self.assigned if e["name"] not in removed]
        dismissed = [d for d in self.dismissed if d not in removed]
        entries, not_wanted = _added(assigned, dismissed, names, gone, sentiment)
        changed = self._remove(removed, actor)
        return self._apply_labelling(entries, not_wanted, actor, queue) or changed

    def unlabel(self, names: list[str], *, actor: str) -> bool:
        """Take labels off (assigned or dismissed), each with its children; False when none was there."""
        return self._remove(self._removable(_canonical(names)), actor)

    def _removable(self, roots: list[str]) -> list[str]:
        """The names on this annotation in the subtrees of ``roots``, assigned first."""
        present = [e["name"] for e in self.assigned] + self.dismissed
        return list(dict.fromkeys(n for n in present if any(in_subtree(n, root) for root in roots)))

    def _remove(self, names: list[str], actor: str) -> bool:
        if not names:
            return False
        self.record(LabelRemoved, actor, dataset_id=self.dataset_id, uid=self.uid, labels=names)
        return True

    def _apply_labelling(self, entries: list[Entry], dismissed: list[str], actor: str, queue: str) -> bool:
        # Compared as sets: the same labels sent again in another order (a redelivery, a UI that
        # sorts differently) are no change and must not record an event.
        if _label_set(entries) == _label_set(self.assigned) and set(dismissed) == set(self.dismissed):
            return False
        self.record(
            LabelApplied,
            actor,
            dataset_id=self.dataset_id,
            uid=self.uid,
            assigned=entries,
            dismissed=dismissed,
            queue=check_queue(queue),
        )
        return True

    def _on_LabelApplied(self, event: LabelApplied) -> None:
        self.assigned = [dict(entry) for entry in event.assigned]
        self.dismissed = list(event.dismissed)

    def _on_LabelRemoved(self, event: LabelRemoved) -> None:
        self.assigned = [e for e in self.assigned if e["name"] not in event.labels]
        self.dismissed = [d for d in self.dismissed if d not in event.labels]


#: The queues a review can come from (``commine.ml.active.MODES``; the domain does not import ml).
QUEUES = ("shuffle", "teach", "low-confidence", "uncertain", "check", "missed", "rebalance", "search", "discover")


def check_queue(queue: str) -> str:
    """The queue name, or a DomainError naming the known ones."""
    if queue and queue not in QUEUES:
        raise DomainError(f"unknown queue {queue!r}; expected one of {', '.join(QUEUES)}")
    return queue


def _refuse_clash(assigned: list[str], dismissed: list[str]) -> None:
    clash = set(assigned) & set(dismissed)
    if clash:
        raise DomainError(f"a label cannot be both assigned and dismissed: {', '.join(sorted(clash))}")


def _added(
    assigned: list[Entry], dismissed: list[str], names: list[str], gone: list[str], sentiment: str | None
) -> tuple[list[Entry], list[str]]:
    """``assigned`` and ``dismissed`` with ``names`` assigned and ``gone`` dismissed on top."""
    entries = {e["name"]: dict(e) for e in assigned if not any(in_subtree(e["name"], g) for g in gone)}
    for name in names:
        entry = entries.setdefault(name, {"name": name, "sentiment": sentiment})
        if sentiment is not None:
            entry["sentiment"] = sentiment
    kept = [d for d in dismissed if d not in entries]
    return list(entries.values()), kept + [g for g in gone if g not in kept]

"""What renaming, merging and deleting labels does to a label name.

All three are one move: every label in the subtree of a *source* goes under a *target*
(``Source > x`` becomes ``Target > x``), or away when there is no target (a deletion).

* ``LabelRenamed(old, new)`` moves ``[old]`` to ``new``,
* ``LabelsMerged(sources, target)`` moves ``sources`` to ``target``,
* ``LabelDeleted(name)`` moves ``[name]`` to nothing.

The Dataset aggregate, the Annotation aggregate and the read models all apply this one rule, so
the taxonomy, the labels of a message and the tables built from the log cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable

from commine.domain.names import LABEL_SEPARATOR
from commine.events import DomainEvent, LabelDeleted, LabelRenamed, LabelsMerged

#: The events that change label names everywhere in a dataset.
TaxonomyChange = LabelRenamed | LabelsMerged | LabelDeleted
TAXONOMY_CHANGES: tuple[type[DomainEvent], ...] = (LabelRenamed, LabelsMerged, LabelDeleted)


def in_subtree(name: str, root: str) -> bool:
    """True for ``root`` itself and every descendant of it (``A > B`` is in ``A``; ``AB`` is not)."""
    return name == root or name.startswith(root + LABEL_SEPARATOR)


def move(name: str, sources: Iterable[str], target: str | None) -> str | None:
    """Where ``name`` ends up when the subtrees of ``sources`` move to ``target`` (None: deleted)."""
    for source in sources:
        if in_subtree(name, source):
            return None if target is None else target + name[len(source) :]
    return name


def change_of(event: TaxonomyChange) -> tuple[list[str], str | None]:
    """The (sources, target) move a taxonomy event makes."""
    if isinstance(event, LabelRenamed):
        return [event.old_name], event.new_name
    if isinstance(event, LabelsMerged):
        return list(event.sources), event.target
    return [event.name], None


def relabel(name: str, event: TaxonomyChange) -> str | None:
    """The name ``name`` has after ``event``, or None when the event deleted it."""
    return move(name, *change_of(event))


def relabel_all(names: Iterable[str], event: TaxonomyChange) -> list[str]:
    """Names after ``event``: deleted ones left out, merged ones once, in their first place."""
    return list(dict.fromkeys(n for n in (relabel(name, event) for name in names) if n is not None))

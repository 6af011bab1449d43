"""Dataset: up to 20 sources and the taxonomy of labels trained over them."""

from __future__ import annotations

from commine.domain.aggregate import Aggregate
from commine.domain.errors import AlreadyExists, DomainError, NotFound
from commine.domain.names import check_resource_name, label_ancestors, label_name
from commine.domain.source import check_title
from commine.domain.taxonomy import in_subtree, move, relabel_all
from commine.events import (
    DatasetCreated,
    DatasetDeleted,
    DatasetUpdated,
    LabelDefined,
    LabelDeleted,
    LabelRenamed,
    LabelsMerged,
    SourceAddedToDataset,
)

MAX_SOURCES = 20
MAX_LABELS = 200


def dataset_aggregate_id(project: str, name: str) -> str:
    return f"dataset:{project}/{name}"


class Dataset(Aggregate):
    prefix = "dataset:"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.project, _, self.name = aggregate_id.removeprefix(self.prefix).partition("/")
        self.dataset_id = ""
        self.source_ids: list[str] = []
        self.labels: list[str] = []
        self.has_sentiment = False
        self.title = ""
        self.description = ""
        self.deleted = False

    @property
    def exists(self) -> bool:
        """Created and not deleted since: a deleted dataset's name is free for a new one."""
        return self.version > 0 and not self.deleted

    def create(
        self,
        *,
        dataset_id: str,
        source_ids: list[str],
        project_exists: bool,
        title: str = "",
        description: str = "",
        has_sentiment: bool = False,
        actor: str,
    ) -> None:
        check_resource_name("dataset", self.name)
        if not project_exists:
            raise NotFound(f"project {self.project!r} does not exist; create it first")
        if self.exists:
            raise AlreadyExists(f"dataset {self.project}/{self.name} exists already")
        check_title(title, description)
        self.record(
            DatasetCreated,
            actor,
            dataset_id=dataset_id,
            project=self.project,
            name=self.name,
            title=title or self.name,
            description=description,
            has_sentiment=has_sentiment,
        )
        for source_id in source_ids:
            self.add_source(source_id, actor=actor)

    def update(self, *, title: str | None = None, description: str | None = None, actor: str) -> bool:
        """Change the title or description (None keeps one); False when nothing changes."""
        self._require()
        new_title = self.title if title is None else (title or self.name)
        new_description = self.description if description is None else description
        check_title(new_title, new_description)
        if (new_title, new_description) == (self.title, self.description):
            return False
        self.record(DatasetUpdated, actor, dataset_id=self.dataset_id, title=new_title, description=new_description)
        return True

    def delete(self, *, reason: str = "", actor: str) -> None:
        """Delete the dataset with its annotations, models and streams; its sources and messages stay."""
        self._require()
        self.record(DatasetDeleted, actor, dataset_id=self.dataset_id, reason=reason)

    def add_source(self, source_id: str, *, actor: str) -> None:
        self._require()
        if source_id in self.source_ids:
            return
        if len(self.source_ids) >= MAX_SOURCES:
            raise DomainError(f"a dataset holds at most {MAX_SOURCES} sources")
        self.record(SourceAddedToDataset, actor, dataset_id=self.dataset_id, source_id=source_id)

    def define_label(self, name: str | list[str], *, description: str = "", actor: str) -> str:
        """Add a label to the taxonomy; its missing ancestors are defined first."""
        self._require()
        canonical = label_name(name)
        missing = [n for n in [*label_ancestors(canonical), canonical] if n not in self.labels]
        if len(self.labels) + len(missing) > MAX_LABELS:
            raise DomainError(f"a taxonomy holds at most {MAX_LABELS} labels")
        for label in missing:
            text = description if label == canonical else ""
            self.record(LabelDefined, actor, dataset_id=self.dataset_id, name=label, description=text)
        return canonical

    def rename_label(self, old: str | list[str], new: str | list[str], *, actor: str) -> str:
        """Rename a label and its children (``Old > x`` becomes ``New > x``); returns the new name.

        Missing ancestors of the new name are defined first. Nothing is recorded when a child's
        new name would be too long or taken, so a rename never half happens.
        """
        self._require()
        old_name, new_name = label_name(old), label_name(new)
        self._require_labels([old_name])
        if new_name in self.labels:
            raise AlreadyExists(f"label {new_name!r} is in the taxonomy already; merge into it instead")
        if in_subtree(new_name, old_name):
            raise DomainError(f"cannot rename {old_name!r} to {new_name!r}, inside itself")
        moves = self._moves([old_name], new_name, verb="renaming")
        taken = sorted(moved for moved in moves.values() if moved in self.labels)
        if taken:
            raise AlreadyExists(
                f"renaming {old_name!r} to {new_name!r} would rename a child to {taken[0]!r}, "
                "which is in the taxonomy already"
            )
        self._define_missing(label_ancestors(new_name), actor=actor)
        self.record(LabelRenamed, actor, dataset_id=self.dataset_id, old_name=old_name, new_name=new_name)
        return new_name

    def merge_labels(self, sources: list[str | list[str]], target: str | list[str], *, actor: str) -> str:
        """Fold labels (and their children) into ``target``, defined if missing; returns its name.

        ``Source > x`` moves to ``Target > x``, merged with it when that exists. The target may
        be among the sources (``merge A, B into A``); it is then left out of them.
        """
        self._require()
        target_name = label_name(target)
        names = list(dict.fromkeys(label_name(source) for source in sources))
        self._require_labels(names)
        names = [name for name in names if name != target_name]
        if not names:
            raise DomainError("name at least one label other than the target to merge into it")
        self._check_merge_shape(names, target_name)
        self._moves(names, target_name, verb="merging")
        self._define_missing([*label_ancestors(target_name), target_name], actor=actor)
        self.record(LabelsMerged, actor, dataset_id=self.dataset_id, sources=names, target=target_name)
        return target_name

    def delete_label(self, name: str | list[str], *, actor: str) -> list[str]:
        """Delete a label and its children; returns the names deleted, the label first."""
        self._require()
        canonical = label_name(name)
        self._require_labels([canonical])
        gone = [label for label in self.labels if in_subtree(label, canonical)]
        self.record(LabelDeleted, actor, dataset_id=self.dataset_id, name=canonical)
        return sorted(gone, key=lambda label: (label != canonical, label))

    def _require_labels(self, names: list[str]) -> None:
        unknown = [name for name in names if name not in self.labels]
        if unknown:
            raise NotFound(f"label {unknown[0]!r} is not in the taxonomy of {self.project}/{self.name}")

    def _check_merge_shape(self, sources: list[str], target: str) -> None:
        """A merge moves whole subtrees: none may hold the target or another source."""
        for source in sources:
            if in_subtree(target, source):
                raise DomainError(f"cannot merge {source!r} into {target!r}, inside itself")
            inner = [other for other in sources if other != source and in_subtree(other, source)]
            if inner:
                raise DomainError(f"{inner[0]!r} is inside {source!r}: merging {source!r} moves it along already")

    def _moves(self, sources: list[str], target: str, *, verb: str) -> dict[str, str]:
        """Each label of the sources' subtrees with its name under ``target``, each checked."""
        moves: dict[str, str] = {}
        for label in self.labels:
            moved = move(label, sources, target)
            if moved is None or moved == label:
                continue
            try:
                moves[label] = label_name(moved)
            except DomainError as exc:
                raise DomainError(f"{verb} {label!r} would give {moved!r}: {exc}") from None
        return moves

    def _define_missing(self, names: list[str], *, actor: str) -> None:
        """Define those of ``names`` (ancestors first) the taxonomy lacks, within its size limit."""
        missing = [name for name in names if name not in self.labels]
        if len(self.labels) + len(missing) > MAX_LABELS:
            raise DomainError(f"a taxonomy holds at most {MAX_LABELS} labels")
        for label in missing:
            self.record(LabelDefined, actor, dataset_id=self.dataset_id, name=label, description="")

    def _require(self) -> None:
        if not self.exists:
            raise NotFound(f"dataset {self.project}/{self.name} does not exist")

    def _on_DatasetCreated(self, event: DatasetCreated) -> None:
        self.deleted = False
        self.source_ids, self.labels = [], []
        self.dataset_id = event.dataset_id
        self.has_sentiment = event.has_sentiment
        self.title = event.title
        self.description = event.description

    def _on_DatasetUpdated(self, event: DatasetUpdated) -> None:
        self.title = event.title
        self.description = event.description

    def _on_DatasetDeleted(self, event: DatasetDeleted) -> None:
        self.deleted = True

    def _on_SourceAddedToDataset(self, event: SourceAddedToDataset) -> None:
        self.source_ids.append(event.source_id)

    def _on_LabelDefined(self, event: LabelDefined) -> None:
        self.labels.append(event.name)

    def _on_LabelRenamed(self, event: LabelRenamed) -> None:
        self.labels = relabel_all(self.labels, event)

    def _on_LabelsMerged(self, event: LabelsMerged) -> None:
        self.labels = relabel_all(self.labels, event)

    def _on_LabelDeleted(self, event: LabelDeleted) -> None:
        self.labels = relabel_all(self.labels, event)

"""Dataset: up to 20 sources and the taxonomy of labels trained over them."""

from __future__ import annotations

from commine.domain.aggregate import Aggregate
from commine.domain.errors import AlreadyExists, DomainError, NotFound
from commine.domain.names import check_resource_name, label_ancestors, label_name
from commine.domain.source import check_title
from commine.events import DatasetCreated, LabelDefined, LabelRenamed, SourceAddedToDataset

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

    def rename_label(self, old: str | list[str], new: str | list[str], *, actor: str) -> None:
        self._require()
        old_name, new_name = label_name(old), label_name(new)
        if old_name not in self.labels:
            raise NotFound(f"label {old_name!r} is not in the taxonomy")
        if new_name in self.labels:
            raise AlreadyExists(f"label {new_name!r} is in the taxonomy already")
        self.record(LabelRenamed, actor, dataset_id=self.dataset_id, old_name=old_name, new_name=new_name)

    def _require(self) -> None:
        if not self.exists:
            raise NotFound(f"dataset {self.project}/{self.name} does not exist")

    def _on_DatasetCreated(self, event: DatasetCreated) -> None:
        self.dataset_id = event.dataset_id
        self.has_sentiment = event.has_sentiment

    def _on_SourceAddedToDataset(self, event: SourceAddedToDataset) -> None:
        self.source_ids.append(event.source_id)

    def _on_LabelDefined(self, event: LabelDefined) -> None:
        self.labels.append(event.name)

    def _on_LabelRenamed(self, event: LabelRenamed) -> None:
        prefix = event.old_name + " > "
        self.labels = [
            event.new_name + label[len(event.old_name) :]
            if label == event.old_name or label.startswith(prefix)
            else label
            for label in self.labels
        ]

"""Stream: a dataset's work queue for robots, pinned to a model version with per-label thresholds."""

from __future__ import annotations

from typing import Any

from commine.domain.aggregate import Aggregate
from commine.domain.errors import AlreadyExists, DomainError
from commine.domain.names import check_resource_name, label_name, label_parts
from commine.events import StreamCreated


def stream_aggregate_id(dataset_id: str, name: str) -> str:
    return f"stream:{dataset_id}/{name}"


def check_thresholds(label_thresholds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in label_thresholds:
        # Bad input gets a DomainError naming it, not a KeyError / AttributeError from below.
        if not isinstance(item, dict) or "name" not in item:
            raise DomainError(f'a label threshold must be {{"name": ..., "threshold": ...}}, got {item!r}')
        threshold = item.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            raise DomainError(f"threshold of {item.get('name')!r} must be a number from 0 to 1")
        out.append({"name": label_parts(label_name(item["name"])), "threshold": float(threshold)})
    return out


class Stream(Aggregate):
    prefix = "stream:"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.dataset_id, _, self.name = aggregate_id.removeprefix(self.prefix).partition("/")
        self.model_version: int | None = None

    def create(
        self,
        *,
        stream_id: str,
        model_version: int | None,
        label_thresholds: list[dict[str, Any]],
        comment_filter: dict[str, Any] | None = None,
        title: str = "",
        description: str = "",
        actor: str,
    ) -> None:
        check_resource_name("stream", self.name)
        if self.exists:
            raise AlreadyExists(f"stream {self.name!r} exists already in this dataset")
        self.record(
            StreamCreated,
            actor,
            stream_id=stream_id,
            dataset_id=self.dataset_id,
            name=self.name,
            title=title or self.name,
            description=description,
            model_version=model_version,
            label_thresholds=check_thresholds(label_thresholds),
            comment_filter=comment_filter or {},
        )

    def _on_StreamCreated(self, event: StreamCreated) -> None:
        self.model_version = event.model_version

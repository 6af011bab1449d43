"""Model versions: the numbered models trained for one dataset.

Versions count up from 1 in the order they were registered; the aggregate's optimistic version
check makes two trainers finishing at once get distinct numbers instead of one overwriting the
other.
"""

from __future__ import annotations

from typing import Any

from commine.domain.aggregate import Aggregate
from commine.domain.errors import DomainError
from commine.events import ModelTrained


def models_aggregate_id(dataset_id: str) -> str:
    return f"models:{dataset_id}"


class ModelVersions(Aggregate):
    prefix = "models:"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.dataset_id = aggregate_id.removeprefix(self.prefix)
        self.latest = 0
        self.newest: ModelTrained | None = None
        self.trained: dict[int, ModelTrained] = {}

    def register(
        self,
        *,
        labels: list[str],
        hyperparameters: dict[str, Any],
        training_size: int,
        metrics: dict[str, Any],
        artifact_hash: str,
        trained_on_position: int,
        actor: str,
    ) -> int:
        """Record a newly trained model; returns its version number."""
        if not labels:
            raise DomainError("a model needs at least one label")
        if len(artifact_hash) != 64:
            raise DomainError("a model needs the SHA-256 of its artifact")
        self.record(
            ModelTrained,
            actor,
            dataset_id=self.dataset_id,
            version=self.latest + 1,
            labels=labels,
            hyperparameters=hyperparameters,
            training_size=training_size,
            metrics=metrics,
            artifact_hash=artifact_hash,
            trained_on_position=trained_on_position,
        )
        return self.latest

    def _on_ModelTrained(self, event: ModelTrained) -> None:
        self.latest = event.version
        self.newest = event
        self.trained[event.version] = event

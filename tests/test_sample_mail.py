"""The generated sample mail: deterministic, valid comments, every intent, varied bodies."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commine.domain.comment import normalise_comment, parse_timestamp
from commine.domain.names import MAX_LABEL_LENGTH, label_name
from commine.scripts.sample_mail import INTENTS, SampleMessage, generate, to_csv_rows


@pytest.fixture(scope="module")
def sample() -> list[SampleMessage]:
    return generate(500, seed=0)


def _first(message: SampleMessage) -> dict:
    return message.comment["messages"][0]


def test_the_same_seed_gives_identical_output() -> None:
    assert generate(120, seed=7) == generate(120, seed=7)


def test_a_different_seed_gives_different_output() -> None:
    assert generate(120, seed=7) != generate(120, seed=8)


def test_every_comment_passes_normalise_comment(sample: list[SampleMessage]) -> None:
    for message in sample:
        normalised = normalise_comment(message.comment)
        assert normalised["id"] == message.comment["id"]
        assert normalised["timestamp"] == message.comment["timestamp"]


def test_ids_are_unique_and_numbered_in_order(sample: list[SampleMessage]) -> None:
    ids = [m.comment["id"] for m in sample]
    assert len(set(ids)) == len(ids)
    assert ids[:3] == ["demo-000001", "demo-000002", "demo-000003"]


def test_timestamps_never_decrease_and_spread_over_about_ninety_days(sample: list[SampleMessage]) -> None:
    times = [parse_timestamp(m.comment["timestamp"], "timestamp") for m in sample]
    assert times == sorted(times)
    start = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    assert start <= times[0] and times[-1] < start + timedelta(days=92)
    assert times[-1] - times[0] > timedelta(days=60)


def test_timestamps_start_from_the_given_start() -> None:
    start = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    times = [parse_timestamp(m.comment["timestamp"], "t") for m in generate(50, seed=3, start=start)]
    assert all(start <= t < start + timedelta(days=92) for t in times)


def test_a_naive_start_is_taken_as_utc() -> None:
    naive = generate(20, seed=4, start=datetime(2025, 6, 1, 12, 0))
    aware = generate(20, seed=4, start=datetime(2025, 6, 1, 12, 0, tzinfo=UTC))
    assert naive == aware


def test_sent_at_is_the_comment_timestamp(sample: list[SampleMessage]) -> None:
    assert all(_first(m)["sent_at"] == m.comment["timestamp"] for m in sample)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_intent_appears_in_500_messages(seed: int) -> None:
    labels = {m.label for m in generate(500, seed=seed)}
    assert set(INTENTS) <= labels


def test_there_are_at_least_seven_intents_and_every_label_name_is_canonical_and_short() -> None:
    assert len(INTENTS) >= 7
    assert len(set(INTENTS)) == len(INTENTS)
    for name in INTENTS:
        assert len(name) <= MAX_LABEL_LENGTH
        assert label_name(name) == name


def test_every_label_is_an_intent_or_none(sample: list[SampleMessage]) -> None:
    assert {m.label for m in sample} <= {*INTENTS, None}


def test_some_messages_have_no_intent(sample: list[SampleMessage]) -> None:
    unlabelled = [m for m in sample if m.label is None]
    assert 5 <= len(unlabelled) <= 100


def test_bodies_are_varied(sample: list[SampleMessage]) -> None:
    bodies = {_first(m)["body"]["text"] for m in sample}
    assert len(bodies) >= 0.9 * len(sample)


def test_intents_share_some_vocabulary(sample: list[SampleMessage]) -> None:
    complaints = [_first(m)["body"]["text"] for m in sample if m.label == "Complaint"]
    assert any("refund" in body.lower() for body in complaints)


def test_body_paragraphs_have_two_to_six_sentences(sample: list[SampleMessage]) -> None:
    for message in sample:
        body = _first(message)["body"]["text"]
        paragraph = max(body.split("\n\n"), key=len)
        sentences = re.findall(r"[.!?](?:\s|$)", paragraph)
        assert 2 <= len(sentences) <= 6, body


def test_about_one_in_ten_messages_replies_in_an_earlier_thread(sample: list[SampleMessage]) -> None:
    by_thread: dict[str, list[SampleMessage]] = {}
    for message in sample:
        by_thread.setdefault(message.comment["thread_id"], []).append(message)
    replies = [m for m in sample if _first(m)["subject"]["text"].startswith("Re: ") and m.label is not None]
    assert 20 <= len(replies) <= 90
    for reply in replies:
        thread = by_thread[reply.comment["thread_id"]]
        original = thread[0]
        assert original is not reply
        assert _first(reply)["subject"]["text"] == "Re: " + _first(original)["subject"]["text"]
        assert _first(reply)["from"] == _first(original)["from"]
        assert reply.label == original.label


def test_addresses_use_example_domains_only(sample: list[SampleMessage]) -> None:
    for message in sample:
        first = _first(message)
        for address in [first["from"], *first["to"]]:
            domain = address.rpartition("@")[2]
            assert domain == "northwind.example" or re.fullmatch(r"(?:[a-z]+\.)?example\.(?:com|org|net)", domain)


def test_user_properties_are_channel_region_and_tenure(sample: list[SampleMessage]) -> None:
    for message in sample:
        props = message.comment["user_properties"]
        assert props["string:Channel"] == "email"
        assert props["string:Region"]
        assert isinstance(props["number:Customer Tenure Years"], int)
    assert len({m.comment["user_properties"]["string:Region"] for m in sample}) > 2


def test_bodies_mention_references_like_policy_numbers_and_amounts(sample: list[SampleMessage]) -> None:
    text = "\n".join(_first(m)["body"]["text"] for m in sample)
    assert re.search(r"\bPOL-\d{6}\b", text)
    assert re.search(r"\bCLM-\d{6}\b", text)
    assert re.search(r"£\d+\.\d{2}\b", text)
    assert "{" not in text and "}" not in text


def test_csv_rows_are_flat_with_a_blank_label_for_no_intent(sample: list[SampleMessage]) -> None:
    rows = to_csv_rows(sample)
    assert len(rows) == len(sample)
    for row, message in zip(rows, sample, strict=True):
        assert list(row) == ["id", "timestamp", "subject", "from", "text", "label"]
        assert all(isinstance(value, str) for value in row.values())
        assert row["id"] == message.comment["id"]
        assert row["text"] == _first(message)["body"]["text"]
        assert row["label"] == (message.label or "")
    assert any(row["label"] == "" for row in rows)


def test_zero_messages_is_an_empty_list() -> None:
    assert generate(0) == []
    assert to_csv_rows([]) == []


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(ValueError):
        generate(-1)


@settings(deadline=None, max_examples=60)
@given(count=st.integers(min_value=0, max_value=200), seed=st.integers())
def test_generate_returns_exactly_count_messages(count: int, seed: int) -> None:
    messages = generate(count, seed=seed)
    assert len(messages) == count
    assert len({m.comment["id"] for m in messages}) == count

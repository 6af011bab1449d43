"""The stream rules as pure functions (examples and properties) and the Stream aggregate's commands."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commine.domain.errors import AlreadyExists, DomainError, NotFound
from commine.domain.stream import (
    Stream,
    StreamRules,
    check_filter,
    labels_returned,
    passes_filter,
    qualifies,
    stream_aggregate_id,
)
from commine.events import (
    ExceptionCleared,
    ExceptionReported,
    StreamAdvanced,
    StreamDeleted,
    StreamModelChanged,
    StreamReset,
    ThresholdChanged,
)

SOURCE = "0123456789abcdef"
LABELS = ["A", "A > B", "C", "D > E"]
COMMENT = {
    "id": "x",
    "timestamp": "2026-05-01T09:30:00Z",
    "messages": [{"body": {"text": "hi"}}],
    "user_properties": {"string:Country": "uk", "number:NPS": 7},
}

probabilities = st.dictionaries(st.sampled_from(LABELS), st.floats(0, 1))
thresholds = st.dictionaries(st.sampled_from(LABELS), st.floats(0, 1))


def test_labels_returned_are_those_at_their_threshold_most_probable_first() -> None:
    got = labels_returned({"A": 0.9, "A > B": 0.95, "C": 0.2}, {"A": 0.5, "A > B": 0.95, "C": 0.3, "D > E": 0})
    assert got == [
        {"name": ["A", "B"], "probability": 0.95},
        {"name": ["A"], "probability": 0.9},
        {"name": ["D", "E"], "probability": 0.0},  # a threshold of 0 always returns the label
    ]


@given(probabilities, thresholds)
def test_a_label_is_returned_exactly_when_it_meets_its_threshold(p: dict, t: dict) -> None:
    returned = {" > ".join(item["name"]) for item in labels_returned(p, t)}
    assert returned == {name for name, threshold in t.items() if p.get(name, 0.0) >= threshold}
    shown = [item["probability"] for item in labels_returned(p, t)]
    assert shown == sorted(shown, reverse=True)


@given(probabilities, thresholds, st.floats(0, 1))
def test_lowering_a_threshold_never_drops_a_message(p: dict, t: dict, factor: float) -> None:
    before = StreamRules(t)
    after = StreamRules({name: value * factor for name, value in t.items()})
    assert qualifies(COMMENT, SOURCE, p, after) >= qualifies(COMMENT, SOURCE, p, before)


@given(probabilities, thresholds, st.booleans())
def test_deliver_all_filtered_delivers_what_passes_the_filter(p: dict, t: dict, uk: bool) -> None:
    comment_filter = check_filter({"user_properties": {"string:Country": {"one_of": ["uk" if uk else "fr"]}}})
    rules = StreamRules(t, comment_filter, deliver_all_filtered=True)
    assert qualifies(COMMENT, SOURCE, p, rules) is uk
    strict = StreamRules(t, comment_filter)
    assert qualifies(COMMENT, SOURCE, p, strict) is (uk and bool(labels_returned(p, t)))


@given(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=4))
def test_one_of_and_not_one_of_are_complements(value: str, values: list[str]) -> None:
    comment = {**COMMENT, "user_properties": {"string:K": value}}
    inside = passes_filter(comment, SOURCE, {"user_properties": {"string:K": {"one_of": values}}})
    outside = passes_filter(comment, SOURCE, {"user_properties": {"string:K": {"not_one_of": values}}})
    assert inside is (value in values)
    assert inside is not outside


@pytest.mark.parametrize(
    ("comment_filter", "expected"),
    [
        ({}, True),
        ({"user_properties": {"number:NPS": {"minimum": 7, "maximum": 9}}}, True),
        ({"user_properties": {"number:NPS": {"minimum": 8}}}, False),
        ({"user_properties": {"number:Missing": {"minimum": 0}}}, False),  # a missing value fails a range
        ({"user_properties": {"string:Missing": {"not_one_of": ["x"]}}}, True),
        ({"sources": [SOURCE]}, True),
        ({"sources": ["fedcba9876543210"]}, False),
        ({"timestamp": {"minimum": "2026-05-01T09:30:00Z"}}, True),
        ({"timestamp": {"maximum": "2026-05-01T09:29:59+00:00"}}, False),
        ({"timestamp": {"minimum": "2026-05-01T10:00:00+01:00"}}, True),  # same instant, another zone
    ],
)
def test_the_comment_filter(comment_filter: dict, expected: bool) -> None:
    assert passes_filter(COMMENT, SOURCE, check_filter(comment_filter)) is expected


@pytest.mark.parametrize(
    "bad",
    [
        "uk",
        {"colour": "red"},
        {"user_properties": {"Country": {"one_of": ["uk"]}}},
        {"user_properties": {"string:Country": {"one_of": "uk"}}},
        {"user_properties": {"string:Country": {"between": [1, 2]}}},
        {"user_properties": {"number:NPS": {"minimum": "7"}}},
        {"sources": "abc"},
        {"timestamp": {"minimum": "yesterday"}},
    ],
)
def test_a_bad_filter_is_refused_with_a_reason(bad: object) -> None:
    with pytest.raises(DomainError):
        check_filter(bad)


def created() -> Stream:
    stream = Stream(stream_aggregate_id("d" * 16, "refunds"))
    stream.create(
        stream_id="1" * 16,
        model_version=1,
        label_thresholds=[{"name": ["A", "B"], "threshold": 0.5}],
        actor="user:ann",
    )
    stream.collect()
    return stream


def test_threshold_changes_say_who_and_from_what() -> None:
    stream = created()
    assert stream.change_threshold("A > B", 0.3, actor="user:bob")
    assert not stream.change_threshold(["A", "B"], 0.3, actor="user:bob")
    assert stream.change_threshold("C", 0.9, actor="user:bob")  # a new label joins the stream
    first, second = stream.collect()
    assert isinstance(first, ThresholdChanged)
    assert (first.label, first.previous, first.threshold, first.actor) == (["A", "B"], 0.5, 0.3, "user:bob")
    assert second.previous is None
    with pytest.raises(DomainError):
        stream.change_threshold("A", -0.1, actor="u")


def test_advance_is_forward_only_and_reset_pin_exceptions_delete_record_events() -> None:
    stream = created()
    assert stream.advance("5", actor="robot")
    assert not stream.advance("5", actor="robot") and not stream.advance("3", actor="robot")
    with pytest.raises(DomainError):
        stream.advance("-1", actor="robot")
    stream.reset("2026-05-01T00:00:00+02:00", actor="robot")
    assert stream.change_model_version(2, known_versions={1, 2}, actor="u")
    assert not stream.change_model_version(2, known_versions={1, 2}, actor="u")
    with pytest.raises(NotFound):
        stream.change_model_version(3, known_versions={1, 2}, actor="u")
    assert stream.report_exception(f"{SOURCE}.m1", "Wrong", actor="robot")
    assert not stream.report_exception(f"{SOURCE}.m1", "Wrong", actor="robot")
    assert stream.clear_exception(f"{SOURCE}.m1", actor="robot")
    assert not stream.clear_exception(f"{SOURCE}.m1", actor="robot")
    stream.delete(actor="u")
    kinds = [type(e) for e in stream.collect()]
    assert kinds == [
        StreamAdvanced,
        StreamReset,
        StreamModelChanged,
        ExceptionReported,
        ExceptionCleared,
        StreamDeleted,
    ]
    with pytest.raises(NotFound):
        stream.advance("6", actor="robot")


def test_a_stream_name_is_taken_until_the_stream_is_deleted() -> None:
    stream = created()
    with pytest.raises(AlreadyExists):
        stream.create(stream_id="2" * 16, model_version=1, label_thresholds=[], actor="u")
    stream.delete(actor="u")
    stream.create(stream_id="2" * 16, model_version=1, label_thresholds=[], delivery="queue", actor="u")
    assert stream.stream_id == "2" * 16 and stream.cursor == 0
    with pytest.raises(DomainError):
        Stream(stream_aggregate_id("d" * 16, "x")).create(
            stream_id="3" * 16, model_version=1, label_thresholds=[], delivery="pigeon", actor="u"
        )
    with pytest.raises(DomainError):
        Stream(stream_aggregate_id("d" * 16, "x")).create(
            stream_id="3" * 16,
            model_version=1,
            label_thresholds=[{"name": "A", "threshold": 0.1}, {"name": ["A"], "threshold": 0.2}],
            actor="u",
        )


#: Commands a robot or a trainer may send a stream, as (name, argument).
commands = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(0, 50)),
        st.tuples(st.just("threshold"), st.tuples(st.sampled_from(LABELS), st.floats(0, 1))),
        st.tuples(st.just("pin"), st.integers(1, 3)),
        st.tuples(st.just("report"), st.integers(0, 3)),
        st.tuples(st.just("clear"), st.integers(0, 3)),
        st.tuples(st.just("reset"), st.just("2026-05-01T00:00:00Z")),
    ),
    max_size=30,
)


def _send(stream: Stream, name: str, argument: object) -> None:
    send = {
        "advance": lambda a: stream.advance(str(a), actor="robot"),
        "threshold": lambda a: stream.change_threshold(a[0], a[1], actor="u"),
        "pin": lambda a: stream.change_model_version(a, known_versions={1, 2, 3}, actor="u"),
        "report": lambda a: stream.report_exception(f"{SOURCE}.m{a}", "Wrong", actor="robot"),
        "clear": lambda a: stream.clear_exception(f"{SOURCE}.m{a}", actor="robot"),
        "reset": lambda a: stream.reset(a, actor="robot"),
    }
    send[name](argument)


@given(commands, st.data())
def test_a_snapshot_and_the_events_after_it_give_the_state_the_whole_history_gives(
    sent: list[tuple[str, object]], data: st.DataObject
) -> None:
    stream = Stream(stream_aggregate_id("d" * 16, "refunds"))
    stream.create(stream_id="1" * 16, model_version=1, label_thresholds=[], actor="u")
    for name, argument in sent:
        _send(stream, name, argument)
    events = stream.collect()
    cut = data.draw(st.integers(1, len(events)))
    at_cut = Stream.replay(stream.id, events[:cut])
    # Through JSON, as the store keeps it.
    kept = json.loads(json.dumps(at_cut.state()))
    restored = Stream.from_snapshot(stream.id, at_cut.version, kept, events[cut:])
    whole = Stream.replay(stream.id, events)
    assert restored.state() == whole.state() and restored.version == whole.version == len(events)

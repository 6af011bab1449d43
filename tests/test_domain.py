"""The pure domain: name rules, the comment rules of the reference API, and the aggregates' decisions."""

from __future__ import annotations

import copy
import json
import math
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commine.domain.annotation import QUEUES, Annotation, annotation_aggregate_id
from commine.domain.comment import canonical, content_hash, normalise_comment
from commine.domain.dataset import MAX_LABELS, MAX_SOURCES, Dataset, dataset_aggregate_id
from commine.domain.errors import AlreadyExists, CommentError, DomainError, NotFound
from commine.domain.message import NEW, UNCHANGED, UPDATED, Message, message_aggregate_id
from commine.domain.names import (
    check_project_name,
    check_resource_name,
    label_ancestors,
    label_name,
    label_parts,
    split_full_name,
)
from commine.domain.project import Project, project_aggregate_id
from commine.domain.source import Source, source_aggregate_id
from commine.domain.stream import Stream, check_thresholds, stream_aggregate_id
from commine.events import (
    DatasetCreated,
    DatasetDeleted,
    LabelApplied,
    LabelDefined,
    LabelRenamed,
    MessageDeleted,
    MessageIngested,
    ProjectCreated,
    SourceAddedToDataset,
    SourceCreated,
    StreamCreated,
)

SOURCE_ID = "0123456789abcdef"
DATASET_ID = "fedcba9876543210"
ACTOR = "test"


def full_comment() -> dict[str, Any]:
    """A comment using every field the reference allows."""
    return {
        "id": "mail-0001",
        "timestamp": "2024-05-01T11:30:00+02:00",
        "thread_id": "thread-7",
        "messages": [
            {
                "body": {"text": "Where is my refund?", "translated_from": "Où est mon remboursement ?"},
                "subject": {"text": "Refund"},
                "signature": {"text": "-- Ann"},
                "from": "ann@example.com",
                "to": ["support@example.com"],
                "cc": ["boss@example.com"],
                "bcc": ["audit@example.com"],
                "sent_at": "2024-05-01T09:29:00Z",
                "language": "en",
            },
            {"body": "Second message, plain string body"},
        ],
        "user_properties": {"string:Country": "uk", "number:NPS": 7, "number:Score": 0.5},
        "attachments": [{"name": "invoice.pdf", "size": 1024, "content_type": "application/pdf"}],
        "text_format": "markdown",
    }


def minimal(**extra: Any) -> dict[str, Any]:
    comment: dict[str, Any] = {"id": "c1", "timestamp": "2024-05-01T09:30:00Z", "messages": [{"body": "hi"}]}
    comment.update(extra)
    return comment


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["acme", "Acme-Corp_2", "a.b.c", "x" * 1024])
def test_valid_project_names_are_accepted(name: str) -> None:
    assert check_project_name(name) == name


@pytest.mark.parametrize("name", ["", "acme corp", "acme/x", "x" * 1025, "acme\n", "ünï", None, 5])
def test_invalid_project_names_are_rejected(name: Any) -> None:
    with pytest.raises(DomainError, match="invalid project name"):
        check_project_name(name)


@pytest.mark.parametrize("name", ["inbox", "Inbox-2_b", "x" * 256])
def test_valid_resource_names_are_accepted(name: str) -> None:
    assert check_resource_name("source", name) == name


@pytest.mark.parametrize("name", ["", "in.box", "in box", "x" * 257, "inbox\n", "a/b"])
def test_invalid_resource_names_are_rejected_naming_the_kind(name: str) -> None:
    with pytest.raises(DomainError, match="invalid dataset name"):
        check_resource_name("dataset", name)


def test_a_full_name_splits_into_project_and_checked_name() -> None:
    assert split_full_name("source", "acme.eu/inbox") == ("acme.eu", "inbox")
    with pytest.raises(DomainError, match="PROJECT/NAME"):
        split_full_name("source", "inbox")
    with pytest.raises(DomainError, match="invalid source name"):
        split_full_name("source", "acme/in.box")


def test_both_label_forms_give_the_same_canonical_name() -> None:
    assert label_name("Billing > Refund") == "Billing > Refund"
    assert label_name(["Billing", "Refund"]) == "Billing > Refund"
    assert label_name("  Billing>Refund ") == "Billing > Refund"
    assert label_parts("Billing > Refund > Late") == ["Billing", "Refund", "Late"]
    assert label_parts(["Billing", "Refund"]) == ["Billing", "Refund"]


@pytest.mark.parametrize("name", ["", " ", "A >", "> B", "A >> B", [], ["A", ""], ["A", " "]])
def test_a_label_with_an_empty_level_is_rejected(name: Any) -> None:
    with pytest.raises(DomainError, match="every level needs a name"):
        label_name(name)


def test_a_level_of_the_list_form_may_not_hide_a_separator() -> None:
    with pytest.raises(DomainError, match="may not contain '>'"):
        label_name(["Billing > Refund"])


@pytest.mark.parametrize("name", [None, 5, ["A", 5]])
def test_a_label_that_is_neither_string_nor_list_of_strings_is_a_domain_error(name: Any) -> None:
    with pytest.raises(DomainError, match="string or a list of strings"):
        label_name(name)


def test_the_64_character_label_limit_counts_the_whole_hierarchy() -> None:
    parent, child = "P" * 30, "C" * 31
    assert len(label_name([parent, child])) == 64
    with pytest.raises(DomainError, match="at most 64"):
        label_name([parent, child + "C"])
    with pytest.raises(DomainError, match="at most 64"):
        label_name("x" * 65)
    assert label_name("x" * 64) == "x" * 64


def test_ancestors_are_listed_root_first() -> None:
    assert label_ancestors("A > B > C") == ["A", "A > B"]
    assert label_ancestors("A") == []


# --- comments --------------------------------------------------------------------------------


def test_a_full_valid_comment_is_accepted_and_normalised() -> None:
    comment = normalise_comment(full_comment())

    assert comment["id"] == "mail-0001"
    assert comment["timestamp"] == "2024-05-01T09:30:00Z"
    assert comment["thread_id"] == "thread-7"
    first, second = comment["messages"]
    assert first["body"] == {"text": "Where is my refund?", "translated_from": "Où est mon remboursement ?"}
    assert first["subject"] == {"text": "Refund"}
    assert first["from"] == "ann@example.com"
    assert first["to"] == ["support@example.com"]
    assert first["bcc"] == ["audit@example.com"]
    assert first["sent_at"] == "2024-05-01T09:29:00Z"
    assert first["language"] == "en"
    assert second == {"body": {"text": "Second message, plain string body"}}
    assert comment["user_properties"] == {"string:Country": "uk", "number:NPS": 7, "number:Score": 0.5}
    assert comment["attachments"] == [{"size": 1024, "name": "invoice.pdf", "content_type": "application/pdf"}]
    assert comment["text_format"] == "markdown"


def test_absent_optionals_are_left_out_and_plain_text_format_is_the_default() -> None:
    comment = normalise_comment(minimal(thread_id="", user_properties={}, attachments=[], text_format="plain"))

    assert comment == {"id": "c1", "timestamp": "2024-05-01T09:30:00Z", "messages": [{"body": {"text": "hi"}}]}


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2024-05-01T09:30:00Z", "2024-05-01T09:30:00Z"),
        ("2024-05-01T09:30:00z", "2024-05-01T09:30:00Z"),
        ("2024-05-01T11:30:00+02:00", "2024-05-01T09:30:00Z"),
        ("2024-05-01T04:30:00-05:00", "2024-05-01T09:30:00Z"),
        ("2024-05-01T09:30:00", "2024-05-01T09:30:00Z"),
        ("2024-05-01T09:30:00.250+00:00", "2024-05-01T09:30:00.250000Z"),
        (" 2024-05-01T09:30:00Z ", "2024-05-01T09:30:00Z"),
    ],
)
def test_timestamps_are_normalised_to_utc_with_a_z(stamp: str, expected: str) -> None:
    assert normalise_comment(minimal(timestamp=stamp))["timestamp"] == expected


@pytest.mark.parametrize(
    "stamp", ["yesterday", "2024-13-01T00:00:00Z", "", "   ", None, 1714555800, "0001-01-01T00:00:00+01:00"]
)
def test_a_bad_timestamp_is_a_comment_error_naming_the_field(stamp: Any) -> None:
    with pytest.raises(CommentError) as error:
        normalise_comment(minimal(timestamp=stamp))
    assert error.value.field == "timestamp"


def test_a_bad_sent_at_names_the_message_field() -> None:
    with pytest.raises(CommentError) as error:
        normalise_comment(minimal(messages=[{"body": "x"}, {"body": "y", "sent_at": "soon"}]))
    assert error.value.field == "messages[1].sent_at"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"messages": [{"body": {"text": "x" * 65537}}]}, "messages[0].body.text"),
        ({"messages": [{"body": "x", "subject": {"text": "s" * 65537}}]}, "messages[0].subject.text"),
        ({"messages": [{"body": "x", "from": "a" * 513}]}, "messages[0].from"),
        ({"messages": [{"body": "x", "to": ["ok@x", "a" * 513]}]}, "messages[0].to[1]"),
        ({"messages": [{"body": "x", "language": "en-GB-oxford"}]}, "messages[0].language"),
        ({"attachments": [{"name": "n" * 257, "size": 1, "content_type": "text/plain"}]}, "attachments[0].name"),
        (
            {"attachments": [{"name": "a", "size": 1, "content_type": "c" * 257}]},
            "attachments[0].content_type",
        ),
        ({"attachments": [{"name": "a", "size": -1, "content_type": "c"}]}, "attachments[0].size"),
        ({"user_properties": {"bool:Flag": "x"}}, "user_properties.bool:Flag"),
        ({"user_properties": {"Country": "uk"}}, "user_properties.Country"),
        ({"user_properties": {"string:": "uk"}}, "user_properties.string:"),
        ({"user_properties": {"number:NPS": math.inf}}, "user_properties.number:NPS"),
        ({"user_properties": {"number:NPS": math.nan}}, "user_properties.number:NPS"),
        ({"user_properties": {"number:NPS": 10**400}}, "user_properties.number:NPS"),
        ({"user_properties": {"number:NPS": "7"}}, "user_properties.number:NPS"),
        ({"user_properties": {"number:NPS": True}}, "user_properties.number:NPS"),
        ({"user_properties": {"string:Country": 5}}, "user_properties.string:Country"),
        ({"id": None}, "id"),
        ({"id": ""}, "id"),
        ({"id": "   "}, "id"),
        ({"id": "café"}, "id"),
        ({"id": "tab\there"}, "id"),
        ({"id": "x" * 1025}, "id"),
        ({"messages": []}, "messages"),
        ({"messages": [{"subject": "no body"}]}, "messages[0].body.text"),
        ({"messages": [{"body": {}}]}, "messages[0].body.text"),
        ({"messages": [{"body": 5}]}, "messages[0].body"),
        ({"text_format": "html"}, "text_format"),
        ({"unknown": 1}, "comment"),
        ({"messages": [{"body": "x", "colour": "red"}]}, "messages[0]"),
        ({"messages": [{"body": {"text": "x", "html": "<b>x</b>"}}]}, "messages[0].body"),
        ({"attachments": [{"name": "a", "size": 1, "content_type": "c", "bytes": "..."}]}, "attachments[0]"),
        ({"messages": [{"body": "nul \x00 inside"}]}, "messages[0].body.text"),
        ({"messages": [{"body": "lone \ud800 surrogate"}]}, "messages[0].body.text"),
    ],
)
def test_each_limit_of_the_reference_is_enforced_and_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(CommentError) as error:
        normalise_comment(minimal(**change))
    assert error.value.field == field
    assert str(error.value).startswith(field + ": ")


def test_values_at_the_limits_are_accepted() -> None:
    comment = normalise_comment(
        minimal(
            id="x" * 1024,
            messages=[{"body": "b" * 65536, "from": "f" * 512, "language": "l" * 8}],
            attachments=[{"name": "n" * 256, "size": 0, "content_type": "c" * 256}],
            user_properties={"number:Big": 1e308},
        )
    )
    assert len(comment["messages"][0]["body"]["text"]) == 65536
    assert comment["user_properties"] == {"number:Big": 1e308}


def test_an_empty_body_text_is_present_and_kept() -> None:
    # The reference requires body.text to be there, not to be non-empty (a mail may be all attachment).
    comment = normalise_comment(minimal(messages=[{"body": {"text": ""}}]))
    assert comment["messages"] == [{"body": {"text": ""}}]
    assert normalise_comment(comment) == comment


def test_a_comment_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(CommentError, match="JSON object"):
        normalise_comment(["id", "c1"])


def test_blank_string_properties_are_dropped_and_others_kept() -> None:
    comment = normalise_comment(
        minimal(user_properties={"string:Empty": "", "string:Blank": "  \t", "string:Kept": " uk ", "number:Zero": 0})
    )
    assert comment["user_properties"] == {"string:Kept": " uk ", "number:Zero": 0}


def test_the_content_hash_does_not_depend_on_key_order() -> None:
    comment = normalise_comment(full_comment())
    reordered = {key: comment[key] for key in reversed(list(comment))}
    reordered["messages"] = [{k: m[k] for k in reversed(list(m))} for m in comment["messages"]]

    assert list(reordered) != list(comment)
    assert content_hash(reordered) == content_hash(comment)
    changed = copy.deepcopy(comment)
    changed["messages"][0]["body"]["text"] += "!"
    assert content_hash(changed) != content_hash(comment)


def test_the_same_instant_in_another_zone_hashes_the_same_after_normalising() -> None:
    a = normalise_comment(minimal(timestamp="2024-05-01T09:30:00Z"))
    b = normalise_comment(minimal(timestamp="2024-05-01T10:30:00+01:00"))
    assert content_hash(a) == content_hash(b)


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
_blank_or_text = st.one_of(st.just(""), st.just("  "), _text)
#: Naive and aware times; a day away from the ends of the calendar, so that UTC is representable.
_stamp = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([None]) | st.timezones(),
    allow_imaginary=False,
).map(lambda d: d.isoformat())
_messages = st.lists(
    st.fixed_dictionaries(
        {"body": _text.filter(bool)},
        optional={
            "subject": st.one_of(_blank_or_text, st.fixed_dictionaries({"text": _blank_or_text})),
            "from": _blank_or_text,
            "to": st.one_of(_blank_or_text, st.lists(_blank_or_text, max_size=3)),
            "cc": st.lists(_blank_or_text, max_size=3),
            "sent_at": _stamp,
            "language": st.text(alphabet="abcdefgh-", max_size=8),
        },
    ),
    min_size=1,
    max_size=3,
)
_properties = st.dictionaries(
    st.one_of(
        st.text(alphabet="abcXYZ_ ", min_size=1, max_size=10).map(lambda n: f"string:{n}"),
        st.text(alphabet="abcXYZ_ ", min_size=1, max_size=10).map(lambda n: f"number:{n}"),
    ),
    st.none(),
    max_size=5,
).flatmap(
    lambda keys: st.fixed_dictionaries(
        {
            key: (
                _blank_or_text
                if key.startswith("string:")
                else st.integers() | st.floats(allow_nan=False, allow_infinity=False)
            )
            for key in keys
        }
    )
)
_comments = st.fixed_dictionaries(
    {
        "id": st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20),
        "timestamp": _stamp,
        "messages": _messages,
    },
    optional={
        "thread_id": _blank_or_text,
        "user_properties": _properties,
        "attachments": st.lists(
            st.fixed_dictionaries(
                {"name": _text.filter(bool), "content_type": _text.filter(bool)},
                optional={"size": st.integers(min_value=0), "content_hash": _blank_or_text},
            ),
            max_size=2,
        ),
        "text_format": st.sampled_from(["plain", "markdown"]),
    },
)


@settings(max_examples=300)
@given(_comments)
def test_normalising_is_idempotent_and_keeps_the_hash(raw: dict[str, Any]) -> None:
    once = normalise_comment(raw)
    twice = normalise_comment(copy.deepcopy(once))

    assert twice == once
    assert content_hash(twice) == content_hash(once)
    assert once["timestamp"].endswith("Z")
    assert all(isinstance(v, str) and v.strip() for k, v in once.get("user_properties", {}).items() if k[0] == "s")


@settings(max_examples=500)
@given(_comments)
def test_the_canonical_bytes_are_the_stdlib_json_ones_every_stored_hash_was_made_from(raw: dict[str, Any]) -> None:
    comment = normalise_comment(raw)
    stdlib = json.dumps(comment, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical(comment) == stdlib


def test_floats_written_in_exponent_form_keep_the_stdlib_form() -> None:
    comment = normalise_comment(minimal(user_properties={"number:Big": 1e16, "number:Small": 1e-7}))
    assert b'"number:Big":1e+16' in canonical(comment)
    assert b'"number:Small":1e-07' in canonical(comment)
    huge = normalise_comment(minimal(attachments=[{"name": "a", "content_type": "b", "size": 2**70}]))
    assert str(2**70).encode() in canonical(huge)


# --- aggregates ------------------------------------------------------------------------------


def test_a_project_is_created_once() -> None:
    project = Project(project_aggregate_id("acme"))
    project.create(title="Acme", actor=ACTOR)
    (event,) = project.collect()

    assert isinstance(event, ProjectCreated)
    assert (event.aggregate_id, event.aggregate_version, event.name, event.title) == ("project:acme", 1, "acme", "Acme")
    again = Project.replay("project:acme", [event])
    with pytest.raises(AlreadyExists):
        again.create(actor=ACTOR)
    assert again.collect() == []


def test_a_project_title_defaults_to_its_name_and_its_name_is_checked() -> None:
    project = Project(project_aggregate_id("acme"))
    project.create(actor=ACTOR)
    assert project.collect()[0].title == "acme"
    with pytest.raises(DomainError, match="invalid project name"):
        Project(project_aggregate_id("bad name")).create(actor=ACTOR)


def test_a_source_needs_its_project() -> None:
    source = Source(source_aggregate_id("acme", "inbox"))
    with pytest.raises(NotFound, match="acme"):
        source.create(source_id=SOURCE_ID, project_exists=False, actor=ACTOR)
    assert source.collect() == []


def test_a_source_is_created_once_and_can_be_created_again_after_a_purge() -> None:
    source = Source(source_aggregate_id("acme", "inbox"))
    source.create(source_id=SOURCE_ID, project_exists=True, kind="csv", actor=ACTOR)
    created = source.collect()
    assert [type(e) for e in created] == [SourceCreated]
    assert (created[0].source_id, created[0].project, created[0].name, created[0].kind) == (
        SOURCE_ID,
        "acme",
        "inbox",
        "csv",
    )

    with pytest.raises(AlreadyExists):
        source.create(source_id=SOURCE_ID, project_exists=True, actor=ACTOR)

    source.purge(reason="gdpr", actor=ACTOR)
    source.create(source_id="aaaaaaaaaaaaaaaa", project_exists=True, actor=ACTOR)
    later = source.collect()
    assert [e.aggregate_version for e in later] == [2, 3]
    assert source.source_id == "aaaaaaaaaaaaaaaa"
    assert not source.purged


@pytest.mark.parametrize("source_id", ["0123", "0123456789ABCDEF", "0123456789abcdefg", "0123456789abcdef\n"])
def test_a_source_id_must_be_16_lower_case_hex_digits(source_id: str) -> None:
    with pytest.raises(DomainError, match="16 lower-case hex"):
        Source(source_aggregate_id("acme", "inbox")).create(source_id=source_id, project_exists=True, actor=ACTOR)


def test_source_title_and_description_limits() -> None:
    source = Source(source_aggregate_id("acme", "inbox"))
    with pytest.raises(DomainError, match="title"):
        source.create(source_id=SOURCE_ID, project_exists=True, title="t" * 129, actor=ACTOR)
    with pytest.raises(DomainError, match="description"):
        source.create(source_id=SOURCE_ID, project_exists=True, description="d" * 16385, actor=ACTOR)
    source.create(source_id=SOURCE_ID, project_exists=True, title="t" * 128, description="d" * 16384, actor=ACTOR)
    assert len(source.collect()) == 1


def test_purging_a_missing_source_is_not_found() -> None:
    with pytest.raises(NotFound):
        Source(source_aggregate_id("acme", "inbox")).purge(reason="", actor=ACTOR)


def new_dataset(sources: list[str] | None = None, has_sentiment: bool = False) -> Dataset:
    dataset = Dataset(dataset_aggregate_id("acme", "support"))
    dataset.create(
        dataset_id=DATASET_ID, source_ids=sources or [], project_exists=True, has_sentiment=has_sentiment, actor=ACTOR
    )
    return dataset


def test_a_dataset_is_created_with_its_sources_once() -> None:
    dataset = new_dataset([SOURCE_ID, "aaaaaaaaaaaaaaaa", SOURCE_ID])
    events = dataset.collect()

    assert [type(e) for e in events] == [DatasetCreated, SourceAddedToDataset, SourceAddedToDataset]
    assert [e.aggregate_version for e in events] == [1, 2, 3]
    assert [e.source_id for e in events[1:]] == [SOURCE_ID, "aaaaaaaaaaaaaaaa"]
    again = Dataset.replay(dataset.id, events)
    assert again.source_ids == [SOURCE_ID, "aaaaaaaaaaaaaaaa"]
    with pytest.raises(AlreadyExists):
        again.create(dataset_id="1111111111111111", source_ids=[], project_exists=True, actor=ACTOR)


def test_a_dataset_needs_its_project() -> None:
    with pytest.raises(NotFound, match="project"):
        Dataset(dataset_aggregate_id("acme", "support")).create(
            dataset_id=DATASET_ID, source_ids=[], project_exists=False, actor=ACTOR
        )


def test_a_dataset_holds_at_most_20_sources() -> None:
    ids = [f"{i:016x}" for i in range(MAX_SOURCES + 1)]
    assert len(new_dataset(ids[:MAX_SOURCES]).source_ids) == MAX_SOURCES

    with pytest.raises(DomainError, match="at most 20 sources"):
        new_dataset(ids)
    full = new_dataset(ids[:MAX_SOURCES])
    with pytest.raises(DomainError, match="at most 20 sources"):
        full.add_source(ids[-1], actor=ACTOR)
    full.add_source(ids[0], actor=ACTOR)  # already a member: no event, no error
    assert len(full.collect()) == 1 + MAX_SOURCES


def test_a_taxonomy_holds_at_most_200_labels_counting_implied_ancestors() -> None:
    dataset = new_dataset()
    for i in range(MAX_LABELS - 1):
        dataset.define_label(f"L{i}", actor=ACTOR)
    with pytest.raises(DomainError, match="at most 200 labels"):
        dataset.define_label("New > Child", actor=ACTOR)  # two new labels, one place left
    dataset.define_label("Last", actor=ACTOR)
    assert len(dataset.labels) == MAX_LABELS
    with pytest.raises(DomainError, match="at most 200 labels"):
        dataset.define_label("One too many", actor=ACTOR)
    dataset.define_label("L0", actor=ACTOR)  # defined already: fine
    assert len(dataset.labels) == MAX_LABELS


def test_defining_a_label_defines_its_missing_ancestors_first() -> None:
    dataset = new_dataset()
    dataset.collect()
    dataset.define_label("Billing", actor=ACTOR)
    assert dataset.define_label(["Billing", "Refund", "Late"], description="late refunds", actor=ACTOR) == (
        "Billing > Refund > Late"
    )
    events = dataset.collect()

    assert all(isinstance(e, LabelDefined) for e in events)
    assert [e.name for e in events] == ["Billing", "Billing > Refund", "Billing > Refund > Late"]
    assert [e.description for e in events] == ["", "", "late refunds"]
    assert dataset.define_label("Billing > Refund", actor=ACTOR) == "Billing > Refund"
    assert dataset.collect() == []


def test_renaming_a_label_renames_its_children_and_nothing_else() -> None:
    dataset = new_dataset()
    for name in ("Billing > Refund", "Billing > Fee", "Billingual", "Card"):
        dataset.define_label(name, actor=ACTOR)

    dataset.rename_label("Billing", ["Payments"], actor=ACTOR)
    events = dataset.collect()

    assert isinstance(events[-1], LabelRenamed)
    assert (events[-1].old_name, events[-1].new_name) == ("Billing", "Payments")
    assert dataset.labels == ["Payments", "Payments > Refund", "Payments > Fee", "Billingual", "Card"]
    assert Dataset.replay(dataset.id, events).labels == dataset.labels


def test_renaming_needs_an_existing_label_and_a_free_name() -> None:
    dataset = new_dataset()
    dataset.define_label("A > B", actor=ACTOR)
    dataset.define_label("C", actor=ACTOR)
    dataset.collect()
    with pytest.raises(NotFound):
        dataset.rename_label("Missing", "X", actor=ACTOR)
    with pytest.raises(AlreadyExists):
        dataset.rename_label("A", "C", actor=ACTOR)
    assert dataset.collect() == []


def test_a_missing_dataset_cannot_take_labels_or_sources() -> None:
    dataset = Dataset(dataset_aggregate_id("acme", "support"))
    with pytest.raises(NotFound):
        dataset.define_label("A", actor=ACTOR)
    with pytest.raises(NotFound):
        dataset.add_source(SOURCE_ID, actor=ACTOR)


def test_a_deleted_dataset_refuses_commands_and_its_name_starts_afresh() -> None:
    dataset = new_dataset([SOURCE_ID])
    dataset.define_label("A > B", actor=ACTOR)
    dataset.delete(reason="customer asked", actor=ACTOR)
    events = dataset.collect()
    deleted = events[-1]
    assert isinstance(deleted, DatasetDeleted) and deleted.reason == "customer asked"
    assert deleted.dataset_id == DATASET_ID and deleted.aggregate_version == len(events)

    gone = Dataset.replay(dataset.id, events)
    assert not gone.exists
    for command in (
        lambda: gone.delete(actor=ACTOR),
        lambda: gone.define_label("C", actor=ACTOR),
        lambda: gone.add_source(SOURCE_ID, actor=ACTOR),
        lambda: gone.update(title="T", actor=ACTOR),
    ):
        with pytest.raises(NotFound):
            command()
    gone.create(dataset_id="1111111111111111", source_ids=[], project_exists=True, actor=ACTOR)
    assert gone.exists and gone.dataset_id == "1111111111111111"
    assert gone.labels == [] and gone.source_ids == []  # nothing of the deleted dataset comes back
    assert gone.collect()[0].aggregate_version == len(events) + 1


def test_a_message_is_new_then_unchanged_then_updated() -> None:
    message = Message(message_aggregate_id(SOURCE_ID, "c1"))
    first = normalise_comment(minimal())

    assert message.ingest(first, actor=ACTOR) == NEW
    assert message.ingest(copy.deepcopy(first), actor=ACTOR) == UNCHANGED
    assert message.ingest(normalise_comment(minimal(messages=[{"body": "edited"}])), actor=ACTOR) == UPDATED
    events = message.collect()

    assert [type(e) for e in events] == [MessageIngested, MessageIngested]
    assert [(e.change, e.aggregate_version) for e in events] == [(NEW, 1), (UPDATED, 2)]
    assert events[0].content_hash == content_hash(first)
    assert (events[0].source_id, events[0].comment_id) == (SOURCE_ID, "c1")
    reloaded = Message.replay(message.id, events)
    assert reloaded.ingest(normalise_comment(minimal(messages=[{"body": "edited"}])), actor=ACTOR) == UNCHANGED


def test_a_deleted_message_comes_back_as_new_even_with_the_same_content() -> None:
    message = Message(message_aggregate_id(SOURCE_ID, "c1"))
    comment = normalise_comment(minimal())
    message.ingest(comment, actor=ACTOR)
    message.delete(reason="spam", actor=ACTOR)
    with pytest.raises(NotFound):
        message.delete(reason="again", actor=ACTOR)

    assert message.ingest(comment, actor=ACTOR) == NEW
    events = message.collect()
    assert [type(e) for e in events] == [MessageIngested, MessageDeleted, MessageIngested]
    assert events[1].reason == "spam"
    assert events[2].change == NEW and events[2].aggregate_version == 3


def test_deleting_a_message_never_ingested_is_not_found() -> None:
    with pytest.raises(NotFound, match="c9"):
        Message(message_aggregate_id(SOURCE_ID, "c9")).delete(reason="", actor=ACTOR)


def annotation() -> Annotation:
    return Annotation(annotation_aggregate_id(DATASET_ID, f"{SOURCE_ID}.c1"))


def test_a_child_label_implies_its_parent() -> None:
    ann = annotation()
    assert ann.label(["Billing > Refund > Late", "Card"], actor=ACTOR)
    (event,) = ann.collect()

    assert isinstance(event, LabelApplied)
    assert (event.dataset_id, event.uid) == (DATASET_ID, f"{SOURCE_ID}.c1")
    assert [a["name"] for a in event.assigned] == ["Billing", "Billing > Refund", "Billing > Refund > Late", "Card"]
    assert event.dismissed == []


def test_labelling_with_the_same_labels_records_nothing_even_in_another_order() -> None:
    ann = annotation()
    ann.label(["Card", "Billing > Refund"], dismissed=["Fraud", "Other"], actor=ACTOR)
    ann.collect()

    assert not ann.label(["Card", "Billing > Refund"], dismissed=["Fraud", "Other"], actor=ACTOR)
    assert not ann.label(["Billing > Refund", "Card", "Billing"], dismissed=["Other", "Fraud", "Other"], actor=ACTOR)
    assert ann.collect() == []
    assert ann.label(["Card"], dismissed=["Fraud", "Other"], actor=ACTOR)
    assert [a["name"] for a in ann.collect()[0].assigned] == ["Card"]


def test_sentiment_needs_a_sentiment_dataset_and_a_known_value() -> None:
    ann = annotation()
    with pytest.raises(DomainError, match="no sentiment"):
        ann.label(["Card"], sentiment="positive", actor=ACTOR)
    with pytest.raises(DomainError, match="positive or negative"):
        ann.label(["Card"], sentiment="neutral", has_sentiment=True, actor=ACTOR)
    assert ann.collect() == []

    assert ann.label(["Billing > Refund"], sentiment="negative", has_sentiment=True, actor=ACTOR)
    assigned = ann.collect()[0].assigned
    assert assigned == [
        {"name": "Billing", "sentiment": "negative"},
        {"name": "Billing > Refund", "sentiment": "negative"},
    ]
    assert ann.label(["Billing > Refund"], sentiment="positive", has_sentiment=True, actor=ACTOR)
    assert ann.label(["Billing > Refund"], has_sentiment=True, actor=ACTOR)  # sentiment is optional


def test_a_label_cannot_be_assigned_and_dismissed_at_once_even_through_its_child() -> None:
    with pytest.raises(DomainError, match="both assigned and dismissed: Billing"):
        annotation().label(["Billing > Refund"], dismissed=["Billing"], actor=ACTOR)


def test_a_labelling_says_which_queue_the_message_came_from_and_only_a_known_one() -> None:
    from commine.ml.active import MODES

    assert set(MODES) <= set(QUEUES)  # every queue a trainer can work from can be recorded
    ann = annotation()
    assert ann.label(["Card"], queue="shuffle", actor=ACTOR)
    assert ann.annotate(["Billing"], queue="check", actor=ACTOR)
    assert [e.queue for e in ann.collect()] == ["shuffle", "check"]
    with pytest.raises(DomainError, match="unknown queue 'random'"):
        ann.label(["Other"], queue="random", actor=ACTOR)
    assert ann.collect() == []


def test_an_annotation_replays_to_the_same_state() -> None:
    ann = annotation()
    ann.label(["A > B"], dismissed=["C"], actor=ACTOR)
    ann.label(["D"], actor=ACTOR)
    events = ann.collect()
    again = Annotation.replay(ann.id, events)

    assert (again.dataset_id, again.uid) == (DATASET_ID, f"{SOURCE_ID}.c1")
    assert again.assigned == [{"name": "D", "sentiment": None}]
    assert again.dismissed == []
    assert again.version == 2
    assert not again.label(["D"], actor=ACTOR)


def test_stream_thresholds_are_numbers_from_0_to_1() -> None:
    assert check_thresholds([{"name": "A > B", "threshold": 0}, {"name": ["C"], "threshold": 1}]) == [
        {"name": ["A", "B"], "threshold": 0.0},
        {"name": ["C"], "threshold": 1.0},
    ]


@pytest.mark.parametrize("threshold", [-0.01, 1.01, math.nan, math.inf, "0.5", True, None])
def test_a_threshold_outside_0_to_1_is_rejected(threshold: Any) -> None:
    with pytest.raises(DomainError, match="from 0 to 1"):
        check_thresholds([{"name": "A", "threshold": threshold}])


@pytest.mark.parametrize("item", [{"threshold": 0.5}, "A", None])
def test_a_malformed_threshold_entry_is_a_domain_error(item: Any) -> None:
    with pytest.raises(DomainError, match="label threshold"):
        check_thresholds([item])


def test_a_stream_is_created_once_with_checked_thresholds() -> None:
    stream = Stream(stream_aggregate_id(DATASET_ID, "refunds"))
    stream.create(
        stream_id="1111111111111111",
        model_version=3,
        label_thresholds=[{"name": "Billing>Refund", "threshold": 0.4}],
        actor=ACTOR,
    )
    (event,) = stream.collect()

    assert isinstance(event, StreamCreated)
    assert (event.dataset_id, event.name, event.title, event.model_version) == (DATASET_ID, "refunds", "refunds", 3)
    assert event.label_thresholds == [{"name": ["Billing", "Refund"], "threshold": 0.4}]
    assert event.comment_filter == {}
    with pytest.raises(AlreadyExists):
        Stream.replay(stream.id, [event]).create(
            stream_id="2222222222222222", model_version=3, label_thresholds=[], actor=ACTOR
        )
    bad = Stream(stream_aggregate_id(DATASET_ID, "other"))
    with pytest.raises(DomainError, match="from 0 to 1"):
        bad.create(stream_id="3", model_version=1, label_thresholds=[{"name": "A", "threshold": 2}], actor=ACTOR)
    assert bad.collect() == []


@pytest.mark.parametrize(
    ("given", "stored"), [(-0.0, 0.0), (10**20, 1e20), (2**63 - 1, 2**63 - 1), (1e23, 1e23), (2.5, 2.5), (7, 7)]
)
def test_number_properties_take_the_form_every_store_reads_back(given: float, stored: float) -> None:
    raw = {"id": "c", "timestamp": "2026-01-01T00:00:00Z", "messages": [{"body": {"text": "x"}}]}
    comment = normalise_comment({**raw, "user_properties": {"number:n": given}})
    value = comment["user_properties"]["number:n"]
    assert value == stored and type(value) is type(stored)
    assert str(value) == str(stored)  # -0.0 and 0.0 compare equal; their text does not

"""The label lifecycle in the pure domain: rename, merge, delete; removing labels; annotations following."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commine.domain.annotation import Annotation, annotation_aggregate_id, follow_change
from commine.domain.dataset import MAX_LABELS, Dataset, dataset_aggregate_id
from commine.domain.errors import AlreadyExists, DomainError, NotFound
from commine.domain.names import MAX_LABEL_LENGTH, label_ancestors
from commine.domain.taxonomy import in_subtree, move
from commine.events import (
    DatasetCreated,
    DomainEvent,
    LabelApplied,
    LabelDefined,
    LabelDeleted,
    LabelRemoved,
    LabelRenamed,
    LabelsMerged,
)

DATASET_ID = "fedcba9876543210"
UID = "0123456789abcdef.c1"
ACTOR = "test"


def built(*labels: str, has_sentiment: bool = False) -> tuple[Dataset, list[DomainEvent]]:
    """A dataset whose taxonomy holds ``labels`` (and their ancestors), and the events that made it."""
    dataset = Dataset(dataset_aggregate_id("acme", "support"))
    dataset.create(dataset_id=DATASET_ID, source_ids=[], project_exists=True, has_sentiment=has_sentiment, actor=ACTOR)
    for label in labels:
        dataset.define_label(label, actor=ACTOR)
    return dataset, dataset.collect()


def dataset_with(*labels: str) -> Dataset:
    return built(*labels)[0]


def annotation() -> Annotation:
    return Annotation(annotation_aggregate_id(DATASET_ID, UID))


def names(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["name"] for entry in entries]


def change(kind: type[DomainEvent], **payload: Any) -> Any:
    """A taxonomy event as the dataset would record it."""
    return kind(aggregate_id="dataset:acme/support", aggregate_version=9, actor=ACTOR, dataset_id=DATASET_ID, **payload)


# --- the move rule -----------------------------------------------------------------------------


def test_a_subtree_is_the_label_and_its_descendants_not_a_label_sharing_a_prefix() -> None:
    assert in_subtree("A", "A") and in_subtree("A > B > C", "A > B")
    assert not in_subtree("AB", "A") and not in_subtree("A", "A > B")
    assert move("A > B", ["A"], "X > Y") == "X > Y > B"
    assert move("A > B", ["A"], None) is None
    assert move("AB", ["A"], "X") == "AB"


# --- renaming ----------------------------------------------------------------------------------


def test_renaming_to_a_nested_name_defines_the_missing_ancestor_first() -> None:
    dataset, history = built("Billing > Refund", "Card")

    assert dataset.rename_label("Billing", "Money > Billing", actor=ACTOR) == "Money > Billing"
    events = dataset.collect()

    assert [type(e) for e in events] == [LabelDefined, LabelRenamed]
    assert events[0].name == "Money"
    assert sorted(dataset.labels) == ["Card", "Money", "Money > Billing", "Money > Billing > Refund"]
    assert Dataset.replay(dataset.id, history + events).labels == dataset.labels


def test_a_rename_that_would_make_a_child_too_long_is_refused_and_records_nothing() -> None:
    child = "x" * (MAX_LABEL_LENGTH - len("A > "))
    dataset = dataset_with(f"A > {child}")

    with pytest.raises(DomainError, match=f"at most {MAX_LABEL_LENGTH}"):
        dataset.rename_label("A", "Longer", actor=ACTOR)
    with pytest.raises(DomainError, match=f"at most {MAX_LABEL_LENGTH}"):
        dataset.rename_label("A", "New > A", actor=ACTOR)  # would define New first: must not
    assert dataset.collect() == []
    assert sorted(dataset.labels) == ["A", f"A > {child}"]
    dataset.rename_label("A", "B", actor=ACTOR)  # same length: fine
    assert sorted(dataset.labels) == ["B", f"B > {child}"]


def test_a_rename_onto_a_taken_name_or_a_taken_child_name_is_refused() -> None:
    dataset = dataset_with("A > x", "B")
    with pytest.raises(AlreadyExists, match="merge into it"):
        dataset.rename_label("A", "B", actor=ACTOR)
    # A log written before parents were implied can hold a child without its parent.
    legacy = Dataset.replay(
        "dataset:acme/support",
        [
            DatasetCreated(aggregate_id="dataset:acme/support", aggregate_version=1, actor=ACTOR, dataset_id=DATASET_ID,
                           project="acme", name="support"),
            *[
                LabelDefined(aggregate_id="dataset:acme/support", aggregate_version=v, actor=ACTOR,
                             dataset_id=DATASET_ID, name=n)
                for v, n in [(2, "A"), (3, "A > x"), (4, "C > x")]
            ],
        ],
    )  # fmt: skip
    with pytest.raises(AlreadyExists, match="'C > x'"):
        legacy.rename_label("A", "C", actor=ACTOR)
    assert legacy.collect() == []


def test_a_label_cannot_be_renamed_into_its_own_subtree() -> None:
    dataset = dataset_with("A")
    with pytest.raises(DomainError, match="inside itself"):
        dataset.rename_label("A", "A > B", actor=ACTOR)
    with pytest.raises(NotFound, match="'Missing'"):
        dataset.rename_label("Missing", "B", actor=ACTOR)
    assert dataset.collect() == []


def test_renaming_stays_within_the_size_of_the_taxonomy() -> None:
    dataset = dataset_with(*[f"L{i}" for i in range(MAX_LABELS)])
    with pytest.raises(DomainError, match=f"at most {MAX_LABELS} labels"):
        dataset.rename_label("L0", "New > L0", actor=ACTOR)
    dataset.rename_label("L0", "L0 renamed", actor=ACTOR)
    assert len(dataset.labels) == MAX_LABELS


_level = st.sampled_from(["A", "B", "C", "Billing", "Refund"])
_label = st.lists(_level, min_size=1, max_size=3).map(" > ".join)


@settings(max_examples=200, deadline=None)
@given(labels=st.lists(_label, min_size=1, max_size=8), data=st.data())
def test_renaming_a_label_to_a_free_sibling_name_and_back_restores_the_taxonomy(
    labels: list[str], data: st.DataObject
) -> None:
    dataset = dataset_with(*labels)
    before = list(dataset.labels)
    old = data.draw(st.sampled_from(before))
    parent = label_ancestors(old)[-1:] or [""]
    new = (parent[0] + " > " if parent[0] else "") + data.draw(st.sampled_from(["Z", "Zeta", "Y"]))
    if new in before:
        return

    dataset.rename_label(old, new, actor=ACTOR)
    assert old not in dataset.labels and new in dataset.labels
    dataset.rename_label(new, old, actor=ACTOR)

    assert dataset.labels == before
    assert [type(e) for e in dataset.collect()] == [LabelRenamed, LabelRenamed]


# --- merging -----------------------------------------------------------------------------------


def test_merging_moves_the_sources_and_their_children_under_the_target() -> None:
    dataset = dataset_with("Refund > Late", "Refunds > Late", "Refunds > Partial", "Card")

    assert dataset.merge_labels(["Refund", "Refunds"], "Billing > Refund", actor=ACTOR) == "Billing > Refund"
    events = dataset.collect()

    assert [type(e) for e in events] == [LabelDefined, LabelDefined, LabelsMerged]
    assert [e.name for e in events[:2]] == ["Billing", "Billing > Refund"]
    assert (events[2].sources, events[2].target) == (["Refund", "Refunds"], "Billing > Refund")
    assert sorted(dataset.labels) == [
        "Billing",
        "Billing > Refund",
        "Billing > Refund > Late",
        "Billing > Refund > Partial",
        "Card",
    ]


def test_the_target_may_be_among_the_sources_and_is_left_out_of_them() -> None:
    dataset = dataset_with("A > x", "B > x", "B > y")

    dataset.merge_labels(["A", "B"], "A", actor=ACTOR)
    (event,) = dataset.collect()

    assert isinstance(event, LabelsMerged) and event.sources == ["B"]
    assert sorted(dataset.labels) == ["A", "A > x", "A > y"]


def test_a_child_merged_into_its_parent_brings_its_own_children_up() -> None:
    dataset = dataset_with("T > x > x", "T > x > z", "T > y")
    dataset.merge_labels(["T > x"], "T", actor=ACTOR)
    assert sorted(dataset.labels) == ["T", "T > x", "T > y", "T > z"]


@pytest.mark.parametrize(
    ("sources", "target", "error", "match"),
    [
        (["Missing"], "A", NotFound, "'Missing'"),
        (["A"], "A", DomainError, "at least one label other than the target"),
        (["A"], "A > x", DomainError, "inside itself"),
        (["A", "A > x"], "B", DomainError, "'A > x' is inside 'A'"),
        (["A"], "B" * (MAX_LABEL_LENGTH - 2), DomainError, f"at most {MAX_LABEL_LENGTH}"),
    ],
    ids=["unknown source", "only the target", "into its own child", "nested sources", "child too long"],
)
def test_a_merge_that_cannot_be_done_records_nothing(
    sources: list[str], target: str, error: type[Exception], match: str
) -> None:
    dataset = dataset_with("A > x", "B")
    with pytest.raises(error, match=match):
        dataset.merge_labels(sources, target, actor=ACTOR)
    assert dataset.collect() == []
    assert sorted(dataset.labels) == ["A", "A > x", "B"]


# --- deleting ----------------------------------------------------------------------------------


def test_deleting_a_label_deletes_its_children_and_keeps_its_parent() -> None:
    dataset = dataset_with("A > B > C", "A > D", "AB")

    assert dataset.delete_label("A > B", actor=ACTOR) == ["A > B", "A > B > C"]
    (event,) = dataset.collect()

    assert isinstance(event, LabelDeleted) and event.name == "A > B"
    assert sorted(dataset.labels) == ["A", "A > D", "AB"]
    with pytest.raises(NotFound):
        dataset.delete_label("A > B", actor=ACTOR)


_ops = st.lists(
    st.tuples(st.sampled_from(["define", "rename", "merge", "delete"]), _label, _label, _label), max_size=12
)


@settings(max_examples=200, deadline=None)
@given(ops=_ops)
def test_any_lifecycle_keeps_every_parent_defined_and_replays_to_the_same_taxonomy(
    ops: list[tuple[str, str, str, str]],
) -> None:
    dataset, history = built()
    for op, first, second, third in ops:
        try:
            if op == "define":
                dataset.define_label(first, actor=ACTOR)
            elif op == "rename":
                dataset.rename_label(first, second, actor=ACTOR)
            elif op == "merge":
                dataset.merge_labels([first, third], second, actor=ACTOR)
            else:
                dataset.delete_label(first, actor=ACTOR)
        except DomainError:
            pass

    assert len(set(dataset.labels)) == len(dataset.labels)
    for label in dataset.labels:
        assert set(label_ancestors(label)) <= set(dataset.labels), label
    assert Dataset.replay(dataset.id, history + dataset.collect()).labels == dataset.labels


# --- removing labels from an annotation ----------------------------------------------------------


def test_removing_a_parent_removes_its_children_assigned_or_dismissed() -> None:
    ann = annotation()
    ann.label(["A > B > C", "D"], dismissed=["A > E", "F"], actor=ACTOR)
    ann.collect()

    assert ann.unlabel(["A > B"], actor=ACTOR)
    assert ann.unlabel(["A"], actor=ACTOR)
    first, second = ann.collect()

    assert isinstance(first, LabelRemoved) and first.labels == ["A > B", "A > B > C"]
    assert second.labels == ["A", "A > E"]
    assert (names(ann.assigned), ann.dismissed) == (["D"], ["F"])
    assert second.aggregate_version == 3


def test_removing_what_is_not_there_records_nothing() -> None:
    ann = annotation()
    assert not ann.unlabel(["A"], actor=ACTOR)
    ann.label(["AB"], actor=ACTOR)
    ann.collect()
    assert not ann.unlabel(["A", "AB > C"], actor=ACTOR)
    assert ann.collect() == []


def test_an_annotation_with_removals_replays_to_the_same_state() -> None:
    ann = annotation()
    ann.label(["A > B", "C"], dismissed=["D"], actor=ACTOR)
    ann.unlabel(["A > B", "D"], actor=ACTOR)
    again = Annotation.replay(ann.id, ann.collect())
    assert (again.assigned, again.dismissed, again.version) == (ann.assigned, ann.dismissed, 2)
    assert names(again.assigned) == ["A", "C"]


# --- annotating: adding to what is there ---------------------------------------------------------


def test_annotating_adds_labels_and_keeps_the_others() -> None:
    ann = annotation()
    assert ann.annotate(["A"], actor=ACTOR)
    assert ann.annotate(["B > C"], dismiss=["D"], actor=ACTOR)
    assert not ann.annotate(["B"], dismiss=["D"], actor=ACTOR)
    events = ann.collect()

    assert [type(e) for e in events] == [LabelApplied, LabelApplied]
    assert names(events[1].assigned) == ["A", "B", "B > C"]
    assert events[1].dismissed == ["D"]


def test_dismissing_un_assigns_the_label_and_its_children_and_assigning_un_dismisses() -> None:
    ann = annotation()
    ann.annotate(["A > B", "C"], actor=ACTOR)
    ann.annotate(dismiss=["A"], actor=ACTOR)
    assert (names(ann.assigned), ann.dismissed) == (["C"], ["A"])

    ann.annotate(["A > X"], actor=ACTOR)
    assert (names(ann.assigned), ann.dismissed) == (["C", "A", "A > X"], [])


def test_sentiment_goes_to_the_labels_named_and_is_kept_when_left_out() -> None:
    ann = annotation()
    ann.annotate(["A > B"], sentiment="negative", has_sentiment=True, actor=ACTOR)
    ann.annotate(["C"], sentiment="positive", has_sentiment=True, actor=ACTOR)
    assert not ann.annotate(["A > B"], has_sentiment=True, actor=ACTOR)
    assert ann.annotate(["A"], sentiment="positive", has_sentiment=True, actor=ACTOR)

    assert [(e["name"], e["sentiment"]) for e in ann.assigned] == [
        ("A", "positive"),
        ("A > B", "negative"),
        ("C", "positive"),
    ]
    with pytest.raises(DomainError, match="no sentiment"):
        ann.annotate(["C"], sentiment="positive", actor=ACTOR)


def test_removing_and_assigning_in_one_go_records_both_and_refuses_contradictions() -> None:
    ann = annotation()
    ann.annotate(["A", "B"], dismiss=["C"], actor=ACTOR)
    ann.collect()

    assert ann.annotate(["D"], remove=["A", "C"], actor=ACTOR)
    removed, applied = ann.collect()
    assert isinstance(removed, LabelRemoved) and removed.labels == ["A", "C"]
    assert isinstance(applied, LabelApplied) and names(applied.assigned) == ["B", "D"]

    with pytest.raises(DomainError, match="removed and assigned or dismissed at once: B, B > x"):
        ann.annotate(["B > x"], remove=["B"], actor=ACTOR)
    with pytest.raises(DomainError, match="both assigned and dismissed: E"):
        ann.annotate(["E > F"], dismiss=["E"], remove=["B"], actor=ACTOR)
    assert ann.collect() == []
    assert names(ann.assigned) == ["B", "D"]


# --- annotations follow the taxonomy -------------------------------------------------------------


def test_a_labelling_follows_renames_of_assigned_and_dismissed_labels() -> None:
    assigned = [{"name": "A", "sentiment": "positive"}, {"name": "A > x", "sentiment": "positive"}]

    after = follow_change(assigned, ["B", "AB"], change(LabelRenamed, old_name="A", new_name="Z > A"))

    assert after == (
        [
            {"name": "Z", "sentiment": "positive"},
            {"name": "Z > A", "sentiment": "positive"},
            {"name": "Z > A > x", "sentiment": "positive"},
        ],
        ["B", "AB"],
    )


def test_a_merge_keeps_the_first_of_two_labels_that_become_one_and_assigned_wins_over_dismissed() -> None:
    assigned = [{"name": "A", "sentiment": "negative"}, {"name": "B", "sentiment": "positive"}]
    merged = change(LabelsMerged, sources=["A", "B", "C"], target="T")

    assert follow_change(assigned, ["C", "D"], merged) == ([{"name": "T", "sentiment": "negative"}], ["D"])
    assert follow_change([], ["C", "B", "D"], merged) == ([], ["T", "D"])


def test_a_deletion_takes_the_label_and_its_children_off_every_labelling() -> None:
    assigned = [{"name": n, "sentiment": None} for n in ("A", "A > B", "A > B > C", "D")]
    assert follow_change(assigned, ["A > B > E", "F"], change(LabelDeleted, name="A > B")) == (
        [{"name": "A", "sentiment": None}, {"name": "D", "sentiment": None}],
        ["F"],
    )


def test_relabelling_after_a_rename_does_not_bring_the_old_name_back() -> None:
    # Position 1: the message is labelled A; position 2: A becomes B; position 3: a label is removed.
    first = annotation()
    first.annotate(["A", "C"], actor=ACTOR)
    first.unlabel(["C"], actor=ACTOR)
    applied, removed = first.collect()
    renamed = change(LabelRenamed, old_name="A", new_name="B")

    ann = Annotation.replay_following(ann_id := first.id, [(1, applied), (3, removed)], [(2, renamed)])
    assert names(ann.assigned) == ["B"] and ann.version == 2
    assert ann.annotate(["D"], actor=ACTOR)
    (event,) = ann.collect()
    assert names(event.assigned) == ["B", "D"]
    # Labelling with the old name is a change (it is a new label now), not "nothing changed".
    again = Annotation.replay_following(ann_id, [(1, applied)], [(2, renamed)])
    assert again.label(["A"], actor=ACTOR)
    # A rename before the annotation's first event is not its business.
    later = Annotation.replay_following(ann_id, [(5, applied)], [(2, renamed)])
    assert names(later.assigned) == ["A", "C"]


_entries = st.lists(st.tuples(_label, st.sampled_from([None, "positive", "negative"])), max_size=6)
_changes = st.one_of(
    st.builds(lambda old, new: change(LabelRenamed, old_name=old, new_name=new), _label, _label),
    st.builds(lambda sources, target: change(LabelsMerged, sources=sources, target=target), st.lists(_label), _label),
    st.builds(lambda name: change(LabelDeleted, name=name), _label),
)


@settings(max_examples=300, deadline=None)
@given(entries=_entries, dismissed=st.lists(_label, max_size=4), event=_changes)
def test_a_followed_labelling_keeps_parents_implied_and_assigned_apart_from_dismissed(
    entries: list[tuple[str, str | None]], dismissed: list[str], event: Any
) -> None:
    ann = annotation()
    for name, sentiment in entries:
        ann.annotate([name], sentiment=sentiment, has_sentiment=True, actor=ACTOR)
    ann.annotate(dismiss=[d for d in dismissed if d not in names(ann.assigned)], actor=ACTOR)
    ann.follow(event)

    assigned = names(ann.assigned)
    assert len(set(assigned)) == len(assigned)
    assert len(set(ann.dismissed)) == len(ann.dismissed)
    assert not set(assigned) & set(ann.dismissed)
    for name in assigned:
        assert set(label_ancestors(name)) <= set(assigned), name

"""Annotating and the label lifecycle through the services, on SQLite and PostgreSQL, and the CLI.

Each test gets a fresh store (``store`` runs every test on both backends); the read models are
caught up explicitly, as the CLI does before it returns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from commine.bootstrap import open_store
from commine.domain.errors import NotFound
from commine.domain.message import Message, message_aggregate_id
from commine.events import DatasetDeleted, LabelApplied, LabelRemoved, LabelRenamed
from commine.handlers import labels as service
from commine.handlers.commands import create_dataset, create_project, create_source, get_dataset, get_source, run
from commine.handlers.ingest import handle_ingest
from commine.handlers.labels import APPLIED, ERROR, UNCHANGED, AnnotationRequest
from commine.integrations.ingest_client import make_body
from commine.persistence import replay
from commine.persistence import schema as t
from commine.persistence.engine import make_engine, migrate
from commine.persistence.projections import catch_up
from commine.persistence.readmodels import labels as read_labels
from commine.persistence.store import EventStore
from commine.scripts.cli import cli
from commine.settings import Settings

ACTOR = "user:trainer"
DATASET = "p/ds"


def comment(comment_id: str) -> dict[str, Any]:
    return {"id": comment_id, "timestamp": "2024-05-01T09:30:00Z", "messages": [{"body": {"text": comment_id}}]}


def given_messages(store: EventStore, *ids: str, has_sentiment: bool = False) -> str:
    """Project p, sources p/s (in dataset p/ds) and p/other (not in it), ``ids`` stored in p/s."""
    create_project(store, "p", actor=ACTOR)
    source = create_source(store, "p/s", actor=ACTOR)
    create_source(store, "p/other", actor=ACTOR)
    create_dataset(store, DATASET, sources=["p/s"], has_sentiment=has_sentiment, actor=ACTOR)
    handle_ingest(store, make_body("p/s", [comment(i) for i in ids], actor="csv"))
    handle_ingest(store, make_body("p/other", [comment("elsewhere")], actor="csv"))
    return source.source_id


def request(comment_id: str, labels: tuple[str, ...] = (), **extra: Any) -> AnnotationRequest:
    return AnnotationRequest("p/s", comment_id, labels=labels, **extra)


def annotations(store: EventStore) -> dict[str, tuple[list[str], list[str]]]:
    """comment id -> (assigned names, dismissed names), from the read model."""
    catch_up(store)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(t.annotations.c.uid, t.annotations.c.assigned, t.annotations.c.dismissed))
        return {
            row.uid.split(".", 1)[1]: ([a["name"] for a in row.assigned], list(row.dismissed)) for row in rows.all()
        }


def taxonomy(store: EventStore) -> list[str]:
    catch_up(store)
    with store.engine.connect() as conn:
        return sorted(conn.execute(sa.select(t.labels.c.name)).scalars())


def log(store: EventStore, kind: type) -> list[Any]:
    return [s.event for s in store.read_all() if isinstance(s.event, kind)]


# --- annotating --------------------------------------------------------------------------------


def test_annotating_records_who_and_when_and_a_repeat_changes_nothing(store: EventStore) -> None:
    given_messages(store, "c1", "c2")
    before = datetime.now(UTC) - timedelta(seconds=1)

    results = service.annotate(
        store, DATASET, [request("c1", ("Billing > Refund",)), request("c2", ("Card",))], actor=ACTOR
    )
    again = service.annotate(store, DATASET, [request("c1", ("Billing > Refund",))], actor=ACTOR)

    assert [r.outcome for r in results] == [APPLIED, APPLIED]
    assert [r.outcome for r in again] == [UNCHANGED]
    assert [a["name"] for a in results[0].assigned] == ["Billing", "Billing > Refund"]
    applied = log(store, LabelApplied)
    assert len(applied) == 2
    assert {e.actor for e in applied} == {ACTOR}
    assert all(before <= e.occurred_at <= datetime.now(UTC) for e in applied)
    assert annotations(store) == {"c1": (["Billing", "Billing > Refund"], []), "c2": (["Card"], [])}
    assert taxonomy(store) == ["Billing", "Billing > Refund", "Card"]


def test_labels_add_up_and_sentiment_is_kept_per_label(store: EventStore) -> None:
    given_messages(store, "c1", has_sentiment=True)

    service.annotate(store, DATASET, [request("c1", ("A",), sentiment="negative")], actor=ACTOR)
    (result,) = service.annotate(store, DATASET, [request("c1", ("B",), sentiment="positive")], actor=ACTOR)

    assert [(a["name"], a["sentiment"]) for a in result.assigned] == [("A", "negative"), ("B", "positive")]
    catch_up(store)
    with store.engine.connect() as conn:
        (assigned,) = conn.execute(sa.select(t.annotations.c.assigned)).scalars()
    assert assigned == result.assigned


def test_each_bad_request_is_an_error_of_its_own_and_leaves_no_trace(store: EventStore) -> None:
    given_messages(store, "c1", "c2")
    handle_ingest(store, make_body("p/s", [comment("gone")], actor="csv"))
    service.annotate(store, DATASET, [request("gone", ("Kept",))], actor=ACTOR)
    source_id = get_source(store, "p/s").source_id
    run(store, Message, message_aggregate_id(source_id, "gone"), lambda m: m.delete(reason="spam", actor=ACTOR))

    results = service.annotate(
        store,
        DATASET,
        [
            request("c1", ("Good",)),
            request("missing", ("X",)),
            AnnotationRequest("p/other", "elsewhere", labels=("X",)),
            AnnotationRequest("p/nowhere", "c1", labels=("X",)),
            AnnotationRequest("not a name!", "c1", labels=("X",)),
            request("gone", ("X",)),
            request("c2", ("Fresh",), sentiment="positive"),
            request("c2", ("x" * 65,)),
            request("c2", dismissed=("Unknown",)),
            request("c2", ("Also good",), dismissed=("Good",)),
        ],
        actor=ACTOR,
    )

    assert [(r.outcome, r.reason) for r in results] == [
        (APPLIED, ""),
        (ERROR, "comment 'missing' does not exist in source p/s"),
        (ERROR, "source p/other is not in dataset p/ds"),
        (ERROR, "source p/nowhere does not exist"),
        (ERROR, "invalid source name 'not a name!': use 1-256 of A-Z a-z 0-9 _ -"),
        (ERROR, "comment 'gone' does not exist in source p/s"),
        (ERROR, "this dataset has no sentiment; leave sentiment out"),
        (ERROR, results[7].reason),
        (ERROR, "cannot dismiss 'Unknown': it is not in the taxonomy"),
        (APPLIED, ""),
    ]
    assert "at most 64" in results[7].reason
    assert taxonomy(store) == ["Also good", "Good", "Kept"]  # not "Fresh": its request was refused
    assert annotations(store)["c2"] == (["Also good"], ["Good"])


def test_a_missing_dataset_is_not_found(store: EventStore) -> None:
    given_messages(store, "c1")
    with pytest.raises(NotFound, match="dataset p/nope does not exist"):
        service.annotate(store, "p/nope", [request("c1", ("A",))], actor=ACTOR)


def test_removing_a_parent_removes_its_children_from_the_read_model(store: EventStore) -> None:
    given_messages(store, "c1")
    service.annotate(store, DATASET, [request("c1", ("A > B > C", "D"), dismissed=())], actor=ACTOR)
    service.annotate(store, DATASET, [request("c1", dismissed=("A > B > C",))], actor=ACTOR)
    assert annotations(store)["c1"] == (["A", "A > B", "D"], ["A > B > C"])

    (result,) = service.annotate(store, DATASET, [request("c1", remove=("A > B",))], actor=ACTOR)
    (nothing,) = service.annotate(store, DATASET, [request("c1", remove=("A > B",))], actor=ACTOR)

    assert (result.outcome, nothing.outcome) == (APPLIED, UNCHANGED)
    (removed,) = log(store, LabelRemoved)
    assert removed.labels == ["A > B", "A > B > C"]
    assert annotations(store)["c1"] == (["A", "D"], [])


# --- the label lifecycle reaches the annotations -----------------------------------------------


def test_a_rename_reaches_assigned_and_dismissed_labels_and_relabelling_keeps_the_new_name(
    store: EventStore,
) -> None:
    given_messages(store, "c1", "c2")
    service.annotate(
        store,
        DATASET,
        [request("c1", ("Billing > Refund",)), request("c2", ("Card",), dismissed=("Billing",))],
        actor=ACTOR,
    )

    assert service.rename_label(store, DATASET, "Billing", "Money > Payments", actor=ACTOR) == "Money > Payments"
    assert annotations(store) == {
        "c1": (["Money", "Money > Payments", "Money > Payments > Refund"], []),
        "c2": (["Card"], ["Money > Payments"]),
    }
    assert taxonomy(store) == ["Card", "Money", "Money > Payments", "Money > Payments > Refund"]

    # Re-labelling after the rename: what is recorded is in today's names.
    service.annotate(store, DATASET, [request("c1", ("Card",)), request("c2", remove=("Card",))], actor=ACTOR)
    latest = log(store, LabelApplied)[-1]
    assert [a["name"] for a in latest.assigned] == [
        "Money",
        "Money > Payments",
        "Money > Payments > Refund",
        "Card",
    ]
    view = annotations(store)
    assert not any("Billing" in name for assigned, dismissed in view.values() for name in assigned + dismissed)
    assert view["c2"] == ([], ["Money > Payments"])
    # The old name is free again: using it makes a new label, not the renamed one.
    service.annotate(store, DATASET, [request("c2", ("Billing",))], actor=ACTOR)
    assert annotations(store)["c2"] == (["Billing"], ["Money > Payments"])


def test_a_merge_and_a_delete_reach_every_annotation(store: EventStore) -> None:
    given_messages(store, "c1", "c2", "c3")
    service.annotate(
        store,
        DATASET,
        [
            request("c1", ("Refund > Late",)),
            request("c2", ("Refunds",), dismissed=("Refund",)),
            request("c3", ("Card > Lost", "Other")),
        ],
        actor=ACTOR,
    )

    service.merge_labels(store, DATASET, ["Refund", "Refunds"], "Billing > Refund", actor=ACTOR)
    assert annotations(store) == {
        "c1": (["Billing", "Billing > Refund", "Billing > Refund > Late"], []),
        "c2": (["Billing", "Billing > Refund"], []),  # assigned wins over the dismissed twin
        "c3": (["Card", "Card > Lost", "Other"], []),
    }

    assert service.delete_label(store, DATASET, "Card", actor=ACTOR) == ["Card", "Card > Lost"]
    assert annotations(store)["c3"] == (["Other"], [])
    assert taxonomy(store) == ["Billing", "Billing > Refund", "Billing > Refund > Late", "Other"]
    rows = {row["name"]: (row["assigned"], row["dismissed"]) for row in read_labels(store.engine, _dataset_id(store))}
    assert rows == {
        "Billing": (2, 0),
        "Billing > Refund": (2, 0),
        "Billing > Refund > Late": (1, 0),
        "Other": (1, 0),
    }


def _dataset_id(store: EventStore) -> str:
    return get_dataset(store, DATASET).dataset_id


def test_a_refused_rename_records_nothing(store: EventStore) -> None:
    given_messages(store, "c1")
    service.annotate(store, DATASET, [request("c1", ("A > " + "x" * 60,))], actor=ACTOR)
    before = store.last_position()

    with pytest.raises(Exception, match="at most 64"):
        service.rename_label(store, DATASET, "A", "Longer", actor=ACTOR)

    assert store.last_position() == before


def test_the_rebuild_after_renames_merges_and_deletes_equals_the_live_read_models(store: EventStore) -> None:
    given_messages(store, "c1", "c2", "c3")
    service.annotate(
        store,
        DATASET,
        [request("c1", ("A > x", "B")), request("c2", ("B > y",), dismissed=("A",)), request("c3", ("C",))],
        actor=ACTOR,
    )
    catch_up(store)  # the live read models see the history in several runs
    service.rename_label(store, DATASET, "A", "Z > A", actor=ACTOR)
    service.annotate(store, DATASET, [request("c3", ("Z > A > x",), remove=("C",))], actor=ACTOR)
    catch_up(store)
    service.merge_labels(store, DATASET, ["B"], "Z > A", actor=ACTOR)
    service.delete_label(store, DATASET, "Z > A > y", actor=ACTOR)
    service.annotate(store, DATASET, [request("c2", ("New",))], actor=ACTOR)

    live, rebuilt = replay.verify(store)

    assert live == rebuilt
    assert taxonomy(store) == ["C", "New", "Z", "Z > A", "Z > A > x"]  # removing C from c3 kept the label
    assert live.tables["labels"][0] == 5
    assert annotations(store) == {
        "c1": (["Z", "Z > A", "Z > A > x"], []),
        "c2": (["Z", "Z > A", "New"], []),
        "c3": (["Z", "Z > A", "Z > A > x"], []),
    }


def test_the_csv_import_compares_its_labels_with_todays_names(store: EventStore) -> None:
    given_messages(store)

    def upload(label: str) -> None:
        handle_ingest(
            store, make_body("p/s", [comment("c1")], actor="csv", dataset=DATASET, annotations={"c1": [label]})
        )

    upload("Billing")
    service.rename_label(store, DATASET, "Billing", "Payments", actor=ACTOR)
    upload("Payments")
    assert len(log(store, LabelApplied)) == 1, "the same labels in today's name are no change"

    upload("Billing")  # the file still says Billing: a new label, and the message has it
    assert annotations(store)["c1"] == (["Billing"], [])
    assert taxonomy(store) == ["Billing", "Payments"]


def test_a_rename_committed_while_a_labelling_is_decided_sends_it_round_again(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL only: SQLite serialises whole transactions, so nothing can commit in between.
    engine = make_engine(pg_url)
    migrate(engine)
    store = EventStore(engine)
    try:
        given_messages(store, "c1")
        service.annotate(store, DATASET, [request("c1", ("Billing",))], actor=ACTOR)
        # Card exists already, so the labelling appends no dataset event a version check could catch.
        service.define_label(store, DATASET, "Card", actor=ACTOR)
        real = service.load_annotations
        calls: list[int] = []

        def rename_meanwhile(*args: Any, **kwargs: Any) -> Any:
            loaded = real(*args, **kwargs)
            if not calls:
                service.rename_label(store, DATASET, "Billing", "Payments", actor=ACTOR)
            calls.append(1)
            return loaded

        monkeypatch.setattr(service, "load_annotations", rename_meanwhile)
        service.annotate(store, DATASET, [request("c1", ("Card",))], actor=ACTOR)

        assert len(calls) == 2, "the first decision was on the old names and must not have been kept"
        assert annotations(store)["c1"] == (["Payments", "Card"], [])
        assert [e.new_name for e in log(store, LabelRenamed)] == ["Payments"]
    finally:
        engine.dispose()


def test_a_rename_committed_while_an_annotated_upload_is_decided_sends_it_round_again(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from commine.handlers import ingest

    engine = make_engine(pg_url)
    migrate(engine)
    store = EventStore(engine)
    try:
        given_messages(store)
        body = make_body("p/s", [comment("c1")], actor="csv", dataset=DATASET, annotations={"c1": ["Billing"]})
        handle_ingest(store, body)
        real = ingest.load_annotations
        calls: list[int] = []

        def rename_meanwhile(*args: Any, **kwargs: Any) -> Any:
            loaded = real(*args, **kwargs)
            if not calls:
                service.rename_label(store, DATASET, "Billing", "Payments", actor=ACTOR)
            calls.append(1)
            return loaded

        monkeypatch.setattr(ingest, "load_annotations", rename_meanwhile)
        # The file changes the text and still says Billing: decided on the old names that looked
        # like no change of labels; decided again on today's, Billing is a (new) label of c1.
        edited = {**comment("c1"), "messages": [{"body": {"text": "edited"}}]}
        receipt = handle_ingest(
            store, make_body("p/s", [edited], actor="csv", dataset=DATASET, annotations={"c1": ["Billing"]})
        )

        assert (receipt.updated, len(calls)) == (1, 2)
        assert annotations(store)["c1"] == (["Billing"], [])
        assert taxonomy(store) == ["Billing", "Payments"]
    finally:
        engine.dispose()


# --- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def cli_home(embedded_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An embedded home with p/s (messages c1-c3) in dataset p/ds; the CLI's env points at it."""
    store = open_store(embedded_settings)
    try:
        given_messages(store, "c1", "c2", "c3")
    finally:
        store.engine.dispose()
    for key in [k for k in os.environ if k.startswith("COMMINE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("COMMINE_HOME", str(embedded_settings.home))
    yield embedded_settings.home


def commine(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--embedded", *args], input=stdin, catch_exceptions=False)


def cli_store(home: Path) -> EventStore:
    engine = make_engine(f"sqlite:///{home / 'commine.db'}")
    return EventStore(engine)


def test_the_cli_annotates_one_message_and_shows_its_labels(cli_home: Path) -> None:
    first = commine("annotate", DATASET, "p/s", "c1", "--label", "Billing > Refund", "--label", "Card")
    second = commine("annotate", DATASET, "s", "c1", "--dismiss", "Card")
    third = commine("annotate", DATASET, "s", "c1", "--remove", "Billing", "--label", "Other")

    assert first.exit_code == 0, first.output
    assert first.output.strip() == "applied: p/s c1: labels: Billing, Billing > Refund, Card"
    assert second.output.strip() == "applied: s c1: labels: Billing, Billing > Refund; dismissed: Card"
    assert third.output.strip() == "applied: s c1: labels: Other; dismissed: Card"
    store = cli_store(cli_home)
    try:
        assert annotations(store)["c1"] == (["Other"], ["Card"])
        assert all(e.actor.startswith("user:") for e in log(store, LabelApplied))
    finally:
        store.engine.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["p/nope", "s", "c1", "--label", "A"], "dataset p/nope does not exist"),
        ([DATASET, "s", "c9", "--label", "A"], "comment 'c9' does not exist in source p/s"),
        ([DATASET, "p/other", "elsewhere", "--label", "A"], "source p/other is not in dataset p/ds"),
        ([DATASET, "s", "c1"], "nothing to do"),
        ([DATASET, "s"], "name a message"),
        ([DATASET, "s", "c1", "--label", "A", "--sentiment", "positive"], "this dataset has no sentiment"),
        ([DATASET, "s", "c1", "--file", "-"], "give no SOURCE"),
        (["nodataset", "s", "c1", "--label", "A"], "dataset must be given as PROJECT/NAME"),
    ],
    ids=["no dataset", "no comment", "foreign source", "no option", "no comment id", "sentiment", "both", "bad name"],
)
def test_the_cli_says_clearly_why_it_cannot_annotate(cli_home: Path, args: list[str], message: str) -> None:
    result = commine("annotate", *args)
    assert result.exit_code != 0
    assert message in result.output


def test_the_cli_annotates_a_jsonl_file_and_reports_errors_by_line(cli_home: Path) -> None:
    lines = [
        {"source": "p/s", "id": "c1", "labels": ["Billing > Refund"]},
        {"source": "p/s", "id": "c2", "labels": ["Card"], "dismissed": ["Billing"]},
        "not json",
        {"source": "p/s", "id": "c9", "labels": ["A"]},
        {"source": "p/s", "id": "c1", "labels": ["Billing"]},
        {"source": "p/s", "id": "c3", "labels": ["A"], "colour": "red"},
        {"source": "p/s", "id": "c3", "labels": ["A"], "sentiment": "meh"},
        {"source": "p/s", "id": "c2", "remove": ["Card"]},
    ]
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n\n"
    path = cli_home / "annotations.jsonl"
    path.write_text(text, encoding="utf-8")

    result = CliRunner().invoke(cli, ["--embedded", "annotate", DATASET, "--file", str(path)])
    piped = commine("annotate", DATASET, "--file", "-", stdin=json.dumps(lines[0]) + "\n")

    assert result.exit_code == 1
    assert "3 applied, 1 unchanged, 4 error(s)" in result.stdout
    assert f"{path}: line 3: not JSON" in result.stderr
    assert f"{path}: line 4: comment 'c9' does not exist in source p/s" in result.stderr
    assert f"{path}: line 6: unknown key(s): colour" in result.stderr
    assert f"{path}: line 7: 'sentiment' must be positive, negative or null" in result.stderr
    assert piped.exit_code == 0 and "0 applied, 1 unchanged, 0 error(s)" in piped.stdout
    store = cli_store(cli_home)
    try:
        assert annotations(store) == {"c1": (["Billing", "Billing > Refund"], []), "c2": ([], ["Billing"])}
    finally:
        store.engine.dispose()


def test_the_cli_lists_renames_merges_and_deletes_labels(cli_home: Path) -> None:
    commine("annotate", DATASET, "s", "c1", "--label", "Billing > Refund")
    commine("annotate", DATASET, "s", "c2", "--label", "Refunds > Late", "--label", "Card")

    listed = commine("labels", "list", DATASET)
    renamed = commine("labels", "rename", DATASET, "Billing", "Payments")
    merged = commine("labels", "merge", DATASET, "Refunds", "--into", "Payments > Refund")
    refused = commine("labels", "delete", DATASET, "Card", stdin="n\n")
    deleted = commine("labels", "delete", DATASET, "Card", "--yes")
    added = commine("labels", "add", DATASET, "Spam", "--description", "junk mail")
    after = json.loads(commine("labels", "list", DATASET, "--json").output)
    bad = commine("labels", "rename", DATASET, "Payments", "Spam")

    assert listed.exit_code == 0
    assert [line.split()[0] for line in listed.output.splitlines()] == [
        "Billing",
        "Billing",
        "Card",
        "Refunds",
        "Refunds",
    ]
    assert "Billing > Refund  " in listed.output and "1 assigned" in listed.output
    assert renamed.output.strip() == "renamed 'Billing' to 'Payments' in p/ds"
    assert merged.output.strip() == "merged 'Refunds' into 'Payments > Refund' in p/ds"
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert deleted.output.strip() == "deleted 'Card' from p/ds"
    assert added.output.strip() == "label 'Spam' is in p/ds"
    assert [(row["name"], row["assigned"]) for row in after] == [
        ("Payments", 2),
        ("Payments > Refund", 2),
        ("Payments > Refund > Late", 1),
        ("Spam", 0),
    ]
    assert after[-1]["description"] == "junk mail"
    assert bad.exit_code == 1 and "'Spam' is in the taxonomy already; merge into it instead" in bad.output
    assert "equals the live state" in commine("replay").output


def _messages_stored(home: Path) -> int:
    store = cli_store(home)
    try:
        with store.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t.messages)).scalar() or 0)
    finally:
        store.engine.dispose()


def test_the_cli_deletes_a_dataset_and_keeps_its_source(cli_home: Path) -> None:
    commine("annotate", DATASET, "p/s", "c1", "--label", "Billing")
    stored = _messages_stored(cli_home)
    refused = CliRunner().invoke(cli, ["--embedded", "datasets", "delete", DATASET], input="n\n")
    assert refused.exit_code != 0  # the prompt said no: nothing deleted
    deleted = commine("datasets", "delete", DATASET, "--reason", "test", "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert f"deleted dataset {DATASET}" in deleted.output
    again = CliRunner().invoke(cli, ["--embedded", "datasets", "delete", DATASET, "--yes"])
    assert again.exit_code != 0 and "does not exist" in again.output
    store = cli_store(cli_home)
    try:
        assert annotations(store) == {}
        assert [e.reason for e in log(store, DatasetDeleted)] == ["test"]
    finally:
        store.engine.dispose()
    assert _messages_stored(cli_home) == stored > 0


def test_the_cli_records_which_queue_a_message_came_from(cli_home: Path) -> None:
    one = commine("annotate", DATASET, "p/s", "c1", "--label", "Billing", "--queue", "shuffle")
    assert one.exit_code == 0, one.output
    lines = '{"source": "p/s", "id": "c2", "labels": ["Card"], "queue": "teach"}\n'
    lines += '{"source": "p/s", "id": "c3", "labels": ["Card"], "queue": "random"}\n'
    many = CliRunner().invoke(cli, ["--embedded", "annotate", DATASET, "--file", "-"], input=lines)
    assert many.exit_code == 1 and "line 2" in many.output and "'queue' must be one of" in many.output
    store = cli_store(cli_home)
    try:
        assert [(e.uid.split(".")[1], e.queue) for e in log(store, LabelApplied)] == [
            ("c1", "shuffle"),
            ("c2", "teach"),
        ]
    finally:
        store.engine.dispose()

"""Export and the audit trail from the CLI, on the embedded store: every message out with its labels and
predictions, and each command that showed customer data in the access log."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from commine.bootstrap import open_store
from commine.domain.names import label_ancestors
from commine.handlers.commands import create_dataset, create_project, create_source
from commine.handlers.ingest import handle_ingest
from commine.handlers.training import train_dataset
from commine.integrations.ingest_client import make_body
from commine.persistence.projections import catch_up
from commine.scripts.cli import cli
from commine.scripts.sample_mail import SampleMessage, generate
from commine.settings import Settings

DATASET = "p/ds"


@pytest.fixture
def messages() -> list[SampleMessage]:
    return generate(90, seed=11)


@pytest.fixture
def home(embedded_settings: Settings, messages: list[SampleMessage], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An embedded home: dataset p/ds over p/s with 90 messages, the first 70 labelled, and a model."""
    store = open_store(embedded_settings)
    try:
        create_project(store, "p", actor="test")
        create_source(store, "p/s", actor="test")
        dataset = create_dataset(store, DATASET, sources=["p/s"], actor="test")
        labelled = {m.comment["id"]: [m.label] for m in messages[:70] if m.label}
        body = make_body("p/s", [m.comment for m in messages], actor="test", dataset=DATASET, annotations=labelled)
        handle_ingest(store, body)
        catch_up(store)
        train_dataset(store, dataset.dataset_id, actor="trainer")
        catch_up(store)
    finally:
        store.engine.dispose()
    for key in [k for k in os.environ if k.startswith("COMMINE_") and k != "COMMINE_TRANSFORMER"]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("COMMINE_HOME", str(embedded_settings.home))
    yield embedded_settings.home


def commine(*args: str) -> Result:
    result = CliRunner().invoke(cli, ["--embedded", *args])
    assert result.exit_code == 0, result.output
    return result


def expected_labels(sample: SampleMessage) -> set[str]:
    return {sample.label, *label_ancestors(sample.label)} if sample.label else set()


def test_export_jsonl_carries_every_message_with_its_labels_and_predictions(
    home: Path, messages: list[SampleMessage]
) -> None:
    lines = commine("export", DATASET).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(r["comment"]["id"] for r in records) == sorted(m.comment["id"] for m in messages)
    by_id = {r["comment"]["id"]: r for r in records}
    for m in messages:
        record = by_id[m.comment["id"]]
        labelled = m in messages[:70]
        assert {a["name"] for a in record["labelling"]["assigned"]} == (expected_labels(m) if labelled else set())
        assert record["comment"]["messages"] == m.comment["messages"]
        assert record["model_version"] == 1
        probabilities = [p["probability"] for p in record["predictions"]]
        assert probabilities and probabilities == sorted(probabilities, reverse=True)
    # Going on after a uid gives exactly the rest.
    middle = records[40]["uid"]
    rest = commine("export", DATASET, "--after", middle).stdout.splitlines()
    assert [json.loads(line)["uid"] for line in rest] == [r["uid"] for r in records[41:]]


def test_export_csv_to_a_file_has_a_header_and_one_row_per_message(
    home: Path, messages: list[SampleMessage], tmp_path: Path
) -> None:
    target = tmp_path / "out.csv"
    commine("export", DATASET, "--format", "csv", "--output", str(target))
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert len(rows) == len(messages)
    by_id: dict[str, dict[str, Any]] = {row["comment_id"]: row for row in rows}
    for m in messages[:70]:
        row = by_id[m.comment["id"]]
        assert set(filter(None, row["assigned"].split("; "))) == expected_labels(m)
        assert row["body"] and row["model_version"] == "1" and "=" in row["predictions"]


def test_export_of_an_unknown_dataset_or_version_fails_clearly(home: Path) -> None:
    missing = CliRunner().invoke(cli, ["--embedded", "export", "p/nothing"])
    assert missing.exit_code != 0 and "does not exist" in missing.output
    version = CliRunner().invoke(cli, ["--embedded", "export", DATASET, "--version", "7"])
    assert version.exit_code != 0 and "no model version 7" in version.output


def test_reads_from_the_cli_are_in_the_audit_trail_beside_the_changes(home: Path) -> None:
    commine("export", DATASET, "--format", "csv")
    commine("queue", DATASET, "--mode", "uncertain", "-n", "3")
    accesses = [json.loads(line) for line in commine("audit", "--type", "DataAccessed", "--json").stdout.splitlines()]
    assert [a["action"] for a in accesses] == [f"export {DATASET}", f"queue {DATASET} --mode uncertain"]
    assert all(a["channel"] == "cli" and a["project"] == "p" and "pid" in a["client"] for a in accesses)
    assert all(a["actor"].startswith("user:") for a in accesses)
    changes = commine("audit", "--type", "ModelTrained").stdout.splitlines()
    assert len(changes) == 1 and "ModelTrained" in changes[0] and "trainer" in changes[0]
    everything = [json.loads(line) for line in commine("audit", "--json", "-n", "100000").stdout.splitlines()]
    assert {e["event_type"] for e in everything} >= {"DataAccessed", "MessageIngested", "ModelTrained"}
    stamps = [e["timestamp"] for e in everything]
    assert stamps == sorted(stamps)
    first = commine("audit", "-n", "2")
    assert len(first.stdout.splitlines()) == 2 and "--continuation" in first.stderr
    assert commine("audit", "--project", "elsewhere").stdout == ""


def test_history_shows_the_dataset_at_a_moment_and_the_changes_to_another(
    home: Path, messages: list[SampleMessage]
) -> None:
    from datetime import UTC, datetime

    then = datetime.now(UTC).isoformat()
    commine("labels", "rename", DATASET, "Billing", "Payments")
    now = datetime.now(UTC).isoformat()
    state = json.loads(commine("history", DATASET, "--at", then, "--json").stdout)
    assert state["exists"] and "Billing" in state["taxonomy"] and state["model"]["version"] == 1
    text = commine("history", DATASET, "--at", then).stdout
    labelled = sum(1 for m in messages[:70] if m.label)
    assert "model: version 1" in text and f"annotated messages: {labelled}" in text
    changes = json.loads(commine("history", DATASET, "--at", then, "--to", now, "--json").stdout)
    assert "Billing" in changes["taxonomy"]["removed"] and "Payments" in changes["taxonomy"]["added"]
    early = json.loads(commine("history", DATASET, "--at", "2000-01-01T00:00:00Z", "--json").stdout)
    assert early["exists"] is False

"""The model commands end to end on the embedded store: train, predict, validation, queue, discover, drift."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from commine.bootstrap import open_store
from commine.handlers.commands import create_dataset, create_project, create_source
from commine.handlers.ingest import handle_ingest
from commine.integrations.ingest_client import make_body
from commine.persistence.projections import catch_up
from commine.scripts.cli import cli
from commine.scripts.sample_mail import generate
from commine.settings import Settings

DATASET = "acme/support"
MESSAGES = generate(500, seed=7)


def _upload(store: object, messages: list, *, labelled: bool) -> None:
    for start in range(0, len(messages), 250):
        chunk = messages[start : start + 250]
        annotations = {m.comment["id"]: [m.label] for m in chunk if labelled and m.label}
        handle_ingest(
            store,
            make_body(
                "acme/inbox",
                [m.comment for m in chunk],
                actor="test",  # type: ignore[arg-type]
                dataset=DATASET,
                annotations=annotations,
            ),
        )
    catch_up(store)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An embedded home: 400 messages (300 annotated), a model trained by the CLI, then 100 more messages."""
    folder = tmp_path_factory.mktemp("models-cli")
    saved = {k: os.environ.pop(k) for k in [k for k in os.environ if k.startswith("COMMINE_")]}
    os.environ["COMMINE_HOME"] = str(folder)
    os.environ["COMMINE_TRANSFORMER"] = "0"
    from commine.settings import load_settings

    settings: Settings = load_settings().with_embedded()
    store = open_store(settings)
    create_project(store, "acme", actor="test")
    create_source(store, "acme/inbox", actor="test")
    create_dataset(store, DATASET, sources=["acme/inbox"], actor="test")
    _upload(store, MESSAGES[:300], labelled=True)
    _upload(store, MESSAGES[300:400], labelled=False)
    result = commine("train", DATASET)
    assert result.exit_code == 0, result.output
    _upload(store, MESSAGES[400:], labelled=False)
    store.engine.dispose()
    try:
        yield folder
    finally:
        os.environ.pop("COMMINE_HOME", None)
        os.environ.pop("COMMINE_TRANSFORMER", None)
        os.environ.update(saved)


def commine(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--embedded", *args], input=stdin, catch_exceptions=False)


def test_predict_reads_comments_on_stdin_and_ranks_every_label(home: Path) -> None:
    wanted = [m for m in MESSAGES[400:] if m.label][:20]
    stdin = "".join(json.dumps(m.comment) + "\n" for m in wanted)
    result = commine("predict", DATASET, stdin=stdin)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["id"] for line in lines] == [m.comment["id"] for m in wanted]
    for line in lines:
        probabilities = [label["probability"] for label in line["labels"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert all(isinstance(label["name"], list) for label in line["labels"])
    right = sum(
        " > ".join(line["labels"][0]["name"]) in (m.label, m.label.split(" > ")[0])
        for line, m in zip(lines, wanted, strict=True)
    )
    assert right >= 16


def test_predict_leaves_out_labels_under_the_threshold(home: Path) -> None:
    stdin = json.dumps(MESSAGES[450].comment) + "\n"
    result = commine("predict", DATASET, "--threshold", "0.5", stdin=stdin)
    line = json.loads(result.output)
    assert all(label["probability"] >= 0.5 for label in line["labels"])
    every = json.loads(commine("predict", DATASET, stdin=stdin).output)
    assert len(every["labels"]) > len(line["labels"])


def test_predict_names_the_bad_line(home: Path) -> None:
    result = CliRunner().invoke(cli, ["--embedded", "predict", DATASET], input='{"id": "x"}\nnot json\n')
    assert result.exit_code != 0
    assert "line 2" in result.output


def test_validation_reports_the_rating_and_each_label(home: Path) -> None:
    summary = json.loads(commine("validation", DATASET, "--json").output)
    assert summary["model_version"] == 1
    assert summary["rating"]["band"] in {"Poor", "Average", "Good", "Excellent"}
    assert {f["name"] for f in summary["rating"]["factors"]} == {
        "balance",
        "coverage",
        "all_labels",
        "underperforming_labels",
    }
    assert summary["validation"]["labels"]
    text = commine("validation", DATASET).output
    assert "rating" in text and "MAP" in text


def test_queues_return_unreviewed_messages_without_duplicates(home: Path) -> None:
    for mode in ("shuffle", "low-confidence", "rebalance"):
        picked = json.loads(commine("queue", DATASET, "--mode", mode, "-n", "10", "--json").output)
        assert picked, mode
        assert not any(item["reviewed"] for item in picked), mode
        assert len({item["uid"] for item in picked}) == len(picked)
    teach = json.loads(commine("queue", DATASET, "--mode", "teach", "--label", "Billing", "-n", "5", "--json").output)
    assert all(not item["reviewed"] for item in teach)
    found = json.loads(commine("queue", DATASET, "--mode", "search", "--query", "refund", "-n", "5", "--json").output)
    assert found and all("refund" in item["text"].lower() for item in found)


def test_an_unknown_label_to_teach_is_a_clear_error(home: Path) -> None:
    result = CliRunner().invoke(cli, ["--embedded", "queue", DATASET, "--mode", "teach", "--label", "Nope"])
    assert result.exit_code != 0 and "no label 'Nope'" in result.output


def test_discover_clusters_unreviewed_messages(home: Path) -> None:
    clusters = json.loads(commine("discover", DATASET, "-k", "5", "--json").output)
    assert len(clusters) == 5
    unreviewed = len(MESSAGES) - sum(1 for m in MESSAGES[:300] if m.label)
    assert sum(c["size"] for c in clusters) == unreviewed  # every unreviewed message, once
    assert all(c["top_terms"] and c["examples"] for c in clusters)


def test_drift_compares_messages_since_training_with_those_before(home: Path) -> None:
    report = json.loads(commine("drift", DATASET, "--json").output)
    assert report["model_version"] == 1
    assert report["n_recent"] == 100 and report["n_reference"] == 400
    assert isinstance(report["shifted"], bool)


def test_reproduce_trains_a_version_again_from_the_log_and_finds_the_same_artifact(home: Path) -> None:
    result = commine("reproduce", DATASET, "--version", "1")
    assert result.exit_code == 0, result.output
    assert "equals the recorded" in result.output
    missing = CliRunner().invoke(cli, ["--embedded", "reproduce", DATASET, "--version", "9"])
    assert missing.exit_code != 0 and "no model version 9" in missing.output

"""The embedded default: SQLite and the in-process broker, no server, for the CLI and the demo."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from commine.bootstrap import App, bootstrap
from commine.handlers.commands import create_project, create_source
from commine.handlers.ingest import MalformedMessage
from commine.integrations.ingest_client import make_body
from commine.persistence import schema as t
from commine.scripts.sample_mail import generate, to_csv_rows
from commine.settings import Settings
from commine.workers.inline import inline_worker

COMMINE = [sys.executable, "-m", "commine"]


def embedded_env(home: Path) -> dict[str, str]:
    """An environment with no COMMINE_* setting but the home folder: nothing points at a server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMINE_")}
    env["COMMINE_HOME"] = str(home)
    return env


def commine(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMINE, *args], env=env, capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"{' '.join(map(str, result.args[3:]))} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )
    return result


def bounded(action: Callable[[], Any], seconds: float) -> BaseException | None:
    """Run ``action`` on a daemon thread; the exception it raised, or None. Fails if it hangs."""
    outcome: dict[str, BaseException | None] = {"error": None}

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds:.0f} s: the error did not surface, the command hangs")
    return outcome["error"]


@pytest.fixture
def app(embedded_settings: Settings) -> Iterator[App]:
    """The embedded app with project ``p`` and source ``p/s``."""
    app = bootstrap(embedded_settings)
    try:
        create_project(app.store, "p", actor="test")
        create_source(app.store, "p/s", actor="test")
        yield app
    finally:
        app.close()


def test_the_embedded_cli_adds_a_project_and_a_source_uploads_and_shows_the_status(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    rows = to_csv_rows(generate(300, seed=7))
    path = tmp_path / "mail.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    upload = ["--embedded", "upload", "p/s", str(path), "--subject-column", "subject", "--from-column", "from"]

    assert "created project p" in ok(commine(env, "--embedded", "projects", "add", "p")).stdout
    assert "created source p/s" in ok(commine(env, "--embedded", "sources", "add", "p/s")).stdout
    first = ok(commine(env, *upload))
    second = ok(commine(env, *upload))
    state = json.loads(ok(commine(env, "--embedded", "status", "--json")).stdout)

    assert "300 new, 0 updated, 0 unchanged, 0 rejected" in first.stdout, first.stdout
    assert "0 new, 0 updated, 300 unchanged, 0 rejected" in second.stdout, second.stdout
    [project] = state["projects"]
    assert project["name"] == "p"
    assert [(s["name"], s["messages"]) for s in project["sources"]] == [("s", 300)]
    assert (tmp_path / "commine.db").is_file(), "the embedded store is not in COMMINE_HOME"
    text = ok(commine(env, "--embedded", "status")).stdout
    assert re.search(r"source\s+s\s+300 messages", text), text


def test_the_embedded_mode_refuses_to_start_a_worker(tmp_path: Path) -> None:
    result = commine(embedded_env(tmp_path), "--embedded", "worker")

    assert result.returncode != 0
    assert "start no worker" in result.stderr, result.stderr


def test_the_demo_runs_end_to_end_without_a_server_and_prints_its_summary(tmp_path: Path) -> None:
    result = ok(commine(embedded_env(tmp_path), "demo"))

    out = result.stdout
    assert re.search(
        r"first upload: \d+ batch\(es\) through the broker -> 2000 new, 0 updated, 0 unchanged, 0 rejected", out
    ), out
    assert re.search(r"same file again: .* -> 0 new, 0 updated, 2000 unchanged, 0 rejected", out), out
    assert "2000 messages in demo/support-inbox" in out, out
    assert re.search(r"[1-9]\d* annotated in demo/support", out), out
    assert "equals the live state" in out, out
    assert "demo finished in" in out, out
    folder = re.search(r"SQLite at (\S+)/demo\.db", out)
    assert folder is not None, out
    assert not Path(folder.group(1)).exists(), "the demo left its temporary folder behind"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"batch_id": "b-1", "source": "p/s"}, "needs the field(s): comments"),
        ("not an object", "must be a JSON object"),
        (make_body("p/nowhere", [{"id": "c1"}], actor="test"), "source p/nowhere does not exist"),
    ],
    ids=["without comments", "not an object", "unknown source"],
)
def test_a_malformed_ingest_message_raises_in_the_embedded_command_instead_of_hanging(
    app: App, body: Any, reason: str
) -> None:
    def ingest() -> None:
        with inline_worker(app):
            app.actors.ingest.send(body)

    error = bounded(ingest, 60)

    assert isinstance(error, MalformedMessage), f"expected MalformedMessage, got {error!r}"
    assert reason in str(error)
    letters = app.broker.reasoned_dead_letters  # type: ignore[attr-defined]
    assert [letter.queue for letter in letters] == [f"{app.settings.queue_prefix}.ingest.XQ"]
    assert reason in letters[0].reason
    with app.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.events)).scalar() == 2, "something was stored"


def test_a_good_batch_in_the_embedded_mode_is_stored_by_the_time_the_block_ends(app: App) -> None:
    comments = [s.comment for s in generate(20, seed=8)]

    def ingest() -> None:
        with inline_worker(app):
            app.actors.ingest.send(make_body("p/s", comments, actor="test"))

    assert bounded(ingest, 60) is None
    with app.engine.connect() as conn:
        stored = set(conn.execute(sa.select(t.messages.c.comment_id)).scalars())
    assert stored == {c["id"] for c in comments}


def test_a_bad_annotation_is_reported_in_the_receipt_and_the_rest_of_the_batch_is_stored(app: App) -> None:
    from commine.handlers.commands import create_dataset
    from commine.integrations.ingest_client import make_body, send, wait_for_receipts
    from commine.workers.inline import inline_worker

    create_dataset(app.store, "p/ds", sources=["p/s"], actor="test")
    comments = [
        {"id": f"c{i}", "timestamp": "2026-01-01T00:00:00Z", "messages": [{"body": {"text": f"hello {i}"}}]}
        for i in range(3)
    ]
    comments.append({"id": "bad", "timestamp": "not a time", "messages": [{"body": {"text": "x"}}]})
    labels = {"c0": ["Billing > Refund"], "c1": ["x" * 65], "bad": ["Billing"]}
    with inline_worker(app):
        batch_id = send(app, make_body("p/s", comments, actor="test", dataset="p/ds", annotations=labels))
    (receipt,) = wait_for_receipts(app, [batch_id], timeout=5)
    assert (receipt.new, receipt.rejected) == (3, 1)
    assert [(e["id"], e["field"]) for e in receipt.errors] == [("bad", "timestamp"), ("c1", "labels")]
    with app.engine.connect() as conn:
        rows = conn.execute(sa.select(t.annotations.c.uid, t.annotations.c.assigned)).all()
    assert [(uid.split(".", 1)[1], [a["name"] for a in assigned]) for uid, assigned in rows] == [
        ("c0", ["Billing", "Billing > Refund"])
    ]

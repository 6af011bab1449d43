"""The web UI over plain HTTP: sign-in, navigation, and that permissions decide what is shown and allowed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from api_helpers import Api, comment
from fastapi.testclient import TestClient

from commine.api.ui import data, offload
from commine.domain.access import LABELS_READ, LABELS_WRITE, STREAMS_ADMIN, STREAMS_CONSUME
from commine.handlers import history
from commine.handlers.insight import load_view
from commine.persistence.engine import make_engine, migrate
from commine.persistence.store import EventStore
from commine.settings import load_settings

UI = {"X-Commine-UI": "1"}


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    engine = make_engine(sqlite_url)
    migrate(engine)
    try:
        api = Api(EventStore(engine))
        source_id, _ = api.setup_source_and_dataset()
        api.source_id = source_id  # type: ignore[attr-defined]
        yield api
    finally:
        engine.dispose()


def browser(api: Api, headers: dict[str, str]) -> TestClient:
    """A client signed in through the sign-in form with the token of ``headers``."""
    client = TestClient(api.client.app, raise_server_exceptions=False)
    token = headers["Authorization"].removeprefix("Bearer ")
    answer = client.post("/login", data={"token": token, "next": "/"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    assert "httponly" in answer.headers["set-cookie"].lower()
    return client


def ready(client: TestClient, path: str, timeout: float = 120) -> httpx.Response:
    """GET ``path`` as a browser does: while it answers 202 "being prepared", it reloads itself."""
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(path)
        if answer.status_code != 202 or time.monotonic() > deadline:
            return answer
        assert 'http-equiv="refresh"' in answer.text
        time.sleep(0.1)


def test_pages_need_a_session_and_a_wrong_token_is_refused(api: Api) -> None:
    client = TestClient(api.client.app)
    answer = client.get("/d/acme/support/explore", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=/d/acme/support/explore")
    refused = client.post("/login", data={"token": "nope"}, follow_redirects=False)
    assert refused.status_code == 401
    assert "unknown or revoked token" in refused.text


def test_an_administrator_reaches_every_page_of_the_workspace(api: Api) -> None:
    client = browser(api, api.admin)
    home = client.get("/")
    assert home.status_code == 200 and "/d/acme/support" in home.text
    for page in ("", "/messages", "/explore", "/discover", "/refine", "/validation", "/streams", "/reports", "/audit"):
        answer = ready(client, f"/d/acme/support{page}")
        assert answer.status_code == 200, (page, answer.text[:500])
    uid = f"{api.source_id}.c1"  # type: ignore[attr-defined]
    message = client.get(f"/d/acme/support/m/{uid}")
    assert "Please refund my premium" in message.text
    assert 'id="label-controls"' in message.text


def test_labelling_through_the_ui_records_the_annotation_the_api_reads(api: Api) -> None:
    client = browser(api, api.admin)
    uid = f"{api.source_id}.c1"  # type: ignore[attr-defined]
    saved = client.post("/ui/d/acme/support/label", json={"uid": uid, "assigned": ["Billing > Refund"]}, headers=UI)
    assert saved.status_code == 200, saved.text
    read = api.ok("GET", "/api/_private/datasets/acme/support/labellings", params={"id": uid})
    names = sorted(a["name"] for a in read["results"][0]["labelling"][0]["assigned"])
    assert names == ["Billing", "Billing > Refund"]
    assert "Billing &gt; Refund" in client.get(f"/d/acme/support/m/{uid}").text


def test_a_ui_action_without_the_ui_header_changes_nothing(api: Api) -> None:
    client = browser(api, api.admin)
    uid = f"{api.source_id}.c1"  # type: ignore[attr-defined]
    answer = client.post("/ui/d/acme/support/label", json={"uid": uid, "assigned": ["Billing > Refund"]})
    assert answer.status_code == 403
    assert answer.json()["status"] == "error"


def test_a_reader_without_annotate_permission_sees_no_label_controls_and_is_refused_by_ui_and_api(api: Api) -> None:
    reader = api.user(LABELS_READ)
    client = browser(api, reader)
    uid = f"{api.source_id}.c1"  # type: ignore[attr-defined]
    page = client.get(f"/d/acme/support/m/{uid}")
    assert page.status_code == 200
    assert 'id="label-controls"' not in page.text and 'id="picker"' not in page.text
    explore = ready(client, "/d/acme/support/explore")
    assert explore.status_code == 200 and 'id="picker"' not in explore.text

    answer = client.post("/ui/d/acme/support/label", json={"uid": uid, "assigned": ["Billing > Refund"]}, headers=UI)
    assert answer.status_code == 403
    assert answer.json() == {"status": "error", "message": answer.json()["message"]}
    assert "voc" in answer.json()["message"]
    body = {"labelling": {"assigned": [{"name": ["Billing", "Refund"]}]}}
    message = api.fails(403, "POST", f"/api/_private/datasets/acme/support/labellings/{uid}", reader, json=body)
    assert "voc" in message


def test_an_annotator_sees_the_label_controls(api: Api) -> None:
    client = browser(api, api.user(LABELS_READ, LABELS_WRITE))
    uid = f"{api.source_id}.c1"  # type: ignore[attr-defined]
    assert 'id="label-controls"' in client.get(f"/d/acme/support/m/{uid}").text


def test_a_user_without_stream_permission_cannot_open_streams(api: Api) -> None:
    client = browser(api, api.user(LABELS_READ, LABELS_WRITE))
    answer = client.get("/d/acme/support/streams")
    assert answer.status_code == 403
    assert "text/html" in answer.headers["content-type"]
    assert "triggers-consume" in answer.text
    assert "/d/acme/support/streams" not in client.get("/d/acme/support").text  # no Streams tab
    refused = client.post("/ui/d/acme/support/streams", json={"name": "s", "thresholds": {}}, headers=UI)
    assert refused.status_code == 403


def test_a_stream_consumer_sees_streams_but_not_the_editor(api: Api) -> None:
    client = browser(api, api.user(LABELS_READ, STREAMS_CONSUME))
    answer = client.get("/d/acme/support/streams")
    assert answer.status_code == 200
    assert 'id="stream-editor"' not in answer.text
    admin = browser(api, api.user(LABELS_READ, STREAMS_CONSUME, STREAMS_ADMIN))
    assert 'id="stream-editor"' in admin.get("/d/acme/support/streams").text


def test_a_user_of_another_project_sees_neither_its_datasets_nor_its_pages(api: Api) -> None:
    client = browser(api, api.user(LABELS_READ, project="other"))
    assert "/d/acme/support" not in client.get("/").text
    assert client.get("/d/acme/support/explore").status_code == 403


def test_the_sign_in_page_does_not_redirect_off_site(api: Api) -> None:
    client = TestClient(api.client.app)
    token = api.admin["Authorization"].removeprefix("Bearer ")
    answer = client.post("/login", data={"token": token, "next": "//evil.example/"}, follow_redirects=False)
    assert answer.headers["location"] == "/"


def test_messages_page_lists_the_messages(api: Api) -> None:
    api.ok("POST", "/api/v1/sources/acme/inbox/sync", json={"comments": [comment(f"x{i}") for i in range(30)]})
    client = browser(api, api.admin)
    first = client.get("/d/acme/support/messages")
    assert first.status_code == 200 and "Older messages" in first.text


@pytest.fixture
def trained(api: Api) -> Api:
    """The dataset with 160 annotated sample messages and two model versions."""
    from commine.handlers.training import train_dataset
    from commine.scripts.sample_mail import generate

    messages = [m for m in generate(260, seed=7) if m.label is not None]
    api.ok("POST", "/api/v1/sources/acme/inbox/sync", json={"comments": [m.comment for m in messages]})
    source_id = api.source_id  # type: ignore[attr-defined]
    for m in messages[:160]:
        labelling = {"labelling": [{"group": "default", "assigned": [{"name": m.label}]}]}
        api.ok("POST", f"/api/_private/datasets/acme/support/labellings/{source_id}.{m.comment['id']}", json=labelling)
    dataset_id = api.ok("GET", "/api/v1/datasets/acme")["datasets"][0]["id"]
    train_dataset(api.store, dataset_id, actor="trainer")
    train_dataset(api.store, dataset_id, actor="trainer")
    api.messages = messages  # type: ignore[attr-defined]
    return api


def test_the_model_pages_and_the_stream_editor_with_two_trained_versions(trained: Api) -> None:
    client = browser(trained, trained.admin)
    base = "/d/acme/support"
    validation = client.get(f"{base}/validation?version=2&compare=1&sort=average_precision&desc=true")
    assert validation.status_code == 200, validation.text[:500]
    assert 'id="rating-score"' in validation.text and "<svg" in validation.text and "v2 against v1" in validation.text
    for page in ("/discover", "/refine?mode=check", "/refine?mode=missed", "/refine?mode=rebalance", "/explore"):
        assert ready(client, base + page).status_code == 200, page
    teach = ready(client, f"{base}/explore?queue_name=teach&label=Billing+%3E+Refund")
    assert 'id="message"' in teach.text
    reports = ready(client, f"{base}/reports?label=Billing+%3E+Refund&prop=string%3ARegion&value=London")
    assert reports.status_code == 200 and "Coverage per week" in reports.text, reports.text[:500]
    assert client.get(f"{base}/reports?prop=nope&value=x").status_code == 400
    thread = [m for m in trained.messages if m.comment.get("thread_id")]  # type: ignore[attr-defined]
    uid = f"{trained.source_id}.{thread[0].comment['id']}"  # type: ignore[attr-defined]
    assert client.get(f"{base}/m/{uid}").status_code == 200
    streams_are_previewed_created_and_pinned(trained, client)


def streams_are_previewed_created_and_pinned(trained: Api, client: TestClient) -> None:
    """The stream editor's actions: the preview moves with the threshold; create; pin another version."""
    api = "/ui/d/acme/support"
    strict = client.post(f"{api}/streams/preview", json={"thresholds": {"Billing > Refund": 1.0}}, headers=UI).json()
    body = {"thresholds": {"Billing > Refund": 0.0}, "label": "Billing > Refund"}
    loose = client.post(f"{api}/streams/preview", json=body, headers=UI).json()
    assert loose["recent"]["entering"] > strict["recent"]["entering"]
    assert 0 <= loose["recall"] <= 1 and loose["recall"] >= (strict.get("recall") or 0)
    new = {"name": "refunds", "model_version": 1, "thresholds": {"Billing > Refund": 0.5}}
    created = client.post(f"{api}/streams", json=new, headers=UI)
    assert created.status_code == 200, created.text
    page = client.get("/d/acme/support/streams?stream=refunds")
    assert "refunds" in page.text and "Edit refunds" in page.text
    moved = client.post(
        f"{api}/streams/preview", json={"thresholds": {"Billing > Refund": 0.0}, "stream": "refunds"}, headers=UI
    ).json()
    assert moved["backlog"]["backlog_after"] >= moved["backlog"]["backlog"]
    pinned = client.post(f"{api}/pin", json={"stream": "refunds", "version": 2}, headers=UI)
    assert pinned.status_code == 200 and pinned.json()["stream"]["model"]["version"] == 2
    stream = trained.ok("GET", "/api/v1/datasets/acme/support/streams/refunds")["stream"]
    assert stream["model"]["version"] == 2


def gated(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> tuple[threading.Event, list[str]]:
    """``module.name`` made to wait for the returned event (and count its calls): slow work made slow on purpose."""
    gate, calls = threading.Event(), []
    real = getattr(module, name)

    def slow(*args: Any) -> Any:
        calls.append(name)
        assert gate.wait(60), "the test never opened the gate"
        return real(*args)

    monkeypatch.setattr(module, name, slow)
    return gate, calls


def test_a_page_whose_dataset_is_still_being_prepared_says_so_and_reloads_until_it_is_ready(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, builds = gated(monkeypatch, data, "load_view")
    client = browser(api, api.admin)
    base = "/d/acme/support"
    for page in ("/explore", "/discover", "/reports"):
        started = time.monotonic()
        answer = client.get(base + page)
        assert answer.status_code == 202, (page, answer.text[:300])
        assert "messages, embeddings and predictions" in answer.text and 'http-equiv="refresh"' in answer.text
        assert time.monotonic() - started < 30  # it did not wait for the build (the gate is shut for 60 s)
    assert builds == ["load_view"]  # the three pages joined one build
    gate.set()
    explore = ready(client, base + "/explore")
    assert explore.status_code == 200 and 'id="message"' in explore.text
    assert ready(client, base + "/discover").status_code == 200
    assert builds == ["load_view"]


def test_a_failed_preparation_reaches_the_pages_for_a_while_then_the_next_visit_tries_again(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, attempts = data.load_view, []

    def flaky(*args: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise LookupError("the first build fails")
        return real(*args)

    monkeypatch.setattr(data, "load_view", flaky)
    monkeypatch.setattr(data, "FIRST_WAIT_S", 30)  # read when a page asks: this page waits for the build
    client = browser(api, api.admin)
    failed = client.get("/d/acme/support/explore")
    assert failed.status_code == 503 and "the first build fails" in failed.text, failed.text[:300]
    assert client.get("/d/acme/support/discover").status_code == 503  # reported, not tried again at once
    assert len(attempts) == 1
    monkeypatch.setattr(data, "FAILED_S", 0.0)
    assert ready(client, "/d/acme/support/explore").status_code == 200
    assert len(attempts) == 2


def until(check: Any, timeout: float = 60) -> Any:
    """``check()`` once it is truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found


def test_the_state_at_a_moment_is_rebuilt_in_the_background_and_kept_until_the_log_grows(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, rebuilds = gated(monkeypatch, history, "dataset_at")
    client = browser(api, api.admin)
    moment = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()[:16]  # a minute ahead: the dataset exists
    path = f"/d/acme/support/audit?at={moment}"
    waiting = client.get(path)
    assert waiting.status_code == 200 and 'id="state-preparing"' in waiting.text and 'id="history"' in waiting.text
    assert 'http-equiv="refresh"' in waiting.text
    assert 'id="state-preparing"' in client.get(path).text and len(rebuilds) == 1  # joined, not started again
    gate.set()
    shown = until(lambda: next((page for page in [client.get(path).text] if 'id="state-at"' in page), None))
    assert "0 reviewed messages" in shown and len(rebuilds) == 1
    uid = f"{api.source_id}.c1"  # type: ignore[attr-defined]
    labelled = client.post("/ui/d/acme/support/label", json={"uid": uid, "assigned": ["Billing > Refund"]}, headers=UI)
    assert labelled.status_code == 200, labelled.text
    # The moment is still ahead of the log, so the state can change; within LIVE_S it is kept as it was.
    assert "0 reviewed messages" in client.get(path).text and len(rebuilds) == 1
    monkeypatch.setattr(data, "LIVE_S", 0.0)
    assert "0 reviewed messages" in client.get(path).text  # the old answer, while the new one is prepared
    until(lambda: "1 reviewed messages" in client.get(path).text)
    assert len(rebuilds) == 2


def test_a_state_at_a_moment_the_log_has_passed_is_final(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    gate, rebuilds = gated(monkeypatch, history, "dataset_at")
    gate.set()
    store = api.store
    before = datetime.now(UTC)
    time.sleep(0.01)
    api.ok("PUT", "/api/v1/sources/acme/later", json={"source": {}})  # the log passes the moment
    monkeypatch.setattr(data, "LIVE_S", 0.0)
    first = data.state_at(store, "acme/support", before, wait=None)
    api.ok("PUT", "/api/v1/sources/acme/later-still", json={"source": {}})
    assert data.state_at(store, "acme/support", before, wait=None) is first and len(rebuilds) == 1


def test_warming_prepares_every_dataset_before_its_first_visit(trained: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    data.warm(trained.store).join(timeout=300)

    def no_build(*args: Any) -> Any:
        raise AssertionError("a page built a view that warming should have prepared")

    monkeypatch.setattr(data, "load_view", no_build)
    monkeypatch.setattr(data, "discover", no_build)
    client = browser(trained, trained.admin)
    for page in ("/explore", "/discover", "/refine?mode=check", "/refine?mode=missed", "/reports"):
        answer = client.get("/d/acme/support" + page)
        assert answer.status_code == 200, (page, answer.text[:300])


def child_pid(store: EventStore) -> int:
    return os.getpid()


@pytest.fixture
def in_processes(api: Api) -> Iterator[Api]:
    """The UI's long reads in child processes, as ``commine serve`` runs them."""
    settings = replace(load_settings(), database_url=str(api.store.engine.url))
    offload.use_processes(settings)
    try:
        yield api
    finally:
        offload.use_processes(None)


def test_served_views_and_past_states_are_built_in_a_child_process_and_equal_the_ones_built_here(
    in_processes: Api,
) -> None:
    store = in_processes.store
    assert offload.run(child_pid, store) != os.getpid()
    dataset_id = in_processes.ok("GET", "/api/v1/datasets/acme")["datasets"][0]["id"]
    view = data.view_of(store, dataset_id, wait=None)
    here = load_view(store, dataset_id)
    assert view.uids == here.uids and view.texts == here.texts and view.labels == here.labels
    np.testing.assert_array_equal(view.pool.embeddings, here.pool.embeddings)
    moment = datetime.now(UTC) + timedelta(minutes=1)
    assert data.state_at(store, "acme/support", moment, wait=None) == history.dataset_at(store, "acme/support", moment)
    client = browser(in_processes, in_processes.admin)
    assert 'id="message"' in ready(client, "/d/acme/support/explore").text


ORPHAN = """
import os
import re
from dataclasses import replace
from commine.api.ui import offload
from commine.settings import load_settings

def pid(store):
    return os.getpid()

if __name__ == "__main__":
    offload.use_processes(replace(load_settings(), database_url={url!r}))
    print(offload.run(pid, None), flush=True)
    os._exit(0)  # gone without a word to its children, as after a SIGKILL
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_the_child_processes_exit_when_the_server_that_started_them_dies(tmp_path: Any) -> None:
    script = tmp_path / "server.py"
    script.write_text(ORPHAN.format(url=f"sqlite:///{tmp_path / 'commine.db'}"))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    child = int(done.stdout.split()[-1])
    deadline = time.monotonic() + 15
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child), f"child {child} outlived its server"


def test_discover_labels_a_whole_cluster_or_the_ticked_messages_and_lists_one_cluster(trained: Api) -> None:
    client = browser(trained, trained.admin)
    page = ready(client, "/d/acme/support/discover")
    assert page.status_code == 200, page.text[:300]
    generation = int(re.search(r'data-generation="(\d+)"', page.text).group(1))  # type: ignore[union-attr]
    sizes = [int(n) for n in re.findall(r"<small>(\d+) messages</small>", page.text)]
    assert len(sizes) >= 2 and "data-uids" not in page.text
    first = client.get("/d/acme/support/discover?cluster=0")
    members = re.findall(r'class="pick" value="([^"]+)"', first.text)
    assert len(members) == sizes[0] and len(set(members)) == sizes[0]
    assert client.get(f"/d/acme/support/discover?cluster={len(sizes) + 500}").status_code == 404

    # Reviewed by someone since the clusters were made: "the whole cluster" leaves it alone.
    seen = client.post("/ui/d/acme/support/label", json={"uid": members[0], "assigned": ["Billing"]}, headers=UI)
    assert seen.status_code == 200, seen.text
    action = "/ui/d/acme/support/label-cluster"
    whole = client.post(action, json={"cluster": 0, "generation": generation, "label": "Billing > Refund"}, headers=UI)
    assert whole.status_code == 200 and whole.json()["labelled"] == sizes[0] - 1, whole.text
    kept = trained.ok("GET", "/api/_private/datasets/acme/support/labellings", params={"id": members[0]})
    assert [a["name"] for a in kept["results"][0]["labelling"][0]["assigned"]] == ["Billing"]
    for uid in (members[1], members[-1]):
        read = trained.ok("GET", "/api/_private/datasets/acme/support/labellings", params={"id": uid})
        assert "Billing > Refund" in [a["name"] for a in read["results"][0]["labelling"][0]["assigned"]]

    stale = client.post(action, json={"cluster": 1, "generation": generation + 1, "label": "Billing"}, headers=UI)
    assert stale.status_code == 409 and stale.json()["status"] == "error" and "reload" in stale.json()["message"]
    ticked = re.findall(r'class="pick" value="([^"]+)"', client.get("/d/acme/support/discover?cluster=1").text)[:2]
    picked = client.post(action, json={"uids": ticked, "label": "Billing"}, headers=UI)
    assert picked.status_code == 200 and picked.json()["labelled"] == 2, picked.text


def test_a_new_model_version_swaps_in_a_view_with_its_clusters_and_dates_ready(
    trained: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from commine.handlers.training import train_dataset
    from commine.persistence.projections import catch_up

    store = trained.store
    dataset_id = trained.ok("GET", "/api/v1/datasets/acme")["datasets"][0]["id"]
    data.warm(store).join(timeout=300)
    assert data.view_of(store, dataset_id).version == 2
    train_dataset(store, dataset_id, actor="trainer")
    catch_up(store)
    assert data.view_of(store, dataset_id).version == 2  # the old view answers while the new one is built
    until(lambda: data.view_of(store, dataset_id).version == 3, timeout=300)

    def no_build(*args: Any) -> Any:
        raise AssertionError("a page computed what the new view should have brought along")

    monkeypatch.setattr(data, "discover", no_build)
    client = browser(trained, trained.admin)
    for page in ("/discover", "/reports"):
        answer = client.get("/d/acme/support" + page)
        assert answer.status_code == 200, (page, answer.text[:300])

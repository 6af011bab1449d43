"""The web UI over plain HTTP: sign-in, navigation, and that permissions decide what is shown and allowed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_helpers import Api, comment
from fastapi.testclient import TestClient

from commine.domain.access import LABELS_READ, LABELS_WRITE, STREAMS_ADMIN, STREAMS_CONSUME
from commine.persistence.engine import make_engine, migrate
from commine.persistence.store import EventStore

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
        answer = client.get(f"/d/acme/support{page}")
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
    explore = client.get("/d/acme/support/explore")
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
        assert client.get(base + page).status_code == 200, page
    teach = client.get(f"{base}/explore?queue_name=teach&label=Billing+%3E+Refund")
    assert 'id="message"' in teach.text
    reports = client.get(f"{base}/reports?label=Billing+%3E+Refund&prop=string%3ARegion&value=London")
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

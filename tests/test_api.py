"""Contract tests of the HTTP API, from the reference's shapes (../shared/reference/communications-mining-api.md).

Every test runs on SQLite and on PostgreSQL (the ``store`` fixture), through FastAPI's TestClient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from api_helpers import PROJECT, Api, comment

from commine.domain.access import User, user_aggregate_id
from commine.domain.names import label_ancestors
from commine.handlers.access import hash_token, revoke_tokens
from commine.handlers.commands import new_id, run
from commine.handlers.training import train_dataset
from commine.persistence import readmodels
from commine.persistence.store import EventStore
from commine.scripts.sample_mail import generate

SOURCE_FIELDS = {"id", "owner", "name", "title", "description", "language", "should_translate", "created_at"}
SOURCE_FIELDS |= {"updated_at", "_kind"}
DATASET_FIELDS = {"id", "name", "owner", "title", "description", "created", "last_modified", "model_family"}
DATASET_FIELDS |= {"source_ids", "has_sentiment", "entity_defs", "general_fields", "label_defs", "label_groups"}
DATASET_FIELDS |= {"_dataset_flags"}
USER_FIELDS = {"id", "username", "email", "created", "global_permissions", "organisation_permissions"}
USER_FIELDS |= {"sso_global_permissions", "verified"}


@pytest.fixture
def api(store: EventStore) -> Iterator[Api]:
    yield Api(store)


# --- authentication and the error envelope -------------------------------------------------------


def test_no_token_bad_token_and_revoked_token_are_401(api: Api) -> None:
    api.fails(401, "GET", "/api/v1/sources", headers={})
    api.fails(401, "GET", "/api/v1/sources", headers={"Authorization": "Bearer nope"})
    api.fails(401, "GET", "/api/v1/sources", headers={"Authorization": "Basic cm9vdDpyb290"})
    headers = api.user("sources-read")
    api.ok("GET", "/api/v1/sources", headers)
    revoke_tokens(api.store, "user1", actor="test")
    assert "revoked" in api.fails(401, "GET", "/api/v1/sources", headers)


def test_a_token_and_a_grant_the_read_models_do_not_hold_yet_are_honoured(api: Api) -> None:
    # As a CLI command or a worker in another process writes: appended to the log, not caught up.
    def append_only(command: Callable[[User], object]) -> None:
        run(api.store, User, user_aggregate_id("user1"), command)

    headers = api.user()
    api.ok("PUT", "/api/v1/sources/acme/inbox", json={"source": {}})
    api.fails(403, "GET", "/api/v1/sources/acme/inbox", headers)
    append_only(lambda u: u.grant(PROJECT, ["sources-read"], actor="test"))
    assert api.ok("GET", "/api/v1/sources/acme/inbox", headers)["source"]["name"] == "inbox"
    token = "a-token-the-read-models-have-not-seen"
    append_only(lambda u: u.issue_token(token_id=new_id(), token_hash=hash_token(token), description="", actor="t"))
    assert api.ok("GET", "/api/auth/user", api.headers(token))["user"]["username"] == "user1"


def test_auth_user_has_every_field_re_requires(api: Api) -> None:
    user = api.ok("GET", "/api/auth/user")["user"]
    assert set(user) >= USER_FIELDS and user["username"] == "root" and user["global_permissions"] == ["root"]
    mine = api.ok("GET", "/api/auth/user", api.user("voc", "sources-read"))["user"]
    assert mine["global_permissions"] == [] and mine["organisation_permissions"] == {PROJECT: ["sources-read", "voc"]}


def test_framework_errors_use_the_envelope(api: Api) -> None:
    assert api.fails(404, "GET", "/api/nowhere") == "404 Not Found"
    api.fails(405, "PATCH", "/api/v1/sources")
    api.ok("PUT", "/api/v1/sources/acme/inbox", json={"source": {}})
    headers = {**api.admin, "Content-Type": "application/json"}
    assert "not valid JSON" in api.fails(400, "POST", "/api/v1/sources/acme/inbox/sync", headers, content=b"{bad")
    api.fails(400, "POST", "/api/v1/sources/acme/inbox/sync", json={"comments": "many"})
    api.fails(400, "PUT", "/api/v1/sources/acme/bad%20name", json={"source": {}})
    api.fails(400, "GET", "/api/v1/sources/id:XYZ")


# --- sources -------------------------------------------------------------------------------------


def test_source_create_get_update_delete(api: Api) -> None:
    created = api.ok("PUT", "/api/v1/sources/acme/inbox", json={"source": {"title": "Inbox", "_kind": "email"}})
    source = created["source"]
    assert set(source) >= SOURCE_FIELDS and source["owner"] == PROJECT and source["_kind"] == "email"
    assert "already" in api.fails(409, "PUT", "/api/v1/sources/acme/inbox", json={"source": {}})
    assert api.ok("GET", f"/api/v1/sources/id:{source['id']}")["source"]["name"] == "inbox"
    assert [s["name"] for s in api.ok("GET", "/api/v1/sources/acme")["sources"]] == ["inbox"]
    updated = api.ok("POST", "/api/v1/sources/acme/inbox", json={"source": {"description": "shared mailbox"}})
    assert updated["source"]["description"] == "shared mailbox" and updated["source"]["title"] == "Inbox"
    api.fails(400, "PUT", "/api/v1/sources/acme/other", json={"source": {"title": "x" * 129}})
    api.fails(400, "PUT", "/api/v1/sources/acme/other", json={"source": {"language": "klingon"}})
    api.fails(404, "PUT", "/api/v1/sources/nowhere/inbox", json={"source": {}})
    api.fails(400, "DELETE", "/api/v1/sources/acme")
    assert api.ok("DELETE", f"/api/v1/sources/id:{source['id']}") == {"status": "ok"}
    api.fails(404, "GET", "/api/v1/sources/acme/inbox")


def test_percent_encoded_project_and_name_work(api: Api) -> None:
    api.ok("PUT", "/api/v1/sources/acme%2Finbox", json={"source": {}})
    assert api.ok("GET", "/api/v1/sources/acme%2Finbox")["source"]["name"] == "inbox"
    body = api.ok("POST", "/api/v1/sources/acme%2Finbox/sync", json={"comments": [comment("c1")]})
    assert body["new"] == 1
    assert api.ok("GET", "/api/v1/sources/acme%2Finbox/comments/c1")["comment"]["id"] == "c1"


# --- comments ------------------------------------------------------------------------------------


def test_sync_counts_new_updated_unchanged(api: Api) -> None:
    api.ok("PUT", "/api/v1/sources/acme/inbox", json={"source": {}})
    first = api.ok("POST", "/api/v1/sources/acme/inbox/sync", json={"comments": [comment("a"), comment("b")]})
    assert (first["new"], first["updated"], first["unchanged"]) == (2, 0, 0)
    again = api.ok("POST", "/api/v1/sources/acme/inbox/sync", json={"comments": [comment("a"), comment("b", "new")]})
    assert (again["new"], again["updated"], again["unchanged"]) == (0, 1, 1)


def test_sync_limits_and_bad_comments_are_400_and_store_nothing(api: Api) -> None:
    api.ok("PUT", "/api/v1/sources/acme/inbox", json={"source": {}})
    too_many = {"comments": [comment(f"c{i}") for i in range(16385)]}
    assert "16384" in api.fails(400, "POST", "/api/v1/sources/acme/inbox/sync", json=too_many)
    bad = {"comments": [comment("ok"), comment("bad", "x" * 65537)]}
    message = api.fails(400, "POST", "/api/v1/sources/acme/inbox/sync", json=bad)
    assert message.startswith("comments[1].messages[0].body.text")
    api.fails(404, "GET", "/api/v1/sources/acme/inbox/comments/ok")
    api.fails(404, "POST", "/api/v1/sources/acme/missing/sync", json={"comments": [comment("x")]})


def test_comment_shape_and_delete(api: Api) -> None:
    source_id, _ = api.setup_source_and_dataset()
    got = api.ok("GET", "/api/v1/sources/acme/inbox/comments/c1")["comment"]
    assert got["uid"] == f"{source_id}.c1" and got["has_annotations"] is False and got["created_at"].endswith("Z")
    assert got["messages"][0]["body"]["text"] == "Please refund my premium"
    api.fails(404, "DELETE", "/api/v1/sources/acme/inbox/comments?id=c1&id=nope")
    api.ok("GET", "/api/v1/sources/acme/inbox/comments/c1")  # nothing deleted by the refused request
    assert api.ok("DELETE", "/api/v1/sources/acme/inbox/comments?id=c1") == {"status": "ok"}
    api.fails(404, "GET", "/api/v1/sources/acme/inbox/comments/c1")
    api.fails(400, "DELETE", "/api/v1/sources/acme/inbox/comments")


def test_private_create_refuses_known_ids_and_pages_by_time(api: Api) -> None:
    api.ok("PUT", "/api/v1/sources/acme/inbox", json={"source": {}})
    comments = [{**comment(f"c{i}"), "timestamp": f"2024-05-0{i}T09:00:00Z"} for i in range(1, 6)]
    assert api.ok("PUT", "/api/_private/sources/acme/inbox/comments", json={"comments": comments}) == {"status": "ok"}
    api.fails(409, "PUT", "/api/_private/sources/acme/inbox/comments", json={"comments": comments[:1]})
    seen, after = [], None
    while True:
        query = "limit=2" + (f"&after={after}" if after else "")
        page = api.ok("GET", f"/api/_private/sources/acme/inbox/comments?{query}")
        seen += [c["id"] for c in page["comments"]]
        after = page["continuation"]
        if after is None:
            break
    assert seen == ["c1", "c2", "c3", "c4", "c5"]
    ranged = api.ok(
        "GET",
        "/api/_private/sources/acme/inbox/comments?from_timestamp=2024-05-02T00:00:00Z&to_timestamp=2024-05-03T23:00:00Z",
    )
    assert [c["id"] for c in ranged["comments"]] == ["c2", "c3"]
    api.fails(400, "GET", "/api/_private/sources/acme/inbox/comments?limit=257")
    api.fails(400, "GET", "/api/_private/sources/acme/inbox/comments?after=garbage")


def test_sensitive_properties_need_the_sensitive_permission(api: Api) -> None:
    api.ok("PUT", "/api/v1/sources/acme/inbox", json={"source": {"sensitive_properties": ["string:Email"]}})
    props = {"string:Email": "a@b.c", "string:Country": "uk"}
    api.ok("POST", "/api/v1/sources/acme/inbox/sync", json={"comments": [comment("c1", user_properties=props)]})
    plain = api.ok("GET", "/api/v1/sources/acme/inbox/comments/c1", api.user("sources-read"))["comment"]
    assert plain["user_properties"] == {"string:Country": "uk"}
    sensitive = api.user("sources-read", "sources-read-sensitive")
    assert api.ok("GET", "/api/v1/sources/acme/inbox/comments/c1", sensitive)["comment"]["user_properties"] == props


# --- datasets and labellings ---------------------------------------------------------------------


def test_dataset_shape_create_update(api: Api) -> None:
    source_id, dataset_id = api.setup_source_and_dataset()
    dataset = api.ok("GET", "/api/v1/datasets/acme/support")["dataset"]
    assert set(dataset) >= DATASET_FIELDS and dataset["source_ids"] == [source_id]
    assert [d["name"] for d in dataset["label_defs"]] == ["Billing", "Billing > Refund"]
    assert dataset["label_groups"][0]["name"] == "default"
    assert api.ok("GET", f"/api/v1/datasets/id:{dataset_id}")["dataset"]["name"] == "support"
    assert [d["id"] for d in api.ok("GET", "/api/v1/datasets")["datasets"]] == [dataset_id]
    updated = api.ok("POST", "/api/v1/datasets/acme/support", json={"dataset": {"title": "Support"}})["dataset"]
    assert updated["title"] == "Support" and updated["last_modified"] >= dataset["last_modified"]
    api.fails(409, "PUT", "/api/v1/datasets/acme/support", json={"dataset": {}})
    api.fails(404, "PUT", "/api/v1/datasets/acme/other", json={"dataset": {"source_ids": ["0123456789abcdef"]}})
    api.fails(400, "PUT", "/api/v1/datasets/acme/other", json={"dataset": {"entity_defs": [{"name": "x"}]}})
    api.fails(404, "GET", "/api/v1/datasets/acme/nothing")
    assert api.ok("PUT", "/api/_private/datasets/acme/support/labels/default", json={"label_defs": [{"name": "Other"}]})
    assert "Other" in [d["name"] for d in api.ok("GET", "/api/v1/datasets/acme/support")["dataset"]["label_defs"]]


def test_dataset_delete_by_name_and_by_id_keeps_the_sources(api: Api) -> None:
    source_id, dataset_id = api.setup_source_and_dataset()
    uid = f"{source_id}.c1"
    labelling = {"labelling": [{"group": "default", "assigned": [{"name": "Billing"}]}]}
    api.ok("POST", f"/api/_private/datasets/acme/support/labellings/{uid}", json=labelling)
    assert api.ok("DELETE", "/api/v1/datasets/acme/support") == {"status": "ok"}
    api.fails(404, "GET", "/api/v1/datasets/acme/support")
    api.fails(404, "GET", f"/api/v1/datasets/id:{dataset_id}")
    api.fails(404, "DELETE", "/api/v1/datasets/acme/support")
    api.fails(404, "POST", f"/api/_private/datasets/acme/support/labellings/{uid}", json=labelling)
    assert api.ok("GET", "/api/v1/datasets")["datasets"] == []
    assert api.ok("GET", "/api/v1/sources/acme/inbox/comments/c1")["comment"]["id"] == "c1"
    # The name is free again; the new dataset starts with no annotations.
    again = api.ok("PUT", "/api/v1/datasets/acme/support", json={"dataset": {"source_ids": [source_id]}})["dataset"]
    assert again["id"] != dataset_id
    read = api.ok("GET", f"/api/_private/datasets/acme/support/labellings?id={uid}")["results"]
    assert read[0]["comment"]["has_annotations"] is False
    assert api.ok("DELETE", f"/api/v1/datasets/id:{again['id']}") == {"status": "ok"}
    api.fails(404, "DELETE", f"/api/v1/datasets/id:{again['id']}")
    assert "by its id" in api.fails(400, "DELETE", "/api/v1/datasets/acme")
    api.fails(400, "DELETE", "/api/v1/datasets/id:nothex")


def test_resyncing_a_message_with_new_text_keeps_its_labels(api: Api) -> None:
    source_id, _ = api.setup_source_and_dataset()
    uid = f"{source_id}.c1"
    labelling = {"labelling": [{"group": "default", "assigned": [{"name": "Billing > Refund"}]}]}
    api.ok("POST", f"/api/_private/datasets/acme/support/labellings/{uid}", json=labelling)
    edited = comment("c1", "Actually I want to cancel instead")
    assert api.ok("POST", "/api/v1/sources/acme/inbox/sync", json={"comments": [edited]})["updated"] == 1
    stored = api.ok("GET", "/api/v1/sources/acme/inbox/comments/c1")["comment"]
    assert stored["messages"][0]["body"]["text"] == "Actually I want to cancel instead"
    read = api.ok("GET", f"/api/_private/datasets/acme/support/labellings?id={uid}")["results"][0]
    assert sorted(a["name"] for a in read["labelling"][0]["assigned"]) == ["Billing", "Billing > Refund"]


def test_labellings_set_and_read(api: Api) -> None:
    source_id, dataset_id = api.setup_source_and_dataset()
    uid = f"{source_id}.c1"
    labelling = {
        "labelling": [{"group": "default", "assigned": [{"name": "Billing > Refund", "sentiment": "positive"}]}]
    }
    result = api.ok("POST", f"/api/_private/datasets/acme/support/labellings/{uid}", json=labelling)
    assert result["comment"]["uid"] == uid and result["comment"]["has_annotations"] is True
    assigned = [a["name"] for a in result["labelling"][0]["assigned"]]
    assert sorted(assigned) == ["Billing", "Billing > Refund"]
    read = api.ok("GET", f"/api/_private/datasets/acme/support/labellings?id={uid}")["results"]
    assert [r["comment"]["uid"] for r in read] == [uid] and read[0]["labelling"] == result["labelling"]
    # Replacing the labelling: dismissing what was assigned.
    dismiss = {"labelling": [{"group": "default", "assigned": [], "dismissed": [{"name": "Billing"}]}]}
    after = api.ok("POST", f"/api/_private/datasets/acme/support/labellings/{uid}", json=dismiss)
    assert after["labelling"][0]["assigned"] == [] and after["labelling"][0]["dismissed"] == [{"name": "Billing"}]
    page = api.ok("GET", "/api/_private/datasets/acme/support/labellings?limit=1")
    rest = api.ok("GET", f"/api/_private/datasets/acme/support/labellings?limit=1&after={page['after']}")
    assert [r["comment"]["id"] for r in page["results"] + rest["results"]] == ["c1", "c2"] and rest["after"] is None
    api.fails(404, "POST", f"/api/_private/datasets/acme/support/labellings/{source_id}.nope", json=labelling)
    api.fails(400, "POST", "/api/_private/datasets/acme/support/labellings/nodot", json=labelling)
    # commine's addition: the queue the comment was picked from, for validation's balance.
    picked = {**labelling, "queue": "shuffle"}
    api.ok("POST", f"/api/_private/datasets/acme/support/labellings/{source_id}.c2", json=picked)
    with api.store.engine.connect() as conn:
        assert readmodels.reviewed_from(conn, dataset_id, "shuffle") == {f"{source_id}.c2"}
    wrong = {**labelling, "queue": "anywhere"}
    api.fails(400, "POST", f"/api/_private/datasets/acme/support/labellings/{source_id}.c2", json=wrong)


def test_model_routes_without_a_model(api: Api) -> None:
    source_id, _ = api.setup_source_and_dataset()
    assert api.ok("POST", "/api/_private/datasets/acme/support/labellers", json={})["labellers"] == []
    for prefix in ("/api/v1", "/api/_private"):
        assert "no model" in api.fails(404, "GET", f"{prefix}/datasets/acme/support/labellers/latest/validation")
    api.fails(400, "GET", "/api/v1/datasets/acme/support/labellers/zero/validation")
    api.fails(404, "POST", "/api/v1/datasets/acme/support/labellers/1/predict", json={"documents": []})
    too_many = {"documents": [{"messages": [{"body": {"text": "x"}}]}] * 4097}
    assert "4096" in api.fails(400, "POST", "/api/v1/datasets/acme/support/labellers/1/predict", json=too_many)
    api.fails(400, "POST", "/api/v1/datasets/acme/support/labellers/1/predict", json={"documents": [], "threshold": 2})
    uids = {"uids": [f"{source_id}.c1"]}
    api.fails(404, "POST", "/api/v1/datasets/acme/support/labellers/latest/predict-comments", json=uids)


def test_model_routes_with_a_trained_model(api: Api) -> None:
    source_id, dataset_id = api.setup_source_and_dataset()
    messages = [m for m in generate(300, seed=7) if m.label is not None]
    api.ok("POST", "/api/v1/sources/acme/inbox/sync", json={"comments": [m.comment for m in messages]})
    for m in messages[:200]:
        labelling = {"labelling": [{"group": "default", "assigned": [{"name": m.label}]}]}
        api.ok("POST", f"/api/_private/datasets/acme/support/labellings/{source_id}.{m.comment['id']}", json=labelling)
    train_dataset(api.store, dataset_id, actor="trainer")

    labellers = api.ok("POST", "/api/_private/datasets/acme/support/labellers", json={})["labellers"]
    assert [(m["version"], len(m["model_id"])) for m in labellers] == [(1, 16)]
    validation = api.ok("GET", "/api/_private/datasets/acme/support/labellers/latest/validation")["validation"]
    assert validation["version"] == 1 and validation["reviewed_size"] == 200
    assert 0 <= validation["model_rating"]["score"] <= 100 and validation["labels"]
    label = messages[0].label
    assert label is not None
    curve = api.ok(
        "POST", "/api/_private/datasets/acme/support/labellers/1/label-validation", json={"label": label.split(" > ")}
    )["label_validation"]
    assert len(curve["thresholds"]) == len(curve["precisions"]) == len(curve["recalls"]) > 0
    assert curve["thresholds"] == sorted(curve["thresholds"])
    assert all(0 <= v <= 1 for v in curve["precisions"] + curve["recalls"])
    assert curve["recalls"] == sorted(curve["recalls"], reverse=True)  # a higher threshold finds fewer
    missing = {"label": "No such label"}
    api.fails(404, "POST", "/api/_private/datasets/acme/support/labellers/1/label-validation", json=missing)
    api.fails(400, "POST", "/api/_private/datasets/acme/support/labellers/1/label-validation", json={"label": ""})

    # Predictions of an unseen document and of stored comments, best label first, none under the threshold.
    unseen = {"documents": [{"messages": m.comment["messages"]} for m in messages[200:205]], "threshold": 0.3}
    predicted = api.ok("POST", "/api/v1/datasets/acme/support/labellers/1/predict", json=unseen)["predictions"]
    assert len(predicted) == 5
    for item in predicted:
        probabilities = [label["probability"] for label in item["labels"]]
        assert probabilities == sorted(probabilities, reverse=True) and min(probabilities, default=1) >= 0.3
    right = sum(bool(p["labels"]) and p["labels"][0]["name"] == m.label.split(" > ")[: len(p["labels"][0]["name"])]
                for p, m in zip(predicted, messages[200:205], strict=True))  # fmt: skip
    assert right >= 3
    uids = {"uids": [f"{source_id}.{m.comment['id']}" for m in messages[205:208]], "threshold": "auto"}
    stored = api.ok("POST", "/api/v1/datasets/acme/support/labellers/latest/predict-comments", json=uids)
    assert [p["uid"] for p in stored["predictions"]] == uids["uids"]

    # The export: every message once, in pages, labels as "Parent > Child" strings, predictions best first.
    first = api.ok("POST", "/api/v1/datasets/acme/support/export", json={"limit": 150})
    rest = api.ok("POST", "/api/v1/datasets/acme/support/export", json={"continuation": first["continuation"]})
    exported = first["comments"] + rest["comments"]
    assert first["total"] == len(exported) == len(messages) + 2 and rest["continuation"] is None
    assert len({c["uid"] for c in exported}) == len(exported)
    by_id = {c["id"]: c for c in exported}
    for m in messages[:200]:
        assigned = {a["name"] for a in by_id[m.comment["id"]]["labelling"]["assigned"]}
        assert assigned == {m.label, *label_ancestors(m.label)}  # a child implies its parent
    assert by_id[messages[200].comment["id"]]["labelling"]["assigned"] == []
    for c in exported:
        assert c["model_version"] == 1 and c["messages"]
        probabilities = [p["probability"] for p in c["predictions"]]
        assert probabilities and probabilities == sorted(probabilities, reverse=True)
    bad = {"continuation": f"{source_id}.nothing"}
    api.fails(400, "POST", "/api/v1/datasets/acme/support/export", json=bad)
    api.fails(404, "POST", "/api/v1/datasets/acme/support/export", json={"model_version": 9})


# --- audit and projects --------------------------------------------------------------------------


def test_audit_events_are_scoped_by_project_and_page(api: Api) -> None:
    api.setup_source_and_dataset()
    api.ok("PUT", "/api/_private/projects/other", json={"project": {}})
    api.ok("PUT", "/api/v1/sources/other/box", json={"source": {}})
    auditor = api.user("audit-read")
    events = api.ok("POST", "/api/v1/audit_events/query", auditor, json={"filter": {"timestamp": {}}})["audit_events"]
    assert events and {p for e in events for p in e["project_ids"]} == {PROJECT}
    assert "SourceCreated" in {e["event_type"] for e in events} and "UserAdded" not in {e["event_type"] for e in events}
    everything = api.ok("POST", "/api/v1/audit_events/query", json={"filter": {"event_types": ["SourceCreated"]}})
    assert {e["aggregate_id"] for e in everything["audit_events"]} == {"source:acme/inbox", "source:other/box"}
    assert {u["id"] for u in everything["users"]} == {"api:root"}
    changes = {"limit": 2, "filter": {"event_types": ["SourceCreated", "DatasetCreated", "LabelDefined"]}}
    first = api.ok("POST", "/api/v1/audit_events/query", json=changes)
    second = api.ok("POST", "/api/v1/audit_events/query", json={**changes, "continuation": first["continuation"]})
    assert first["audit_events"][-1]["position"] < second["audit_events"][0]["position"]
    future = {"filter": {"timestamp": {"minimum": "2999-01-01T00:00:00Z"}}}
    assert api.ok("POST", "/api/v1/audit_events/query", json=future)["audit_events"] == []
    api.fails(400, "POST", "/api/v1/audit_events/query", json={"filter": {"timestamp": {"minimum": "yesterday"}}})
    api.fails(403, "POST", "/api/v1/audit_events/query", api.user("sources-read"), json={})


def test_reads_and_refusals_through_the_api_are_in_the_audit_trail_with_who_and_from_where(api: Api) -> None:
    source_id, _ = api.setup_source_and_dataset()
    api.ok("PUT", "/api/_private/projects/other", json={"project": {}})
    api.ok("PUT", "/api/v1/sources/other/box", json={"source": {}})
    reader, stranger = api.user("sources-read"), api.user("voc")
    api.ok("GET", "/api/v1/sources/acme/inbox/comments/c1", reader)
    api.fails(403, "GET", "/api/v1/sources/acme/inbox/comments/c2", stranger)
    api.ok("GET", f"/api/v1/sources/id:{source_id}", reader)
    api.ok("GET", "/api/v1/sources/other%2Fbox")  # the administrator, in the other project

    auditor = api.user("audit-read")
    reads = {"filter": {"event_types": ["DataAccessed"]}, "limit": 1024}
    seen = api.ok("POST", "/api/v1/audit_events/query", auditor, json=reads)["audit_events"]
    calls = [(e["actor_user_id"], e["action"], e["status"]) for e in seen]
    assert ("api:user1", "GET /api/v1/sources/acme/inbox/comments/c1", 200) in calls
    assert ("api:user2", "GET /api/v1/sources/acme/inbox/comments/c2", 403) in calls
    assert ("api:user1", f"GET /api/v1/sources/id:{source_id}", 200) in calls
    assert all(e["project_ids"] == ["acme"] and e["channel"] == "api" and e["client"] for e in seen)
    assert not any("other" in e["action"] for e in seen)  # another project's reads: not for this auditor
    everything = api.ok("POST", "/api/v1/audit_events/query", json=reads)["audit_events"]
    assert ("api:root", "GET /api/v1/sources/other%2Fbox", 200) in [
        (e["actor_user_id"], e["action"], e["status"]) for e in everything
    ]
    # Changes and accesses come as one timeline, paged without losing or repeating an entry.
    whole = api.ok("POST", "/api/v1/audit_events/query", json={"limit": 1024})["audit_events"]
    assert {e["event_type"] for e in whole} >= {"DataAccessed", "SourceCreated"}
    paged, continuation = [], None
    while True:
        body = {"limit": 3, **({"continuation": continuation} if continuation else {})}
        page = api.ok("POST", "/api/v1/audit_events/query", json=body)
        paged += page["audit_events"]
        continuation = page["continuation"]
        if continuation is None:
            break
    ids = [e["event_id"] for e in paged]
    assert len(ids) == len(set(ids)) and set(ids) >= {e["event_id"] for e in whole}
    assert [e["timestamp"] for e in paged] == sorted(e["timestamp"] for e in paged)
    api.fails(400, "POST", "/api/v1/audit_events/query", json={"continuation": "x.y"})


def test_projects_are_listed_where_the_caller_holds_a_permission(api: Api) -> None:
    api.ok("PUT", "/api/_private/projects/other", json={"project": {"title": "Other"}})
    assert [p["name"] for p in api.ok("GET", "/api/_private/projects")["projects"]] == ["acme", "other"]
    member = api.user("voc-readonly")
    assert [p["name"] for p in api.ok("GET", "/api/_private/projects", member)["projects"]] == ["acme"]
    api.fails(403, "GET", "/api/_private/projects/other", member)
    api.fails(403, "PUT", "/api/_private/projects/third", member, json={"project": {}})
    api.fails(409, "PUT", "/api/_private/projects/other", json={"project": {}})


def test_a_nul_character_anywhere_in_a_request_is_a_400_not_a_server_error(api: Api) -> None:
    api.setup_source_and_dataset()
    message = api.fails(400, "POST", "/api/v1/audit_events/query", json={"filter": {"actors": ["\u0000"]}})
    assert "NUL" in message
    assert "NUL" in api.fails(400, "GET", "/api/v1/sources/acme/in%00box")
    assert "NUL" in api.fails(400, "GET", "/api/v1/sources?x=%00")
    api.ok("POST", "/api/v1/audit_events/query", json={"filter": {"actors": ["api:root"]}})  # the body still arrives

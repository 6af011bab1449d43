"""The permission matrix: each permission opens exactly its endpoints, and nothing else.

For every permission (and for none) a fresh store gets a user holding only that permission in
``acme``; every endpoint is then called, and it must answer 403 exactly when the endpoint needs
another permission. Listing routes do not refuse, they filter: checked by what they show.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from api_helpers import PROJECT, Api, comment

from commine.domain.access import PERMISSIONS
from commine.persistence.store import EventStore

#: Placeholders: {sid} the source id, {uid} a comment uid of the dataset.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
    ("GET", "/api/v1/sources/acme", None, "sources-read"),
    ("GET", "/api/v1/sources/acme/inbox", None, "sources-read"),
    ("GET", "/api/v1/sources/acme%2Finbox", None, "sources-read"),
    ("GET", "/api/v1/sources/id:{sid}", None, "sources-read"),
    ("GET", "/api/v1/sources/acme/inbox/comments/c1", None, "sources-read"),
    ("GET", "/api/_private/sources/acme/inbox/comments", None, "sources-read"),
    ("PUT", "/api/v1/sources/acme/fresh", {"source": {}}, "sources-admin"),
    ("POST", "/api/v1/sources/acme/inbox", {"source": {"title": "Inbox"}}, "sources-admin"),
    ("POST", "/api/v1/sources/acme/inbox/sync", {"comments": [comment("s1")]}, "sources-admin"),
    ("PUT", "/api/_private/sources/acme/inbox/comments", {"comments": [comment("p1")]}, "sources-admin"),
    ("DELETE", "/api/v1/sources/acme/inbox/comments?id=s1", None, "sources-admin"),
    ("GET", "/api/v1/datasets/acme", None, "voc-readonly"),
    ("GET", "/api/v1/datasets/acme/support", None, "voc-readonly"),
    ("GET", "/api/v1/datasets/id:{did}", None, "voc-readonly"),
    ("POST", "/api/v1/datasets/acme/support/export", {"limit": 1}, "voc-readonly"),
    ("GET", "/api/_private/datasets/acme/support/labellings", None, "voc-readonly"),
    ("POST", "/api/_private/datasets/acme/support/labellers", {}, "voc-readonly"),
    ("GET", "/api/v1/datasets/acme/support/labellers/latest/validation", None, "voc-readonly"),
    ("GET", "/api/_private/datasets/acme/support/labellers/latest/validation", None, "voc-readonly"),
    ("POST", "/api/v1/datasets/acme/support/labellers/1/predict", {"documents": []}, "voc-readonly"),
    ("POST", "/api/_private/datasets/acme/support/labellers/1/label-validation", {"label": "Billing"}, "voc-readonly"),
    ("POST", "/api/v1/datasets/acme/support/labellers/1/predict-comments", {"uids": ["{uid}"]}, "voc-readonly"),
    ("POST", "/api/_private/datasets/acme/support/labellings/{uid}", {"labelling": []}, "voc"),
    ("PUT", "/api/v1/datasets/acme/fresh", {"dataset": {}}, "datasets-admin"),
    ("DELETE", "/api/v1/datasets/acme/fresh", None, "datasets-admin"),
    ("POST", "/api/v1/datasets/acme/support", {"dataset": {"title": "S"}}, "datasets-admin"),
    ("PUT", "/api/_private/datasets/acme/support/labels/default", {"label_defs": [{"name": "X"}]}, "datasets-admin"),
    ("GET", "/api/v1/datasets/acme/support/streams", None, "triggers-consume"),
    ("GET", "/api/v1/datasets/acme%2Fsupport/streams/s", None, "triggers-consume"),
    ("POST", "/api/v1/datasets/acme/support/streams/s/fetch", {"size": 1}, "triggers-consume"),
    ("POST", "/api/v1/datasets/acme/support/streams/s/advance", {"sequence_id": "1"}, "triggers-consume"),
    (
        "POST",
        "/api/v1/datasets/acme/support/streams/s/reset",
        {"to_comment_created_at": "2024-05-01T00:00:00Z"},
        "triggers-consume",
    ),
    ("GET", "/api/v1/datasets/acme/support/streams/s/exceptions", None, "triggers-consume"),
    ("PUT", "/api/v1/datasets/acme/support/streams/s/exceptions", {"exceptions": [{"uid": "a.b"}]}, "triggers-consume"),
    ("DELETE", "/api/v1/datasets/acme/support/streams/s/exceptions?uid=a.b", None, "triggers-consume"),
    ("PUT", "/api/v1/datasets/acme/support/streams", {"stream": {"name": "s"}}, "triggers-admin"),
    ("POST", "/api/v1/datasets/acme/support/streams/s", {"stream": {}}, "triggers-admin"),
    ("DELETE", "/api/v1/datasets/acme/support/streams/s", None, "triggers-admin"),
    ("POST", "/api/v1/audit_events/query", {}, "audit-read"),
    ("PUT", "/api/_private/projects/another", {"project": {}}, "administrators only"),
    # Last: they delete the dataset and the source the others read.
    ("DELETE", "/api/v1/datasets/id:{did}", None, "datasets-admin"),
    ("DELETE", "/api/v1/sources/id:{sid}", None, "sources-admin"),
]


@pytest.fixture
def api(store: EventStore) -> Iterator[Api]:
    yield Api(store)


def test_every_endpoint_is_in_the_matrix() -> None:
    """Every operation of the OpenAPI description is in the matrix, but the open ones."""
    from commine.api.app import create_app

    assert {p for _, _, _, p in ENDPOINTS} - {"administrators only"} <= set(PERMISSIONS)
    open_operations = {("GET", "/api/auth/user"), ("GET", "/api/v1/sources"), ("GET", "/api/v1/datasets")}
    open_operations |= {("GET", "/api/_private/projects"), ("GET", "/api/_private/projects/{project}")}
    paths = create_app(store=object()).openapi()["paths"]  # type: ignore[arg-type]
    operations = {(method.upper(), path) for path, item in paths.items() for method in item} - open_operations

    def template(method: str, path: str) -> tuple[str, str]:
        path = unquote(path.split("?")[0])
        for candidate_method, candidate in operations:
            pattern = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(candidate))
            if candidate_method == method and re.fullmatch(pattern, path):
                return method, candidate
        raise AssertionError(f"{method} {path} matches no operation")

    covered = {template(m, p.format(sid="0" * 16, did="1" * 16, uid="x.y")) for m, p, _, _ in ENDPOINTS}
    assert covered == operations


@pytest.mark.parametrize("permission", [*PERMISSIONS, None])
def test_each_permission_opens_exactly_its_endpoints(api: Api, permission: str | None) -> None:
    source_id, dataset_id = api.setup_source_and_dataset()
    headers = api.user(*([permission] if permission else []))
    opened = []
    for method, path, body, needed in ENDPOINTS:
        path = path.format(sid=source_id, did=dataset_id, uid=f"{source_id}.c1")
        body = {"uids": [f"{source_id}.c1"]} if body == {"uids": ["{uid}"]} else body
        response = api.call(method, path, headers, json=body)
        assert response.json()["status"] in ("ok", "error"), response.text
        assert response.status_code not in (401, 500), (method, path, response.text)
        if response.status_code != 403:
            opened.append((method, path))
        assert (response.status_code == 403) == (needed != permission), (permission, method, path, response.text)
    if permission in ("sources-read-sensitive", None):
        assert opened == []  # these open no endpoint of their own


@pytest.mark.parametrize("permission", [*PERMISSIONS, None])
def test_listings_show_only_what_the_permission_allows(api: Api, permission: str | None) -> None:
    api.setup_source_and_dataset()
    headers = api.user(*([permission] if permission else []))
    sources = api.ok("GET", "/api/v1/sources", headers)["sources"]
    datasets = api.ok("GET", "/api/v1/datasets", headers)["datasets"]
    projects = api.ok("GET", "/api/_private/projects", headers)["projects"]
    assert bool(sources) is (permission == "sources-read")
    assert bool(datasets) is (permission == "voc-readonly")
    assert [p["name"] for p in projects] == ([PROJECT] if permission else [])
    user = api.ok("GET", "/api/auth/user", headers)["user"]
    assert user["organisation_permissions"] == ({PROJECT: [permission]} if permission else {})


def test_a_permission_in_another_project_opens_nothing_here(api: Api) -> None:
    api.setup_source_and_dataset()
    elsewhere = api.user(*PERMISSIONS, project="other")
    api.fails(403, "GET", "/api/v1/sources/acme/inbox", elsewhere)
    api.fails(403, "POST", "/api/v1/sources/acme/inbox/sync", elsewhere, json={"comments": [comment("x")]})
    assert api.ok("GET", "/api/v1/sources", elsewhere)["sources"] == []

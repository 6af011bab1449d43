"""Shared by the API tests: an app over a fresh store, users with tokens, a project with a source and dataset."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from commine.api.app import create_app
from commine.handlers.access import add_user, grant, issue_token
from commine.handlers.commands import create_project
from commine.persistence.store import EventStore

PROJECT = "acme"


def comment(ident: str, text: str = "Please refund my premium", **extra: Any) -> dict[str, Any]:
    return {
        "id": ident,
        "timestamp": "2024-05-01T09:30:00Z",
        "messages": [{"body": {"text": text}, "from": "alice@example.com"}],
        **extra,
    }


class Api:
    """A TestClient with an administrator, and a way to make users holding given permissions."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.client = TestClient(create_app(store=store), raise_server_exceptions=False)
        add_user(store, "root", admin=True, actor="test")
        self.admin = self.headers(issue_token(store, "root", actor="test").token)
        create_project(store, PROJECT, actor="test")
        self._users = 0

    @staticmethod
    def headers(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def user(self, *permissions: str, project: str = PROJECT) -> dict[str, str]:
        """Headers of a new user holding exactly ``permissions`` in ``project``."""
        self._users += 1
        name = f"user{self._users}"
        add_user(self.store, name, actor="test")
        if permissions:
            grant(self.store, name, project, list(permissions), actor="test")
        return self.headers(issue_token(self.store, name, actor="test").token)

    def call(self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return self.client.request(method, path, headers=self.admin if headers is None else headers, **kwargs)

    def ok(self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
        response = self.call(method, path, headers, **kwargs)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ok"
        return body

    def fails(self, status: int, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> str:
        """The message of an error answer, checked to be the envelope with ``status``."""
        response = self.call(method, path, headers, **kwargs)
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"status", "message"} and body["status"] == "error", body
        assert body["message"]
        return body["message"]

    def setup_source_and_dataset(self) -> tuple[str, str]:
        """``acme/inbox`` with two comments and ``acme/support`` over it; returns (source id, dataset id)."""
        source_id = self.ok("PUT", "/api/v1/sources/acme/inbox", json={"source": {}})["source"]["id"]
        self.ok("POST", "/api/v1/sources/acme/inbox/sync", json={"comments": [comment("c1"), comment("c2", "hello")]})
        dataset = self.ok(
            "PUT",
            "/api/v1/datasets/acme/support",
            json={"dataset": {"source_ids": [source_id], "label_defs": [{"name": "Billing > Refund"}]}},
        )["dataset"]
        return source_id, dataset["id"]

"""Record every API call of an authenticated user in the access log, with its answer's status.

The route's dependency (``deps.principal``) leaves the caller in the request state; this middleware sees
the status the app sends and appends one access record after the answer is complete. A call without a
valid token is not recorded: it reached no data, and who made it is unknown.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from commine.handlers.audit import record_api_call
from commine.persistence.store import EventStore

#: Where ``deps.principal`` leaves the caller in the ASGI scope's state.
PRINCIPAL = "commine_principal"


class RecordAccess:
    """ASGI middleware: pass the call through, note its status, then record who called what from where."""

    def __init__(self, app: Any, store: EventStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        status = 500

        async def noting(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            user = state.get(PRINCIPAL)
            if user is not None:  # off the event loop: the insert blocks, like the sync routes do
                where, method, path = _client(scope), scope["method"], _path(scope)
                actor = f"api:{user.username}"
                await run_in_threadpool(record_api_call, self.store, actor, where, method, path, status)


def _client(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown"


def _path(scope: dict[str, Any]) -> str:
    raw = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string") or b""
    return (raw + (b"?" + query if query else b"")).decode("latin-1")

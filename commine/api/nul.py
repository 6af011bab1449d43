"""Refuse the NUL character in a request before it reaches the store.

PostgreSQL text cannot hold U+0000, so a NUL anywhere in a request would end as a database error
(a 500) wherever the value is written or compared. It is never meaningful in this API's data, so
the request is answered 400 at the door: in the path or query (``%00``) or in a JSON body (``\\u0000``).
"""

from __future__ import annotations

from typing import Any

from commine.api.errors import error

MESSAGE = "text must not contain the NUL character (U+0000)"


class RefuseNul:
    """ASGI middleware: reads the body once, checks it, and hands the same bytes on."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        target = scope.get("raw_path", b"") + b"?" + scope.get("query_string", b"")
        body = await _read_body(receive)
        if b"%00" in target.lower() or b"\x00" in target or b"\\u0000" in body or b"\x00" in body:
            await error(400, MESSAGE)(scope, receive, send)
            return
        delivered = False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)

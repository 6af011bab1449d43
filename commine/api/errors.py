"""Every error as the reference's envelope, ``{"status": "error", "message": ...}``, with the right 4xx.

The ``re`` client parses every body by its ``status`` tag, so a framework default (``{"detail":
...}``) would reach it as an unreadable answer. FastAPI's request validation (422 by default)
answers 400 here, as the reference does for a malformed request.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from commine.domain.errors import AlreadyExists, DomainError, NotFound
from commine.persistence.store import ConcurrencyError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error to answer with ``status_code`` and ``message``."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class ErrorResponse(BaseModel):
    """What every error answer holds."""

    status: str = "error"
    message: str


#: Declared on every route, so the OpenAPI description says what errors look like.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": what}
    for code, what in {
        400: "Bad request: malformed JSON, a field out of its limits, a rule broken",
        401: "No token, or an unknown or revoked one",
        403: "The token's user lacks the permission in this project",
        404: "No such resource or route",
        405: "Method not allowed on this route",
        409: "Exists already, or lost a race with another writer (retry)",
        410: "The content was purged (crypto-shredded) and can no longer be read",
    }.items()
}


def error(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message}, status_code=status_code)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    if any(item.get("type") == "json_invalid" for item in exc.errors()):
        return "the request body is not valid JSON"
    for item in exc.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the envelope."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status_code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.status_code)
        if exc.status_code == 404 and message == "Not Found":
            message = "404 Not Found"
        return error(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, _validation_message(exc))

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(AlreadyExists)
    async def exists(_: Request, exc: AlreadyExists) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(ConcurrencyError)
    async def conflict(_: Request, exc: ConcurrencyError) -> JSONResponse:
        # The reference's clients retry a 409.
        return error(409, f"conflicting write, try again: {exc}")

    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in the API")
        return error(500, "internal server error")

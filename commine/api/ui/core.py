"""What every page shares: the signed-in user (from the session cookie), page errors, rendering.

The UI signs in with an API token kept in an HttpOnly, SameSite=Strict cookie; every page and every
UI action authenticates it with the same ``authenticate`` the API uses and checks permissions with the
same ``allowed`` rule. A page the user may not see answers a 403 page; a UI action (JSON) answers the
API's error envelope. UI actions also require the ``X-Commine-UI`` header, which a cross-site form
cannot send, so a cookie alone never changes anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from commine.api.access import PRINCIPAL
from commine.api.deps import Services, services
from commine.api.errors import ApiError
from commine.api.ui.data import Pending, PreparationFailed
from commine.domain.access import PERMISSIONS, Principal, allowed

COOKIE = "commine_session"
UI_HEADER = "x-commine-ui"
HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


class PageError(Exception):
    """A page that cannot be shown: rendered as an HTML error page with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SignIn(Exception):
    """No live session: redirect to the sign-in page."""


def _session_user(request: Request, found: Services) -> Principal | None:
    token = request.cookies.get(COOKIE)
    # ``found.authenticate`` brings the read models up to date too (``services`` reads nothing).
    user = found.authenticate(token) if token else None
    if user is not None:
        request.scope.setdefault("state", {})[PRINCIPAL] = user  # the access log records the page view
    return user


def page_user(request: Request, found: Annotated[Services, Depends(services)]) -> Principal:
    """The signed-in user of a page; redirects to the sign-in page without a live session."""
    user = _session_user(request, found)
    if user is None:
        raise SignIn()
    return user


def action_user(request: Request, found: Annotated[Services, Depends(services)]) -> Principal:
    """The signed-in user of a UI action (JSON); 401 without a session, 403 without the UI header."""
    user = _session_user(request, found)
    if user is None:
        raise ApiError(401, "sign in first")
    if request.method != "GET" and request.headers.get(UI_HEADER) != "1":
        raise ApiError(403, f"UI actions need the {UI_HEADER} header")
    return user


PageUser = Annotated[Principal, Depends(page_user)]
ActionUser = Annotated[Principal, Depends(action_user)]


def need(user: Principal, project: str, permission: str, what: str) -> None:
    """403 page unless ``user`` holds ``permission`` in ``project``."""
    if not allowed(user, project, permission):
        raise PageError(403, f"You ({user.username}) lack the permission {permission!r} in {project!r}: {what}.")


def can(user: Principal, project: str) -> dict[str, bool]:
    """What the user may do in ``project``, by permission name, for templates to hide controls."""
    return {name: allowed(user, project, name) for name in PERMISSIONS}


def render(request: Request, template: str, user: Principal | None, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, {"user": user, **context}, status_code=status)


def install(app: Any) -> None:
    """Page errors as HTML, a missing session as a redirect to the sign-in page."""

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> HTMLResponse:
        return render(request, "error.html", None, status=exc.status, message=exc.message, code=exc.status)

    @app.exception_handler(Pending)
    async def pending(request: Request, exc: Pending) -> HTMLResponse:
        # 202: the request is accepted and its answer is on the way; the page reloads itself.
        seconds = round(exc.elapsed_s)
        return render(request, "preparing.html", None, status=202, what=exc.what, seconds=seconds, refresh=2)

    @app.exception_handler(PreparationFailed)
    async def failed(request: Request, exc: PreparationFailed) -> HTMLResponse:
        message = f"commine was {exc.what}, and that failed: {exc.error}. A visit in a minute tries again."
        return render(request, "error.html", None, status=503, message=message, code=503)

    @app.exception_handler(SignIn)
    async def sign_in(request: Request, _: SignIn) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

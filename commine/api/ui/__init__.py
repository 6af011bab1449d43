"""The trainer's web workspace: server-rendered pages over the API's services and permission checks."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from commine.api.ui import actions, core, model_pages, pages


def install(app: FastAPI) -> None:
    """Add the pages, the UI's JSON actions, the static script and style, and the page error handlers."""
    core.install(app)
    app.mount("/static", StaticFiles(directory=str(core.HERE / "static")), name="static")
    for router in (pages.router, model_pages.router, actions.router):
        app.include_router(router)

"""The app factory: routers per resource, the error envelope, the services the routes share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from commine.api import errors, ui
from commine.api.access import RecordAccess
from commine.api.deps import Services
from commine.api.nul import RefuseNul
from commine.api.routes import audit, auth, comments, datasets, labellings, models, sources, streams
from commine.persistence.store import EventStore
from commine.workers.actors import FOLLOW_UP_DELAY, Nudger

ROUTERS = [
    auth.router,
    sources.router,
    comments.router,
    datasets.router,
    labellings.router,
    models.router,
    streams.router,
    audit.router,
]


def create_app(
    app: Any = None, *, store: EventStore | None = None, after_write: Callable[[], None] | None = None
) -> FastAPI:
    """The ASGI app over a bootstrapped ``App`` (its store, and its actors nudged after writes), or a bare store."""
    if app is not None:
        store = app.store
        after_write = after_write or _nudger(app)
    if store is None:
        raise ValueError("create_app needs an App or a store")
    api = FastAPI(
        title="commine",
        summary="A Communications Mining-compatible API over commine's event store",
        version="1",
        responses=errors.ERROR_RESPONSES,
    )
    api.state.services = Services(store, after_write or (lambda: None))
    errors.install(api)
    api.add_middleware(RecordAccess, store=store)
    api.add_middleware(RefuseNul)
    for router in ROUTERS:
        api.include_router(router)
    ui.install(api)  # the trainer's web workspace at /, over the same services and permission checks
    return api


def _nudger(app: Any) -> Callable[[], None]:
    """After a write, the project actor predicts new messages and asks for retraining; the relay publishes.

    As the workers nudge them after an ingestion: delayed, at most one pending per process, so one
    run serves every write of the moment. Eight robots advancing made sixteen publishes to the
    broker a round, one wait for the broker each, and as many runs of the relay.
    """
    delay = 0 if app.settings.embedded else FOLLOW_UP_DELAY
    nudgers = [Nudger(actor, delay) for actor in (app.actors.project, app.actors.relay) if actor is not None]

    def nudge() -> None:
        for nudger in nudgers:
            nudger.nudge()

    return nudge

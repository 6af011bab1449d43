"""What every route depends on: the services, the caller (from the bearer token), permission checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from commine.api.access import PRINCIPAL
from commine.api.errors import ApiError
from commine.domain.access import Principal, allowed
from commine.handlers.access import authenticate, principal_of, principal_query
from commine.persistence import projections
from commine.persistence import schema as t
from commine.persistence.engine import autocommit
from commine.persistence.store import EventStore


@dataclass
class Services:
    """The store, and what to tell the workers after a write (predict new messages, relay events)."""

    store: EventStore
    after_write: Callable[[], None] = field(default=lambda: None)

    def written(self) -> None:
        """After a write: bring the read models up to date (the caller reads its own writes), nudge the workers."""
        projections.catch_up(self.store)
        self.after_write()

    def nudge(self) -> None:
        """After a write a command has already caught the read models up after (``streams.advance``)."""
        self.after_write()

    def fresh(self) -> None:
        """Catch the read models up if the log moved on (a CLI command, a worker's write).

        Cheap when nothing is new; never waits for another runner already at it.
        """
        with autocommit(self.store.engine) as conn:
            behind = bool(conn.execute(sa.select(_behind())).scalar())
        if behind:
            projections.catch_up(self.store, wait=False)

    def authenticate(self, token: str) -> Principal | None:
        """The caller of ``token`` (None for an unknown or revoked one), read after ``fresh``.

        Both in one round trip when the token is known and nothing is new, as on almost every
        request: whether the read models are behind the log is a column of the token's query.
        When they are, they catch up and the token is read again, as a grant or a token the log
        holds but the read models do not yet may be the very one this request needs.
        """
        with autocommit(self.store.engine) as conn:
            rows = conn.execute(principal_query(token).add_columns(_behind().label("behind"))).all()
        if rows and not rows[0].behind:
            return principal_of(rows)
        if rows:  # known to be behind already: asking ``fresh`` would only ask again
            projections.catch_up(self.store, wait=False)
        else:  # an unknown token may be one the read models do not hold yet
            self.fresh()
        return authenticate(self.store.engine, token)


def _behind() -> sa.ColumnElement[bool]:
    """Whether the log holds events the read models have not caught up with (two index look-ups)."""
    checkpoint = (
        sa.select(t.checkpoints.c.position).where(t.checkpoints.c.name == projections.CHECKPOINT).scalar_subquery()
    )
    last = sa.select(sa.func.max(t.events.c.position)).scalar_subquery()
    return sa.func.coalesce(checkpoint, 0) < sa.func.coalesce(last, 0)


async def services(request: Request) -> Services:
    """The app's services. No read here: the dependency that finds the caller (``principal``, the
    web UI's ``page_user``) brings the read models up to date as it authenticates, in the same
    round trip, and an ``async`` dependency takes no turn on the thread pool."""
    found: Services = request.app.state.services
    return found


_bearer = HTTPBearer(auto_error=False, description="An API token from `commine tokens issue USER`.")


def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    found: Annotated[Services, Depends(services)],
) -> Principal:
    """The user of the request's ``Authorization: Bearer`` token; 401 without a live one."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise ApiError(401, "authentication required: send the header Authorization: Bearer <token>")
    user = found.authenticate(credentials.credentials)
    if user is None:
        raise ApiError(401, "the API token is unknown or revoked")
    request.scope.setdefault("state", {})[PRINCIPAL] = user  # for the access log (``api.access``)
    return user


def require(user: Principal, project: str | None, permission: str) -> None:
    """403 unless ``user`` holds ``permission`` in ``project``."""
    if not allowed(user, project, permission):
        where = f"project {project!r}" if project is not None else "every project (administrators only)"
        raise ApiError(403, f"user {user.username!r} lacks the permission {permission!r} in {where}")


def actor(user: Principal) -> str:
    """How an API call signs its events in the log."""
    return f"api:{user.username}"


Store = Annotated[Services, Depends(services)]
Caller = Annotated[Principal, Depends(principal)]
#: ``?reason=`` of a delete: why, kept in the deletion event for the audit trail.
Reason = Annotated[str | None, Query(max_length=1000, description="Why, for the audit trail")]
API_REASON = "deleted through the API"

"""Access control commands and the token look-up behind the HTTP API.

Commands load the ``User`` aggregate, decide and append like every other command
(``handlers.commands.run``), then bring the read models up to date at once: the API checks tokens
and permissions against the read models, so a revoked token must be gone from them when
``commine tokens revoke`` returns, not when a worker gets round to it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from commine.domain.access import TOKEN_ID, Principal, User, check_username, user_aggregate_id
from commine.domain.errors import NotFound
from commine.handlers.commands import new_id, run
from commine.persistence import projections
from commine.persistence import schema as t
from commine.persistence.engine import autocommit
from commine.persistence.store import EventStore

#: Bytes of randomness in a token: 256 bits, so a plain SHA-256 of it is a safe thing to store.
TOKEN_BYTES = 32


@dataclass(frozen=True)
class IssuedToken:
    token_id: str
    #: The secret, shown once; the log keeps only its hash.
    token: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(store: EventStore, username: str, *, email: str = "", admin: bool = False, actor: str) -> User:
    check_username(username)
    user_id = new_id()
    user = run(
        store,
        User,
        user_aggregate_id(username),
        lambda u: u.add(user_id=user_id, email=email, admin=admin, actor=actor),
    )
    projections.catch_up(store)
    return user


def issue_token(store: EventStore, username: str, *, description: str = "", actor: str) -> IssuedToken:
    """A new random token for the user; the log records its id and hash only."""
    check_username(username)
    issued = IssuedToken(new_id(), secrets.token_urlsafe(TOKEN_BYTES))
    run(
        store,
        User,
        user_aggregate_id(username),
        lambda u: u.issue_token(
            token_id=issued.token_id, token_hash=hash_token(issued.token), description=description, actor=actor
        ),
    )
    projections.catch_up(store)
    return issued


def revoke_tokens(store: EventStore, token_id_or_user: str, *, actor: str) -> list[str]:
    """Revoke one token by its id, or every live token of a user by username; returns the ids revoked."""
    projections.catch_up(store)
    owner = None
    if TOKEN_ID.fullmatch(token_id_or_user):
        with store.engine.connect() as conn:
            owner = conn.execute(
                sa.select(t.api_tokens.c.username).where(t.api_tokens.c.token_id == token_id_or_user)
            ).scalar()
    revoked: list[str] = []
    if owner is not None:
        run(store, User, user_aggregate_id(owner), lambda u: u.revoke_token(token_id_or_user, actor=actor))
        revoked = [token_id_or_user]
    else:
        check_username(token_id_or_user)

        def revoke_all(user: User) -> None:
            revoked[:] = user.revoke_all_tokens(actor=actor)

        run(store, User, user_aggregate_id(token_id_or_user), revoke_all)
    projections.catch_up(store)
    return revoked


def grant(store: EventStore, username: str, project: str, permissions: list[str], *, actor: str) -> list[str]:
    """Grant permissions in a project; returns those that were not held yet."""
    return _change(store, username, lambda u: u.grant(project, permissions, actor=actor))


def revoke(store: EventStore, username: str, project: str, permissions: list[str], *, actor: str) -> list[str]:
    """Take permissions away in a project; returns those that were held."""
    return _change(store, username, lambda u: u.revoke(project, permissions, actor=actor))


def _change(store: EventStore, username: str, command: object) -> list[str]:
    check_username(username)
    out: list[str] = []

    def decide(user: User) -> None:
        out[:] = command(user)  # type: ignore[operator]

    run(store, User, user_aggregate_id(username), decide)
    projections.catch_up(store)
    return out


def authenticate(engine: Engine, token: str) -> Principal | None:
    """The user a live token belongs to, with their permissions; None for an unknown or revoked token."""
    with autocommit(engine) as conn:
        return principal_of(conn.execute(principal_query(token)).all())


def principal_query(token: str) -> sa.Select[Any]:
    """The user of the live token, one row per grant (one query: every API request makes it)."""
    u, k, p = t.users, t.api_tokens, t.permissions
    return (
        sa.select(u.c.username, u.c.user_id, u.c.admin, p.c.project, p.c.permission)
        .join(k, k.c.username == u.c.username)
        .outerjoin(p, p.c.username == u.c.username)
        .where(k.c.token_hash == hash_token(token), k.c.revoked.is_(False))
    )


def principal_of(rows: Sequence[Any]) -> Principal | None:
    """The ``Principal`` of ``principal_query``'s rows; None when there are none."""
    if not rows:
        return None
    granted: dict[str, set[str]] = {}
    for row in rows:
        if row.project is not None:
            granted.setdefault(row.project, set()).add(row.permission)
    first = rows[0]
    return Principal(
        first.username, first.user_id, first.admin, {project: frozenset(names) for project, names in granted.items()}
    )


def user_details(engine: Engine, username: str) -> dict[str, object]:
    """The read-model row of a user: id, email, admin flag and when it was added."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.users).where(t.users.c.username == username)).first()
    if row is None:
        raise NotFound(f"user {username!r} does not exist")
    return dict(row._mapping)

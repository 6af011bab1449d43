"""Access control: users, their API tokens and per-project permissions, and the one rule that checks them.

Permission names are the reference product's own (the organisation permissions of its ``re``
client, ``api/src/resources/user.rs``), so a ``GET /auth/user`` answer reads the same there and
here. The reference has no public name for reading audit logs; commine calls it ``audit-read``.

A global administrator (``commine users add USER --admin``) may do everything, in every project;
everyone else may do in a project exactly what their permissions there name. ``allowed`` is that
rule, and the only place it is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from commine.domain.aggregate import Aggregate
from commine.domain.errors import AlreadyExists, DomainError, NotFound
from commine.domain.names import check_project_name
from commine.events import PermissionsGranted, PermissionsRevoked, TokenIssued, TokenRevoked, UserAdded

#: See the sources of a project and read their comments.
SOURCES_READ = "sources-read"
#: See the user properties a source marks sensitive (with ``sources-read``).
SOURCES_READ_SENSITIVE = "sources-read-sensitive"
#: Create, update and delete sources; upload and delete comments.
SOURCES_ADMIN = "sources-admin"
#: See datasets, their labels, annotations, model versions, predictions and validation.
LABELS_READ = "voc-readonly"
#: Annotate comments ("review and annotate").
LABELS_WRITE = "voc"
#: Create, update and delete datasets and their label definitions.
DATASETS_ADMIN = "datasets-admin"
#: Fetch from streams, advance and reset them, tag exceptions.
STREAMS_CONSUME = "triggers-consume"
#: Create, update and delete streams.
STREAMS_ADMIN = "triggers-admin"
#: Query the audit events of the project.
AUDIT_READ = "audit-read"

#: Every permission, with what the reference product's UI calls it.
PERMISSIONS: dict[str, str] = {
    SOURCES_READ: "view sources",
    SOURCES_READ_SENSITIVE: "view sensitive data",
    SOURCES_ADMIN: "sources admin",
    LABELS_READ: "view labels",
    LABELS_WRITE: "review and annotate",
    DATASETS_ADMIN: "datasets admin",
    STREAMS_CONSUME: "consume streams",
    STREAMS_ADMIN: "streams admin",
    AUDIT_READ: "read audit logs",
}

#: What a global administrator holds in ``GET /auth/user``'s ``global_permissions``.
ROOT = "root"

#: Usernames as the reference's client accepts them.
USERNAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")
TOKEN_ID = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class Principal:
    """Who is asking, as a permission check needs it: a user, whether an admin, and per-project permissions."""

    username: str
    user_id: str = ""
    admin: bool = False
    permissions: dict[str, frozenset[str]] = field(default_factory=dict)


def allowed(principal: Principal, project: str | None, permission: str) -> bool:
    """May ``principal`` use ``permission`` in ``project``? ``project=None`` asks about every project.

    A global administrator may do everything; anyone else needs the permission granted in that
    project. A question about no particular project (a global resource such as the whole audit
    log) is answered yes for administrators only.
    """
    if principal.admin:
        return True
    if project is None:
        return False
    return permission in principal.permissions.get(project, frozenset())


def check_permissions(names: list[str]) -> list[str]:
    """The names, each checked to be a known permission, each once."""
    unknown = [name for name in names if name not in PERMISSIONS]
    if unknown:
        raise DomainError(f"unknown permission {unknown[0]!r}; known: {', '.join(PERMISSIONS)}")
    if not names:
        raise DomainError("name at least one permission")
    return list(dict.fromkeys(names))


def check_username(username: str) -> str:
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        raise DomainError(f"invalid username {username!r}: use 1-64 of A-Z a-z 0-9 _ -")
    return username


def user_aggregate_id(username: str) -> str:
    return f"user:{username}"


class User(Aggregate):
    """A person or robot that calls the API: its tokens (by id, hashed) and its permissions per project."""

    prefix = "user:"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.username = aggregate_id.removeprefix(self.prefix)
        self.user_id = ""
        self.admin = False
        self.email = ""
        #: Live tokens: id to hash.
        self.tokens: dict[str, str] = {}
        self.permissions: dict[str, set[str]] = {}

    def add(self, *, user_id: str, email: str = "", admin: bool = False, actor: str) -> None:
        check_username(self.username)
        if self.exists:
            raise AlreadyExists(f"user {self.username!r} exists already")
        self.record(UserAdded, actor, user_id=user_id, username=self.username, email=email, admin=admin)

    def issue_token(self, *, token_id: str, token_hash: str, description: str = "", actor: str) -> None:
        self._require()
        if not TOKEN_ID.fullmatch(token_id) or len(token_hash) != 64:
            raise DomainError("a token needs a 16-hex-digit id and the SHA-256 of its secret")
        self.record(
            TokenIssued,
            actor,
            username=self.username,
            token_id=token_id,
            token_hash=token_hash,
            description=description,
        )

    def revoke_token(self, token_id: str, *, actor: str) -> None:
        self._require()
        if token_id not in self.tokens:
            raise NotFound(f"user {self.username!r} has no live token {token_id!r}")
        self.record(TokenRevoked, actor, username=self.username, token_id=token_id)

    def revoke_all_tokens(self, *, actor: str) -> list[str]:
        """Revoke every live token; returns their ids."""
        self._require()
        ids = sorted(self.tokens)
        for token_id in ids:
            self.record(TokenRevoked, actor, username=self.username, token_id=token_id)
        return ids

    def grant(self, project: str, permissions: list[str], *, actor: str) -> list[str]:
        """Grant permissions in a project; returns those that are new (nothing recorded when none is)."""
        self._require()
        check_project_name(project)
        new = [p for p in check_permissions(permissions) if p not in self.permissions.get(project, set())]
        if new:
            self.record(PermissionsGranted, actor, username=self.username, project=project, permissions=new)
        return new

    def revoke(self, project: str, permissions: list[str], *, actor: str) -> list[str]:
        """Take permissions away in a project; returns those the user had."""
        self._require()
        check_project_name(project)
        held = [p for p in check_permissions(permissions) if p in self.permissions.get(project, set())]
        if held:
            self.record(PermissionsRevoked, actor, username=self.username, project=project, permissions=held)
        return held

    def principal(self) -> Principal:
        return Principal(
            self.username,
            self.user_id,
            self.admin,
            {project: frozenset(names) for project, names in self.permissions.items() if names},
        )

    def _require(self) -> None:
        if not self.exists:
            raise NotFound(f"user {self.username!r} does not exist; add it with `commine users add`")

    def _on_UserAdded(self, event: UserAdded) -> None:
        self.user_id = event.user_id
        self.admin = event.admin
        self.email = event.email

    def _on_TokenIssued(self, event: TokenIssued) -> None:
        self.tokens[event.token_id] = event.token_hash

    def _on_TokenRevoked(self, event: TokenRevoked) -> None:
        self.tokens.pop(event.token_id, None)

    def _on_PermissionsGranted(self, event: PermissionsGranted) -> None:
        self.permissions.setdefault(event.project, set()).update(event.permissions)

    def _on_PermissionsRevoked(self, event: PermissionsRevoked) -> None:
        self.permissions.setdefault(event.project, set()).difference_update(event.permissions)

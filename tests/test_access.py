"""Access control: the permission rule, the User aggregate, tokens and permissions through the store and the CLI."""

from __future__ import annotations

import itertools

import pytest
from click.testing import CliRunner

from commine.domain.access import (
    PERMISSIONS,
    Principal,
    User,
    allowed,
    user_aggregate_id,
)
from commine.domain.errors import AlreadyExists, DomainError, NotFound
from commine.handlers.access import add_user, authenticate, grant, hash_token, issue_token, revoke, revoke_tokens
from commine.persistence import schema as t
from commine.persistence.store import EventStore
from commine.scripts.cli import cli
from commine.settings import Settings

# --- the rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("held", "asked"), list(itertools.product(PERMISSIONS, PERMISSIONS)))
def test_a_permission_allows_itself_only_and_only_in_its_project(held: str, asked: str) -> None:
    user = Principal("bob", permissions={"acme": frozenset([held])})
    assert allowed(user, "acme", asked) is (held == asked)
    assert not allowed(user, "other", asked)
    assert not allowed(user, None, asked)


def test_an_admin_is_allowed_everything_everywhere() -> None:
    admin = Principal("root", admin=True)
    assert all(allowed(admin, project, p) for project in ("acme", "x", None) for p in PERMISSIONS)


def test_nobody_without_permissions_is_allowed_anything() -> None:
    assert not any(allowed(Principal("eve"), "acme", p) for p in PERMISSIONS)


# --- the aggregate -------------------------------------------------------------------------------


def _user(name: str = "bob") -> User:
    user = User(user_aggregate_id(name))
    user.add(user_id="0123456789abcdef", actor="test")
    return user


def test_user_names_and_duplicates_are_checked() -> None:
    with pytest.raises(DomainError, match="invalid username"):
        User(user_aggregate_id("bob smith")).add(user_id="0123456789abcdef", actor="test")
    user = _user()
    with pytest.raises(AlreadyExists):
        user.add(user_id="0123456789abcdef", actor="test")


def test_grant_and_revoke_record_only_changes() -> None:
    user = _user()
    assert user.grant("acme", ["sources-read", "voc"], actor="t") == ["sources-read", "voc"]
    assert user.grant("acme", ["voc"], actor="t") == []
    assert user.revoke("acme", ["voc", "datasets-admin"], actor="t") == ["voc"]
    assert user.principal().permissions == {"acme": frozenset({"sources-read"})}
    with pytest.raises(DomainError, match="unknown permission"):
        user.grant("acme", ["sources-write"], actor="t")
    replayed = User.replay(user.id, user.collect())
    assert replayed.principal() == user.principal()


def test_tokens_are_kept_by_id_and_hash_and_revoked() -> None:
    user = _user()
    user.issue_token(token_id="aaaaaaaaaaaaaaaa", token_hash="0" * 64, actor="t")
    user.issue_token(token_id="bbbbbbbbbbbbbbbb", token_hash="1" * 64, actor="t")
    user.revoke_token("aaaaaaaaaaaaaaaa", actor="t")
    with pytest.raises(NotFound):
        user.revoke_token("aaaaaaaaaaaaaaaa", actor="t")
    assert user.revoke_all_tokens(actor="t") == ["bbbbbbbbbbbbbbbb"]
    assert user.tokens == {}


def test_commands_on_a_missing_user_say_so() -> None:
    with pytest.raises(NotFound, match="commine users add"):
        User(user_aggregate_id("ghost")).grant("acme", ["voc"], actor="t")


# --- through the store ---------------------------------------------------------------------------


def test_a_token_authenticates_until_revoked(store: EventStore) -> None:
    add_user(store, "bob", actor="test")
    issued = issue_token(store, "bob", actor="test")
    grant(store, "bob", "acme", ["sources-read", "voc"], actor="test")
    principal = authenticate(store.engine, issued.token)
    assert principal is not None and principal.username == "bob" and not principal.admin
    assert principal.permissions == {"acme": frozenset({"sources-read", "voc"})}
    revoke(store, "bob", "acme", ["voc"], actor="test")
    assert authenticate(store.engine, issued.token).permissions == {"acme": frozenset({"sources-read"})}  # type: ignore[union-attr]
    assert authenticate(store.engine, issued.token + "x") is None
    assert revoke_tokens(store, issued.token_id, actor="test") == [issued.token_id]
    assert authenticate(store.engine, issued.token) is None


def test_only_the_hash_of_a_token_is_stored(store: EventStore) -> None:
    add_user(store, "bob", actor="test")
    issued = issue_token(store, "bob", actor="test")
    with store.engine.connect() as conn:
        log = " ".join(str(row.payload) for row in conn.execute(t.events.select()))
        hashes = [row.token_hash for row in conn.execute(t.api_tokens.select())]
    assert issued.token not in log
    assert hashes == [hash_token(issued.token)]


def test_revoking_a_user_revokes_every_token(store: EventStore) -> None:
    add_user(store, "bob", actor="test")
    first, second = issue_token(store, "bob", actor="test"), issue_token(store, "bob", actor="test")
    assert sorted(revoke_tokens(store, "bob", actor="test")) == sorted([first.token_id, second.token_id])
    assert authenticate(store.engine, first.token) is None and authenticate(store.engine, second.token) is None


# --- the CLI -------------------------------------------------------------------------------------


def test_admin_commands(embedded_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMINE_HOME", str(embedded_settings.home))
    monkeypatch.setenv("COMMINE_TRANSFORMER", "0")
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["--embedded", *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    assert "added administrator root" in run("users", "add", "root", "--admin")
    run("users", "add", "bob", "--email", "bob@example.com")
    token = run("tokens", "issue", "bob").strip()
    run("permissions", "grant", "bob", "acme", "sources-read", "voc-readonly")
    assert "nothing new" in run("permissions", "grant", "bob", "acme", "sources-read")
    assert "voc-readonly" in run("permissions", "revoke", "bob", "acme", "voc-readonly")
    bad = runner.invoke(cli, ["--embedded", "permissions", "grant", "bob", "acme", "sources-write"])
    assert bad.exit_code != 0 and "unknown permission" in bad.output
    from commine.bootstrap import open_store

    store = open_store(embedded_settings)
    try:
        principal = authenticate(store.engine, token)
        assert principal is not None and principal.permissions == {"acme": frozenset({"sources-read"})}
        assert "revoked 1 token(s)" in run("tokens", "revoke", "bob")
        assert authenticate(store.engine, token) is None
    finally:
        store.engine.dispose()

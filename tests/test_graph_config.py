"""The Graph integration's configuration store, on SQLite and PostgreSQL: sealed credentials, failures
that disable a mailbox, folder links."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from commine.integrations import graph_config as config
from commine.integrations.graph_config import Credential, Integration, Mailbox
from commine.persistence import schema as t
from commine.persistence.encryption import AuthenticationFailed, ContentPurged, Keyring, LocalKeyWrapper
from commine.persistence.store import EventStore

SECRET = "client-secret-value"


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(LocalKeyWrapper([os.urandom(32)]))


def make(store: EventStore, keyring: Keyring, name: str = "m365", secret: str = SECRET) -> Integration:
    integration = Integration("", name, "tenant", "client", mailboxes=[Mailbox("a@contoso.com", "p/s")])
    return config.add_integration(store.engine, keyring, integration, Credential(config.SECRET, secret=secret))


def test_the_credential_is_sealed_and_opens_only_for_its_own_integration(store: EventStore, keyring: Keyring) -> None:
    first, second = make(store, keyring), make(store, keyring, "other", "another-secret")
    with store.engine.connect() as conn:
        rows = {r.name: bytes(r.sealed_credential) for r in conn.execute(sa.select(t.integrations))}
    assert SECRET.encode() not in rows["m365"]
    assert config.load_credential(store.engine, keyring, first).secret == SECRET
    assert SECRET not in repr(config.load_credential(store.engine, keyring, first))
    assert SECRET not in str(first.public())
    with store.engine.begin() as conn:  # a sealed credential copied onto another integration
        conn.execute(
            t.integrations.update().where(t.integrations.c.name == "other").values(sealed_credential=rows["m365"])
        )
    with pytest.raises(AuthenticationFailed):
        config.load_credential(store.engine, keyring, second)


def test_removing_destroys_the_key_and_frees_the_name(store: EventStore, keyring: Keyring) -> None:
    gone = make(store, keyring)
    config.remove_integration(store.engine, keyring, "m365")
    with store.engine.connect() as conn, pytest.raises(ContentPurged):
        keyring.current(conn, gone.owner)
    assert config.list_integrations(store.engine) == []
    again = make(store, keyring)
    assert again.owner != gone.owner
    assert config.load_credential(store.engine, keyring, again).secret == SECRET
    with pytest.raises(config.IntegrationError, match="exists already"):
        make(store, keyring)


def test_permanent_failures_in_a_row_disable_the_mailbox_and_transient_ones_never_do(
    store: EventStore, keyring: Keyring
) -> None:
    integration = make(store, keyring)
    ident, box = integration.integration_id, "a@contoso.com"
    for _ in range(config.MAX_FAILURES * 2):
        assert not config.record_failure(store.engine, ident, box, "HTTP 503", permanent=False)
    config.record_success(store.engine, ident, box, published=5)
    results = [
        config.record_failure(store.engine, ident, box, "HTTP 401 revoked", permanent=True)
        for _ in range(config.MAX_FAILURES)
    ]
    assert results == [False] * (config.MAX_FAILURES - 1) + [True]
    mailbox = config.get_integration(store.engine, "m365").mailboxes[0]
    assert (mailbox.enabled, mailbox.disabled_reason, mailbox.published) == (False, "HTTP 401 revoked", 5)
    config.enable_mailbox(store.engine, ident, box)
    mailbox = config.get_integration(store.engine, "m365").mailboxes[0]
    assert (mailbox.enabled, mailbox.failures, mailbox.disabled_reason) == (True, 0, None)


def test_folder_links_are_upserted(store: EventStore, keyring: Keyring) -> None:
    ident = make(store, keyring).integration_id
    state = config.FolderState("f1", "Inbox", next_link="https://graph/next")
    with store.engine.begin() as conn:
        config.save_folder_state(conn, ident, "a@contoso.com", state)
    state.next_link, state.delta_link = None, "https://graph/delta"
    with store.engine.begin() as conn:
        config.save_folder_state(conn, ident, "a@contoso.com", state)
    assert config.folder_states(store.engine, ident, "a@contoso.com") == {
        "f1": config.FolderState("f1", "Inbox", None, "https://graph/delta")
    }

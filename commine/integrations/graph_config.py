"""The configuration and sync state of Microsoft Graph integrations, in the store's database.

An integration is an app registration (tenant id, client id, a client secret or a certificate) and
the servers it talks to (``authority_host`` for tokens, ``graph_base_url`` for Graph; Microsoft's by
default, any compatible server otherwise), plus the mailboxes it follows, each into a source.

The credential is sealed (AES-GCM) with a data key of the integration's own, owner
``integration:<id>``, wrapped by the master key like every data key; its associated data is the
integration's ids, so a sealed credential copied onto another integration fails to open. It is
never logged and never returned by ``list`` or ``status``; removing the integration destroys its key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from commine.persistence import schema as t
from commine.persistence.encryption import Keyring, seal, sealed_version, unseal

MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"
MICROSOFT_GRAPH = "https://graph.microsoft.com/v1.0"
SECRET, CERTIFICATE = "secret", "certificate"
#: Failed sync attempts in a row after which a mailbox is disabled.
MAX_FAILURES = 3


class IntegrationError(ValueError):
    """A configuration that cannot be stored or found."""


@dataclass(frozen=True)
class Credential:
    """What the app signs in with: a client secret, or a PEM certificate with its private key."""

    kind: str
    secret: str | None = None
    certificate: bytes | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never print the secret, not even in a traceback
        return f"Credential(kind={self.kind!r}, ...)"

    def as_bytes(self) -> bytes:
        data: dict[str, Any] = {"kind": self.kind, "secret": self.secret, "password": self.password}
        data["certificate"] = self.certificate.decode("latin-1") if self.certificate else None
        return orjson.dumps(data)

    @staticmethod
    def from_bytes(raw: bytes) -> Credential:
        data = orjson.loads(raw)
        certificate = data.get("certificate")
        pem = certificate.encode("latin-1") if certificate else None
        return Credential(data["kind"], data.get("secret"), pem, data.get("password"))


@dataclass
class Mailbox:
    """A mailbox followed into ``source``; ``folders`` empty means every folder."""

    address: str
    source: str
    start_time: datetime | None = None
    folders: list[str] = field(default_factory=list)
    enabled: bool = True
    disabled_reason: str | None = None
    failures: int = 0
    last_error: str | None = None
    last_synced_at: datetime | None = None
    published: int = 0


@dataclass
class Integration:
    integration_id: str
    name: str
    tenant_id: str
    client_id: str
    authority_host: str = MICROSOFT_AUTHORITY
    graph_base_url: str = MICROSOFT_GRAPH
    credential_kind: str = SECRET
    mailboxes: list[Mailbox] = field(default_factory=list)
    created_at: datetime | None = None

    @property
    def owner(self) -> str:
        """The data key owner that seals this integration's credential."""
        return f"integration:{self.integration_id}"

    @property
    def actor(self) -> str:
        return f"integration:{self.name}"

    def public(self) -> dict[str, Any]:
        """Everything but the credential, for listing and status."""
        return {
            "name": self.name,
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "credential": self.credential_kind,
            "authority_host": self.authority_host,
            "graph_base_url": self.graph_base_url,
            "mailboxes": [
                {
                    "mailbox": m.address,
                    "source": m.source,
                    "start_time": m.start_time.isoformat() if m.start_time else None,
                    "folders": m.folders,
                    "enabled": m.enabled,
                    "disabled_reason": m.disabled_reason,
                    "failures": m.failures,
                    "last_error": m.last_error,
                    "last_synced_at": m.last_synced_at.isoformat() if m.last_synced_at else None,
                    "published": m.published,
                }
                for m in self.mailboxes
            ],
        }


def _identity(integration: Integration) -> bytes:
    return f"integration|{integration.integration_id}|{integration.tenant_id}|{integration.client_id}".encode()


def add_integration(engine: Engine, keyring: Keyring, integration: Integration, credential: Credential) -> Integration:
    """Store a new integration with its mailboxes, its credential sealed under a key of its own."""
    if not integration.integration_id:
        integration.integration_id = uuid.uuid4().hex
    integration.created_at = datetime.now(UTC)
    with engine.begin() as conn:
        if conn.execute(sa.select(t.integrations.c.name).where(t.integrations.c.name == integration.name)).first():
            raise IntegrationError(f"an integration named {integration.name!r} exists already")
        version, key = keyring.current(conn, integration.owner)
        row = {
            "integration_id": integration.integration_id,
            "name": integration.name,
            "tenant_id": integration.tenant_id,
            "client_id": integration.client_id,
            "authority_host": integration.authority_host,
            "graph_base_url": integration.graph_base_url,
            "credential_kind": credential.kind,
            "sealed_credential": seal(key, version, credential.as_bytes(), _identity(integration)),
            "created_at": integration.created_at,
        }
        conn.execute(t.integrations.insert().values(row))
        for mailbox in integration.mailboxes:
            conn.execute(t.integration_mailboxes.insert().values(_mailbox_row(integration, mailbox)))
    return integration


def _mailbox_row(integration: Integration, mailbox: Mailbox) -> dict[str, Any]:
    return {
        "integration_id": integration.integration_id,
        "mailbox": mailbox.address,
        "source": mailbox.source,
        "start_time": mailbox.start_time,
        "folders": list(mailbox.folders),
        "enabled": mailbox.enabled,
        "disabled_reason": mailbox.disabled_reason,
        "failures": mailbox.failures,
        "last_error": mailbox.last_error,
        "last_synced_at": mailbox.last_synced_at,
        "published": mailbox.published,
    }


def _from_rows(row: Any, mailboxes: list[Any]) -> Integration:
    return Integration(
        integration_id=row.integration_id,
        name=row.name,
        tenant_id=row.tenant_id,
        client_id=row.client_id,
        authority_host=row.authority_host,
        graph_base_url=row.graph_base_url,
        credential_kind=row.credential_kind,
        created_at=row.created_at,
        mailboxes=[
            Mailbox(
                address=m.mailbox,
                source=m.source,
                start_time=m.start_time,
                folders=list(m.folders or []),
                enabled=m.enabled,
                disabled_reason=m.disabled_reason,
                failures=m.failures,
                last_error=m.last_error,
                last_synced_at=m.last_synced_at,
                published=m.published,
            )
            for m in mailboxes
        ],
    )


def list_integrations(engine: Engine, names: list[str] | None = None) -> list[Integration]:
    """The integrations (those named, if ``names``), by name, with their mailboxes."""
    with engine.connect() as conn:
        query = sa.select(t.integrations).order_by(t.integrations.c.name)
        if names:
            query = query.where(t.integrations.c.name.in_(names))
        rows = conn.execute(query).all()
        found = [row.name for row in rows]
        missing = sorted(set(names or []) - set(found))
        if missing:
            raise IntegrationError(f"no integration named {', '.join(missing)}")
        boxes = conn.execute(sa.select(t.integration_mailboxes).order_by(t.integration_mailboxes.c.mailbox)).all()
    return [_from_rows(row, [m for m in boxes if m.integration_id == row.integration_id]) for row in rows]


def get_integration(engine: Engine, name: str) -> Integration:
    return list_integrations(engine, [name])[0]


def load_credential(engine: Engine, keyring: Keyring, integration: Integration) -> Credential:
    """The integration's credential, opened (only the sync asks for it)."""
    with engine.connect() as conn:
        blob = conn.execute(
            sa.select(t.integrations.c.sealed_credential).where(
                t.integrations.c.integration_id == integration.integration_id
            )
        ).scalar_one()
        record = f"credential of integration {integration.name}"
        blob = bytes(blob)
        key = keyring.load(conn, [integration.owner]).get(integration.owner, sealed_version(blob, record), record)
    return Credential.from_bytes(unseal(key, blob, _identity(integration), record))


def remove_integration(engine: Engine, keyring: Keyring, name: str) -> Integration:
    """Delete the integration, its mailboxes and sync state, and destroy its credential's key.

    The comments it brought in stay in their sources.
    """
    integration = get_integration(engine, name)
    with engine.begin() as conn:
        for table in (t.integration_folders, t.integration_mailboxes, t.integrations):
            conn.execute(table.delete().where(table.c.integration_id == integration.integration_id))
        keyring.destroy(conn, integration.owner)
    return integration


# --- sync state -------------------------------------------------------------------------------------------------


def _mailbox_where(integration_id: str, mailbox: str) -> Any:
    table = t.integration_mailboxes
    return sa.and_(table.c.integration_id == integration_id, table.c.mailbox == mailbox)


def record_success(engine: Engine, integration_id: str, mailbox: str, published: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            t.integration_mailboxes.update()
            .where(_mailbox_where(integration_id, mailbox))
            .values(
                failures=0,
                last_error=None,
                last_synced_at=datetime.now(UTC),
                published=t.integration_mailboxes.c.published + published,
            )
        )


def record_failure(engine: Engine, integration_id: str, mailbox: str, reason: str, *, permanent: bool) -> bool:
    """Count a failed attempt; a permanent failure that keeps coming disables the mailbox. True if it did."""
    table = t.integration_mailboxes
    with engine.begin() as conn:
        failures = conn.execute(
            table.update()
            .where(_mailbox_where(integration_id, mailbox))
            .values(failures=table.c.failures + 1, last_error=reason[:4000])
            .returning(table.c.failures)
        ).scalar_one()
        if permanent and failures >= MAX_FAILURES:
            conn.execute(
                table.update()
                .where(_mailbox_where(integration_id, mailbox))
                .values(enabled=False, disabled_reason=reason[:4000])
            )
            return True
    return False


def enable_mailbox(engine: Engine, integration_id: str, mailbox: str) -> None:
    """Follow a disabled mailbox again (after consent was granted again, say)."""
    with engine.begin() as conn:
        conn.execute(
            t.integration_mailboxes.update()
            .where(_mailbox_where(integration_id, mailbox))
            .values(enabled=True, disabled_reason=None, failures=0, last_error=None)
        )


@dataclass
class FolderState:
    folder_id: str
    path: str
    next_link: str | None = None
    delta_link: str | None = None


def folder_states(engine: Engine, integration_id: str, mailbox: str) -> dict[str, FolderState]:
    table = t.integration_folders
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(table).where(table.c.integration_id == integration_id, table.c.mailbox == mailbox)
        ).all()
    return {row.folder_id: FolderState(row.folder_id, row.path, row.next_link, row.delta_link) for row in rows}


def save_folder_state(conn: Connection, integration_id: str, mailbox: str, state: FolderState) -> None:
    """Upsert the folder's links (after the page they follow was published and confirmed)."""
    from commine.persistence.engine import insert

    values = {"path": state.path, "next_link": state.next_link, "delta_link": state.delta_link}
    row = {"integration_id": integration_id, "mailbox": mailbox, "folder_id": state.folder_id, **values}
    row["updated_at"] = datetime.now(UTC)
    statement = insert(conn, t.integration_folders).values(row)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["integration_id", "mailbox", "folder_id"],
            set_={**values, "updated_at": row["updated_at"]},
        )
    )

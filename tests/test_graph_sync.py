"""Microsoft Graph mailbox sync, end to end: the real msgraph-sdk and azure-identity against the local
Graph server (``commine.integrations.graph_fake``, HTTPS with a certificate the test trusts), the
``commine integrations`` CLI as a subprocess, ``commine worker`` processes, RabbitMQ and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from test_ingest_services import (  # the service fixtures and helpers of the ingestion tests
    COMMINE,
    commine,
    db,
    ingested_aggregates,
    ingested_events,
    source_id,
    store,
    wait_until,
    workers,
)

from commine.integrations.graph_fake import FakeGraph
from commine.integrations.graph_mapping import FOLDER, MAILBOX
from commine.persistence import schema as t
from commine.persistence.projections import catch_up
from commine.persistence.readmodels import get_comment
from commine.persistence.store import EventStore

__all__ = ["db", "source_id", "store", "workers"]  # fixtures, imported for their registration

pytestmark = pytest.mark.services

SECRET = "s3cr3t-value-that-must-never-leak"
A, B = "claims@contoso.com", "sales@contoso.com"  # synced in this order


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[FakeGraph]:
    fake = FakeGraph(tenant="contoso-tenant", client_id="app-1", secret=SECRET)
    with fake.serve(tmp_path / "fake-graph") as served:
        yield served


@pytest.fixture
def env(service_env: dict[str, str], graph: FakeGraph) -> dict[str, str]:
    return {**service_env, **graph.trust_env(), "GRAPH_SECRET": SECRET}


def add_integration(
    env: dict[str, str], graph: FakeGraph, *mailboxes: str, name: str = "m365", options: tuple[str, ...] = ()
) -> None:
    specs = [arg for box in mailboxes for arg in ("--mailbox", box)]
    commine(
        env,
        *("integrations", "add", name, "--tenant-id", "contoso-tenant", "--client-id", "app-1"),
        *("--client-secret-env", "GRAPH_SECRET", "--authority-host", graph.authority),
        *("--graph-base-url", graph.graph_url, *specs, *options),
    )


def fill(graph: FakeGraph, mailbox: str, folder: str, count: int, start: int = 0) -> list[str]:
    """``count`` messages into a folder; their Graph ids."""
    ids = []
    for n in range(start, start + count):
        message = {
            "internetMessageId": f"<msg-{n}@{mailbox}>",
            "conversationId": f"conv-{n // 3}",
            "subject": f"Claim {n}",
            "body": {"contentType": "html", "content": f"<p>Hello, about claim <b>{n}</b>.</p>"},
            "from": {"emailAddress": {"address": f"customer{n}@example.com"}},
            "toRecipients": [{"emailAddress": {"address": mailbox}}],
            "receivedDateTime": f"2024-05-{1 + n % 28:02d}T09:{n % 60:02d}:00Z",
            "sentDateTime": f"2024-05-{1 + n % 28:02d}T09:{n % 60:02d}:00Z",
        }
        attachments = [{"id": f"att-{n}", "name": f"claim-{n}.pdf", "size": n, "contentType": "application/pdf"}]
        ids.append(graph.add_message(mailbox, folder, message, attachments if n % 50 == 0 else None))
    return ids


def run_once(env: dict[str, str], *options: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return commine(env, "integrations", "run", "--once", "--backoff", "0.05", *options, check=check)


def comment_ids(engine: Engine, source: str) -> set[str]:
    with engine.connect() as conn:
        query = sa.select(t.messages.c.comment_id).where(t.messages.c.source_id == source)
        return set(conn.execute(query).scalars())


def mailbox_status(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    report = json.loads(commine(env, "integrations", "status", "--json").stdout)
    return {box["mailbox"]: box for integration in report for box in integration["mailboxes"]}


def test_a_mailbox_of_2000_messages_syncs_once_and_then_only_its_changes(
    env: dict[str, str],
    graph: FakeGraph,
    workers: Callable[..., subprocess.Popen[bytes]],
    store: EventStore,
    source_id: str,
) -> None:
    inbox = graph.add_folder(A, "Inbox")
    claims = graph.add_folder(A, "Claims", parent=inbox)
    archive = graph.add_folder(A, "Archive")
    ids = fill(graph, A, inbox, 700) + fill(graph, A, claims, 700, 700) + fill(graph, A, archive, 600, 1400)
    add_integration(env, graph, f"{A}=p/s")
    workers()

    first = run_once(env, "--page-size", "100")
    assert "2000 new, 0 updated, 0 unchanged, 0 rejected" in first.stdout
    catch_up(store)
    assert comment_ids(store.engine, source_id) == {f"msg-{n}@{A}" for n in range(2000)}
    stored = get_comment(store.engine, source_id, f"msg-700@{A}")
    assert stored is not None and stored["user_properties"][FOLDER] == "Inbox/Claims"
    assert stored["attachments"][0]["name"] == "claim-700.pdf"
    assert ingested_events(store.engine) == 2000

    second = run_once(env)
    assert f"{A}: 0 published" in second.stdout
    assert ingested_events(store.engine) == 2000

    fill(graph, A, inbox, 50, 2000)
    moved = ids[:10]  # Inbox -> Archive; the first one's body was edited in the mailbox meanwhile
    graph.mailboxes[A].messages[moved[0]]["body"] = {"contentType": "text", "content": "EDITED"}
    for graph_id in moved:
        graph.move(A, graph_id, archive)
    third = run_once(env)
    assert "50 new, 10 updated, 0 unchanged" in third.stdout
    catch_up(store)
    assert len(comment_ids(store.engine, source_id)) == 2050
    assert ingested_events(store.engine) == 2060
    for n in range(10):
        comment = get_comment(store.engine, source_id, f"msg-{n}@{A}")
        assert comment is not None
        assert comment["user_properties"][FOLDER] == "Archive"
        assert comment["messages"][0]["body"]["text"] == f"Hello, about claim {n}."  # never overwritten
    assert mailbox_status(env)[A]["folders_synced"] == 3


def test_a_sync_killed_midway_and_restarted_loses_and_doubles_nothing(
    env: dict[str, str],
    graph: FakeGraph,
    workers: Callable[..., subprocess.Popen[bytes]],
    store: EventStore,
    source_id: str,
    tmp_path: Path,
) -> None:
    inbox = graph.add_folder(A, "Inbox")
    fill(graph, A, inbox, 600)
    graph.page_delay = 0.05
    add_integration(env, graph, f"{A}=p/s")
    workers()
    log = tmp_path / "sync.log"
    with log.open("wb") as handle:
        sync = subprocess.Popen(
            [*COMMINE, "integrations", "run", "--page-size", "20"], env=env, stdout=handle, stderr=subprocess.STDOUT
        )

    def some_pages_saved() -> bool:
        with store.engine.connect() as conn:
            link = conn.execute(sa.select(t.integration_folders.c.next_link)).scalar()
        return bool(link) and ingested_events(store.engine) >= 100

    try:
        wait_until(some_pages_saved, timeout=120, failure=lambda: log.read_text()[-2000:], workers=[sync])
    finally:
        sync.send_signal(signal.SIGKILL)
        sync.wait(timeout=30)
    assert ingested_events(store.engine) < 600  # it really stopped midway

    graph.page_delay = 0
    run_once(env, "--page-size", "20")
    catch_up(store)
    assert comment_ids(store.engine, source_id) == {f"msg-{n}@{A}" for n in range(600)}
    assert ingested_events(store.engine) == ingested_aggregates(store.engine) == 600


def test_throttling_is_honoured_and_a_mailbox_refused_with_401_is_disabled_while_the_other_syncs(
    env: dict[str, str],
    graph: FakeGraph,
    workers: Callable[..., subprocess.Popen[bytes]],
    store: EventStore,
    source_id: str,
) -> None:
    fill(graph, A, graph.add_folder(A, "Inbox"), 30)
    fill(graph, B, graph.add_folder(B, "Inbox"), 5)
    add_integration(env, graph, f"{A}=p/s", f"{B}=p/s")
    graph.throttle_next, graph.retry_after = 5, 1  # more than the SDK's own 3 retries: ours take over
    graph.unauthorized = {B}
    workers()

    result = run_once(env, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{A}: 30 published" in result.stdout
    assert "30 new" in result.stdout
    catch_up(store)
    assert comment_ids(store.engine, source_id) == {f"msg-{n}@{A}" for n in range(30)}

    throttled = [i for i, r in enumerate(graph.requests) if r.get("status") == 429]
    assert len(throttled) == 5
    for i in throttled:  # the next request went to the same place, at least Retry-After later
        retry, previous = graph.requests[i + 1], graph.requests[i]
        assert retry["path"] == previous["path"]
        assert retry["at"] - previous["at"] >= graph.retry_after
    assert graph.requests[throttled[-1] + 1]["status"] == 200
    retried = [{k.lower() for k in graph.requests[i]["headers"]} for i in throttled[1:]]
    assert any("retry-attempt" in headers for headers in retried)  # the SDK's retry handler took part

    status = mailbox_status(env)
    assert status[A]["enabled"] and status[A]["failures"] == 0
    assert not status[B]["enabled"]
    assert "HTTP 401" in status[B]["disabled_reason"] and "revoked" in status[B]["disabled_reason"]

    graph.unauthorized = set()
    fill(graph, A, next(iter(graph.mailboxes[A].folders)), 1, 30)
    again = run_once(env)
    assert f"{A}: 1 published" in again.stdout and B not in again.stdout  # a disabled mailbox is left alone
    commine(env, "integrations", "enable", "m365", B)
    assert f"{B}: 5 published" in run_once(env).stdout


def test_the_same_mail_in_two_mailboxes_of_one_source_is_one_comment(
    env: dict[str, str],
    graph: FakeGraph,
    workers: Callable[..., subprocess.Popen[bytes]],
    store: EventStore,
    source_id: str,
) -> None:
    shared = {
        "internetMessageId": "<shared-1@example.com>",
        "subject": "To both",
        "body": {"contentType": "text", "content": "One mail, two mailboxes."},
        "receivedDateTime": "2024-05-01T09:30:00Z",
    }
    graph.add_message(A, graph.add_folder(A, "Inbox"), shared)
    graph.add_message(B, graph.add_folder(B, "Inbox"), {**shared, "id": "AAMk-other-mailbox"})
    add_integration(env, graph, f"{A}=p/s", f"{B}=p/s")
    workers()
    run_once(env)
    catch_up(store)
    assert comment_ids(store.engine, source_id) == {"shared-1@example.com"}
    comment = get_comment(store.engine, source_id, "shared-1@example.com")
    assert comment is not None and comment["user_properties"][MAILBOX] in (A, B)


def test_the_secret_is_sealed_in_the_database_and_never_shown(
    env: dict[str, str], graph: FakeGraph, store: EventStore, source_id: str
) -> None:
    add_integration(env, graph, f"{A}=p/s")
    with store.engine.connect() as conn:
        sealed = bytes(conn.execute(sa.select(t.integrations.c.sealed_credential)).scalar_one())
        dumped = "".join(str(row) for row in conn.execute(sa.select(t.integrations)).all())
    assert SECRET.encode() not in sealed and SECRET not in dumped
    for command in (("list",), ("list", "--json"), ("status",), ("status", "--json")):
        assert SECRET not in commine(env, "integrations", *command).stdout

    commine(env, "integrations", "remove", "m365", "--yes")
    with store.engine.connect() as conn:
        keys = conn.execute(sa.select(t.data_keys).where(t.data_keys.c.owner.like("integration:%"))).all()
        assert conn.execute(sa.select(sa.func.count()).select_from(t.integrations)).scalar() == 0
    assert keys and all(key.wrapped_key is None for key in keys)  # crypto-shredded
    add_integration(env, graph, f"{A}=p/s")  # the name is free again, under a new key


def test_a_certificate_credential_signs_in_with_a_signed_assertion(
    env: dict[str, str],
    graph: FakeGraph,
    workers: Callable[..., subprocess.Popen[bytes]],
    source_id: str,
    tmp_path: Path,
) -> None:
    pem = make_client_certificate()
    graph.certificate = pem.split(b"-----BEGIN PRIVATE KEY-----")[0]
    (tmp_path / "app.pem").write_bytes(pem)
    fill(graph, A, graph.add_folder(A, "Inbox"), 3)
    commine(
        env,
        *("integrations", "add", "m365", "--tenant-id", "contoso-tenant", "--client-id", "app-1"),
        *("--certificate", str(tmp_path / "app.pem"), "--authority-host", graph.authority),
        *("--graph-base-url", graph.graph_url, "--mailbox", f"{A}=p/s"),
    )
    workers()
    assert "3 new" in run_once(env).stdout
    graph.certificate = make_client_certificate().split(b"-----BEGIN PRIVATE KEY-----")[0]  # another key
    graph.tokens.clear()
    failed = run_once(env, check=False)
    assert failed.returncode == 1 and "token request refused" in failed.stdout


def make_client_certificate() -> bytes:
    """A self-signed RSA certificate followed by its private key, PEM, as Entra app credentials are."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "commine test app")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_the_embedded_mode_syncs_without_any_server(graph: FakeGraph, tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COMMINE_")}
    env = {**environ, **graph.trust_env(), "COMMINE_HOME": str(tmp_path / "home"), "GRAPH_SECRET": SECRET}
    env["COMMINE_EMBEDDED"] = "1"
    fill(graph, A, graph.add_folder(A, "Inbox"), 12)
    fill(graph, B, graph.add_folder(B, "Inbox"), 2)
    graph.unauthorized = {B}
    commine(env, "projects", "add", "p")
    commine(env, "sources", "add", "p/s")
    add_integration(env, graph, f"{A}=p/s", f"{B}=p/s")
    late = "late@contoso.com"  # followed from 6 May only: 5 of its 10 messages (received 1-10 May)
    fill(graph, late, graph.add_folder(late, "Inbox"), 10)
    add_integration(env, graph, f"{late}=p/s", name="late", options=("--start-time", "2024-05-06T00:00:00Z"))
    first = run_once(env, "--page-size", "5", check=False)
    assert first.returncode == 1 and "17 new, 0 updated" in first.stdout
    assert f"{late}: 5 published" in first.stdout
    assert f"{A}: 0 published" in run_once(env).stdout
    assert "revoked" in mailbox_status(env)[B]["disabled_reason"]

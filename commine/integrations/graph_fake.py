"""A local server that speaks the parts of Microsoft Graph and Microsoft Entra the mailbox sync uses.

For the tests and ``commine bench graph``: nothing here reaches Microsoft. It serves, over HTTPS
with a self-signed certificate made here (MSAL accepts only an https authority):

* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and ``POST /{tenant}/oauth2/v2.0/token``
  (client credentials, with a secret or a certificate's signed assertion);
* ``GET /v1.0/users/{id}/mailFolders`` and ``.../mailFolders/{id}/childFolders``;
* ``GET /v1.0/users/{id}/mailFolders/{id}/messages/delta`` with ``@odata.nextLink`` pages (size
  from ``Prefer: odata.maxpagesize``) and a final ``@odata.deltaLink`` that later returns only the
  changes since, moved-away messages as ``@removed``;
* ``GET /v1.0/users/{id}/messages/{id}/attachments``.

Tests shape its mailboxes, and make it answer 429 with ``Retry-After``, 401 for a mailbox, or slowly.
Clients trust its certificate through ``REQUESTS_CA_BUNDLE`` (azure-identity) and ``SSL_CERT_FILE``
(httpx, under the Graph SDK); ``trust_env`` sets both.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

TOKEN_LIFETIME = 3600


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost; (certificate file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "commine fake graph")])
    now = dt.datetime.now(dt.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "fake-graph.pem", directory / "fake-graph.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@dataclass
class Folder:
    folder_id: str
    name: str
    parent_id: str | None = None
    #: message id -> the last change's sequence number; the message JSON lives in the mailbox.
    changed: dict[str, int] = field(default_factory=dict)
    present: set[str] = field(default_factory=set)


@dataclass
class FakeMailbox:
    address: str
    folders: dict[str, Folder] = field(default_factory=dict)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    attachments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seq: int = 0


class FakeGraph:
    """The server's state and knobs; ``serve()`` runs it on a free port in a thread."""

    def __init__(self, *, tenant: str = "tenant", client_id: str = "client", secret: str = "secret") -> None:
        self.tenant, self.client_id, self.secret = tenant, client_id, secret
        self.mailboxes: dict[str, FakeMailbox] = {}
        self.lock = threading.RLock()
        #: Answer the next N Graph requests with 429 and this Retry-After.
        self.throttle_next = 0
        self.retry_after = 1
        #: Mailboxes whose every Graph request is answered 401.
        self.unauthorized: set[str] = set()
        #: Seconds to wait before answering each delta page (to kill a sync midway).
        self.page_delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self.tokens: set[str] = set()
        #: The PEM certificate whose key may sign client assertions (certificate credentials).
        self.certificate: bytes | None = None
        self.base_url = ""

    # --- shaping the mailboxes ----------------------------------------------------------------------------------

    def add_folder(self, address: str, name: str, *, folder_id: str | None = None, parent: str | None = None) -> str:
        with self.lock:
            mailbox = self.mailboxes.setdefault(address, FakeMailbox(address))
            folder_id = folder_id or f"folder-{uuid.uuid4().hex[:12]}"
            mailbox.folders[folder_id] = Folder(folder_id, name, parent)
            return folder_id

    def add_message(
        self, address: str, folder_id: str, message: dict[str, Any], attachments: list[dict[str, Any]] | None = None
    ) -> str:
        """Put ``message`` (Graph JSON; ``id`` made up if absent) into a folder; returns its id."""
        with self.lock:
            mailbox = self.mailboxes[address]
            message = dict(message)
            message.setdefault("id", f"AAMk{uuid.uuid4().hex}")
            message["parentFolderId"] = folder_id
            message["hasAttachments"] = bool(attachments)
            mailbox.messages[message["id"]] = message
            if attachments:
                mailbox.attachments[message["id"]] = attachments
            self._touch(mailbox, folder_id, message["id"], present=True)
            return str(message["id"])

    def move(self, address: str, message_id: str, folder_id: str) -> None:
        """Move a message (its immutable id stays): removed from one folder's delta, added to the other's."""
        with self.lock:
            mailbox = self.mailboxes[address]
            message = mailbox.messages[message_id]
            self._touch(mailbox, message["parentFolderId"], message_id, present=False)
            message["parentFolderId"] = folder_id
            self._touch(mailbox, folder_id, message_id, present=True)

    def _touch(self, mailbox: FakeMailbox, folder_id: str, message_id: str, *, present: bool) -> None:
        mailbox.seq += 1
        folder = mailbox.folders[folder_id]
        folder.changed[message_id] = mailbox.seq
        (folder.present.add if present else folder.present.discard)(message_id)

    # --- serving --------------------------------------------------------------------------------------------------

    @contextmanager
    def serve(self, directory: Path) -> Iterator[FakeGraph]:
        """Run on 127.0.0.1 over HTTPS until the block ends; ``ca_file`` is the certificate to trust."""
        cert_file, key_file = make_certificate(directory)
        self.ca_file = cert_file
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.base_url = f"https://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, name="fake-graph", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()

    @property
    def authority(self) -> str:
        return self.base_url

    @property
    def graph_url(self) -> str:
        return f"{self.base_url}/v1.0"

    def trust_env(self) -> dict[str, str]:
        """The environment variables that make azure-identity and httpx trust this server."""
        return {"REQUESTS_CA_BUNDLE": str(self.ca_file), "SSL_CERT_FILE": str(self.ca_file)}

    # --- answers ----------------------------------------------------------------------------------------------------

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        client_ok = form.get("client_id") == self.client_id
        assertion = form.get("client_assertion")
        if assertion:
            secret_ok = self.certificate is not None and verify_assertion(assertion, self.certificate, self.client_id)
        else:
            secret_ok = form.get("client_secret") == self.secret
        if form.get("grant_type") != "client_credentials" or not client_ok or not secret_ok:
            return 401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret."}
        token = f"tok-{uuid.uuid4().hex}"
        with self.lock:
            self.tokens.add(token)
        return 200, {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME, "access_token": token}

    def discovery(self, tenant: str) -> dict[str, Any]:
        base = f"{self.base_url}/{tenant}"
        return {
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "issuer": f"{base}/v2.0",
        }

    def folders(self, address: str, parent: str | None) -> dict[str, Any]:
        mailbox = self.mailboxes[address]
        items = [
            {
                "id": f.folder_id,
                "displayName": f.name,
                "parentFolderId": f.parent_id,
                "childFolderCount": sum(1 for c in mailbox.folders.values() if c.parent_id == f.folder_id),
                "totalItemCount": len(f.present),
            }
            for f in mailbox.folders.values()
            if f.parent_id == parent
        ]
        return {"value": items}

    def delta(self, address: str, folder_id: str, query: dict[str, str], page_size: int) -> dict[str, Any]:
        """One page of the folder's changes since the token (everything present, without one)."""
        mailbox = self.mailboxes[address]
        folder = mailbox.folders[folder_id]
        if "$skiptoken" in query:
            since, upto, offset = (int(part) for part in query["$skiptoken"].split("."))
            floor = query.get("$filter", "")
        else:
            since = int(query.get("$deltatoken", "-1"))
            upto, offset, floor = mailbox.seq, 0, query.get("$filter", "")
        ids = sorted(
            (mid for mid, seq in folder.changed.items() if since < seq <= upto), key=lambda m: (folder.changed[m], m)
        )
        if since < 0:
            ids = [m for m in ids if m in folder.present and self._after(mailbox.messages[m], floor)]
        page = ids[offset : offset + page_size]
        value = [
            mailbox.messages[m] if m in folder.present else {"id": m, "@removed": {"reason": "deleted"}} for m in page
        ]
        link = f"{self.graph_url}/users/{quote(address)}/mailFolders/{folder_id}/messages/delta"
        body: dict[str, Any] = {"value": value}
        if offset + page_size < len(ids):
            token = f"{since}.{upto}.{offset + page_size}"
            extra = f"&$filter={quote(floor)}" if floor else ""
            body["@odata.nextLink"] = f"{link}?$skiptoken={token}{extra}"
        else:
            body["@odata.deltaLink"] = f"{link}?$deltatoken={upto}"
        return body

    @staticmethod
    def _after(message: dict[str, Any], floor: str) -> bool:
        """``$filter=receivedDateTime ge X``, the one filter delta takes."""
        if not floor:
            return True
        moment = floor.split(" ge ", 1)[1].strip()
        return str(message.get("receivedDateTime", "")) >= moment

    def attachments_of(self, address: str, message_id: str) -> dict[str, Any]:
        return {"value": self.mailboxes[address].attachments.get(message_id, [])}


def _handler(graph: FakeGraph) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if self.path.endswith("/oauth2/v2.0/token"):
                self._send(*graph.token(form))
            else:
                self._send(404, {"error": {"code": "NotFound", "message": self.path}})

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            parts = [unquote(p).removesuffix("()") for p in url.path.strip("/").split("/")]
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            record = {"path": url.path, "query": query, "at": time.monotonic(), "headers": dict(self.headers)}
            with graph.lock:
                graph.requests.append(record)
            if parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
                self._send(200, graph.discovery(parts[0]))
                return
            if parts[0] != "v1.0" or len(parts) < 3 or parts[1] != "users":
                self._send(404, {"error": {"code": "NotFound", "message": url.path}})
                return
            self._graph(parts[2], parts[3:], query, record)

        def _graph(self, address: str, rest: list[str], query: dict[str, str], record: dict[str, Any]) -> None:
            auth = self.headers.get("Authorization", "")
            with graph.lock:
                if graph.throttle_next > 0:
                    graph.throttle_next -= 1
                    record["status"] = 429
                    message = "Application is over its MailboxConcurrency limit."
                    error = {"error": {"code": "TooManyRequests", "message": message}}
                    self._send(429, error, {"Retry-After": str(graph.retry_after)})
                    return
                known = auth.removeprefix("Bearer ") in graph.tokens
                if not known or address in graph.unauthorized:
                    record["status"] = 401
                    message = "Consent for the mailbox was revoked." if known else "Access token validation failure."
                    self._send(401, {"error": {"code": "InvalidAuthenticationToken", "message": message}})
                    return
                if address not in graph.mailboxes:
                    self._send(404, {"error": {"code": "ErrorInvalidUser", "message": f"mailbox {address} not found"}})
                    return
                record["status"] = 200
                body = self._answer(address, rest, query)
            if body is None:
                self._send(404, {"error": {"code": "ErrorItemNotFound", "message": "/".join(rest)}})
                return
            if rest[-1:] == ["delta"] and graph.page_delay:  # (the SDK asks for "delta()", Graph takes both)
                time.sleep(graph.page_delay)
            self._send(200, body)

        def _answer(self, address: str, rest: list[str], query: dict[str, str]) -> dict[str, Any] | None:
            mailbox = graph.mailboxes[address]
            if rest == ["mailFolders"]:
                return graph.folders(address, None)
            if len(rest) == 3 and rest[0] == "mailFolders" and rest[2] == "childFolders":
                return graph.folders(address, rest[1]) if rest[1] in mailbox.folders else None
            if len(rest) == 4 and rest[0] == "mailFolders" and rest[2:] == ["messages", "delta"]:
                if rest[1] not in mailbox.folders:
                    return None
                return graph.delta(address, rest[1], query, _page_size(self.headers.get_all("Prefer") or []))
            if len(rest) == 3 and rest[0] == "messages" and rest[2] == "attachments":
                return graph.attachments_of(address, rest[1])
            return None

    return Handler


def _page_size(prefer: list[str]) -> int:
    for header in prefer:
        for item in header.split(","):
            name, _, value = item.strip().partition("=")
            if name == "odata.maxpagesize" and value.isdigit():
                return max(1, int(value))
    return 10


def verify_assertion(assertion: str, certificate: bytes, client_id: str) -> bool:
    """Whether a client-assertion JWT is signed by the certificate's key and issued by the client."""
    import base64

    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    try:
        head, body, signature = assertion.split(".")
        header, claims = json.loads(decode(head)), json.loads(decode(body))
        key: Any = x509.load_pem_x509_certificate(certificate).public_key()
        scheme: Any = {
            "RS256": padding.PKCS1v15(),
            "PS256": padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
        }[header["alg"]]
        key.verify(decode(signature), f"{head}.{body}".encode(), scheme, hashes.SHA256())
    except (ValueError, KeyError, InvalidSignature):
        return False
    return claims.get("iss") == client_id and claims.get("sub") == client_id


def environ_with_trust(graph: FakeGraph) -> dict[str, str]:
    """``os.environ`` plus the variables that trust the server's certificate."""
    return {**os.environ, **graph.trust_env()}

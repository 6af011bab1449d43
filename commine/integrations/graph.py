"""Mailbox sync through Microsoft Graph: delta queries per folder into ``MessageIngested`` events.

For each enabled mailbox of an integration and each of its folders, the sync asks Graph for
``messages/delta``: the first time for everything (from the mailbox's start time), page by page
through ``@odata.nextLink``, then, from the saved ``@odata.deltaLink``, for the changes since. Each
page is mapped to comments (``graph_mapping``) and published as one ingest batch with publisher
confirms; only then is the folder's next or delta link saved. A crash between the two re-sends the
page, which the workers record as unchanged (ingestion is idempotent by source and comment id), so
nothing is doubled, and nothing is lost because the link moves only past what the broker holds.

Requests are built by the SDK's request builders and sent through its adapter and middleware
(token, retries, OData errors); delta pages, folders and attachments come back as JSON bytes read
with orjson, since the SDK's model deserialisation costs ~10 ms a message (msgraph-sdk-python#584).
The next page is fetched while the current one is mapped and published.

A message that shows up again (moved to another folder, seen in a second mailbox of the source,
re-categorised) is sent as the stored comment with only its folder, mailbox and category
properties replaced: the text is never overwritten. A message removed from a folder (``@removed``)
stays a comment: mail leaving a mailbox is no reason to forget it.

Errors: Graph's SDK retries 429/503/504 itself, honouring ``Retry-After``; what still fails
transiently (throttling past that, 5xx, the network) is retried here with backoff, again honouring
``Retry-After``. A 401, 403 or 404 for a mailbox, or a token the authority refuses, is a permanent
failure: retried a few times, then the mailbox is disabled with the reason and the others go on.
An expired delta link (410) restarts that folder's sync from the beginning, harmlessly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.users.item.mail_folders.item.messages.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.graph_request_adapter import options as graph_options
from msgraph_core import GraphClientFactory
from msgraph_core.authentication import AzureIdentityAuthenticationProvider

from commine.integrations import graph_config as config
from commine.integrations.graph_config import Credential, FolderState, Integration, Mailbox
from commine.integrations.graph_mapping import map_message, relocate

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Microsoft's own authorities: instance discovery works there and stays on; anywhere else it is off.
MICROSOFT_AUTHORITIES = {
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
}
MESSAGE_FIELDS = [
    "id",
    "internetMessageId",
    "conversationId",
    "subject",
    "body",
    "from",
    "sender",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "sentDateTime",
    "receivedDateTime",
    "createdDateTime",
    "categories",
    "hasAttachments",
    "parentFolderId",
]
PERMANENT_STATUS = {400, 401, 403, 404}
GONE = 410


class PermanentFailure(Exception):
    """A mailbox that cannot be read as configured (consent revoked, mailbox gone, bad secret)."""


class TransientFailure(Exception):
    """A mailbox that could not be read this time (throttled, server or network trouble)."""


@dataclass
class SyncOptions:
    """How hard to try: page size, attempts per request, backoff seconds (doubled, capped)."""

    page_size: int = 100
    attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = 120.0
    attachment_concurrency: int = 8


@dataclass
class MailboxResult:
    integration: str
    mailbox: str
    published: int = 0
    removed: int = 0
    batch_ids: list[str] = field(default_factory=list)
    error: str | None = None
    disabled: bool = False


# --- the SDK, configured from the integration --------------------------------------------------------------------


def make_credential(integration: Integration, credential: Credential) -> Any:
    """An azure-identity client-credentials credential on the integration's authority."""
    from azure.identity import CertificateCredential, ClientSecretCredential

    authority = integration.authority_host.rstrip("/")
    kwargs: dict[str, Any] = {
        "authority": authority,
        "disable_instance_discovery": urlsplit(authority).hostname not in MICROSOFT_AUTHORITIES,
    }
    if credential.kind == config.CERTIFICATE:
        assert credential.certificate is not None
        return CertificateCredential(
            integration.tenant_id,
            integration.client_id,
            certificate_data=credential.certificate,
            password=credential.password,
            **kwargs,
        )
    return ClientSecretCredential(integration.tenant_id, integration.client_id, credential.secret or "", **kwargs)


def make_http() -> Any:
    """The SDK's httpx client with its default middleware (retry with ``Retry-After``, redirects, ...)."""
    return GraphClientFactory.create_with_default_middleware(options=graph_options)


def make_client(integration: Integration, token_credential: Any, http: Any = None) -> GraphServiceClient:
    """A ``GraphServiceClient`` whose base URL, token scope and allowed host follow ``graph_base_url``."""
    parts = urlsplit(integration.graph_base_url)
    if not parts.scheme or not parts.hostname:
        raise ValueError(f"graph_base_url {integration.graph_base_url!r} is not an absolute URL")
    scope = f"{parts.scheme}://{parts.hostname}/.default"
    auth = AzureIdentityAuthenticationProvider(token_credential, scopes=[scope], allowed_hosts=[parts.hostname])
    adapter = GraphRequestAdapter(auth, http if http is not None else make_http())
    adapter.base_url = integration.graph_base_url.rstrip("/")
    return GraphServiceClient(request_adapter=adapter)


# --- errors and retries ----------------------------------------------------------------------------------------------


def describe(error: BaseException) -> str:
    """A one-line reason for the mailbox's status (an error's own words, never a credential)."""
    if isinstance(error, APIError):
        code = getattr(getattr(error, "error", None), "code", None)
        status = error.response_status_code
        return f"HTTP {status}{' ' + code if code else ''}: {error.primary_message or type(error).__name__}"
    if isinstance(error, ClientAuthenticationError):
        return f"token request refused: {str(error.message or error).splitlines()[0][:500]}"
    return f"{type(error).__name__}: {str(error)[:500]}"


def classify(error: BaseException) -> type[Exception] | None:
    """PermanentFailure or TransientFailure for errors the sync knows, None for the rest."""
    if isinstance(error, ClientAuthenticationError):
        return PermanentFailure
    if isinstance(error, APIError):
        if error.response_status_code in PERMANENT_STATUS:
            return PermanentFailure
        return TransientFailure
    if isinstance(error, ServiceRequestError | ServiceResponseError | OSError | asyncio.TimeoutError):
        return TransientFailure
    try:
        import httpx

        if isinstance(error, httpx.TransportError):
            return TransientFailure
    except ImportError:  # pragma: no cover
        pass
    return None


def retry_after(error: BaseException) -> float | None:
    headers = getattr(error, "response_headers", None) or {}
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def with_retries(call: Callable[[], Awaitable[T]], options: SyncOptions, what: str) -> T:
    """``call()``, retried with backoff on transient errors (``Retry-After`` first when given)."""
    delay = options.backoff
    for attempt in range(1, options.attempts + 1):
        try:
            return await call()
        except Exception as exc:
            kind = classify(exc)
            if kind is PermanentFailure or (isinstance(exc, APIError) and exc.response_status_code == GONE):
                raise
            if kind is None:
                raise
            if attempt == options.attempts:
                raise TransientFailure(f"{what}: {describe(exc)} (after {attempt} attempts)") from exc
            wait = retry_after(exc) or min(delay, options.max_backoff) * random.uniform(0.8, 1.2)
            log.info("%s: %s; retrying in %.1f s", what, describe(exc), wait)
            await asyncio.sleep(wait)
            delay *= 2
    raise AssertionError("unreachable")


# --- reading a mailbox ---------------------------------------------------------------------------------------------


def _headers(config_: RequestConfiguration[Any], page_size: int) -> RequestConfiguration[Any]:
    config_.headers.add("Prefer", f"odata.maxpagesize={page_size}")
    config_.headers.add("Prefer", 'IdType="ImmutableId"')
    return config_


async def list_folders(client: GraphServiceClient, mailbox: str, options: SyncOptions) -> list[tuple[str, str]]:
    """Every mail folder of the mailbox as (id, path), child folders included."""
    user = client.users.by_user_id(mailbox)
    found: list[tuple[str, str]] = []
    pending: list[tuple[str | None, str]] = [(None, "")]
    what = f"{mailbox}: folders"
    while pending:
        parent, prefix = pending.pop(0)
        builder: Any = user.mail_folders
        if parent is not None:
            builder = user.mail_folders.by_mail_folder_id(parent).child_folders
        page = await fetch_json(builder, RequestConfiguration(), options, what)
        while page:
            for folder in page.get("value") or []:
                found.append((str(folder["id"]), prefix + str(folder.get("displayName") or folder["id"])))
                if folder.get("childFolderCount"):
                    pending.append((str(folder["id"]), found[-1][1] + "/"))
            link = page.get("@odata.nextLink")
            page = await fetch_json(builder.with_url(link), RequestConfiguration(), options, what) if link else None
    return found


def wanted(folders: list[tuple[str, str]], names: Iterable[str]) -> list[tuple[str, str]]:
    """The folders named (by path, any case; a name matches the folder and all below it), or all."""
    names = [n.strip("/").lower() for n in names if n.strip("/")]
    if not names:
        return folders
    return [f for f in folders if any(f[1].lower() == n or f[1].lower().startswith(n + "/") for n in names)]


async def fetch_json(builder: Any, request: RequestConfiguration[Any], options: SyncOptions, what: str) -> Any:
    """GET through the SDK (auth, retry middleware, OData errors), the body parsed as plain JSON.

    The SDK's own model deserialisation costs ~10 ms a message (msgraph-sdk-python issue #584);
    orjson reads the same page in well under a millisecond.
    """
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    errors = {"XXX": ODataError}

    async def call() -> Any:
        info = builder.to_get_request_information(request)
        return await builder.request_adapter.send_primitive_async(info, "bytes", errors)

    body = await with_retries(call, options, what)
    return orjson.loads(body) if body else {}


async def delta_page(
    client: GraphServiceClient, mailbox: Mailbox, folder_id: str, link: str | None, options: SyncOptions
) -> dict[str, Any]:
    """One page of the folder's delta (Graph JSON): from ``link``, or the first page of a fresh sync."""
    builder: Any = client.users.by_user_id(mailbox.address).mail_folders.by_mail_folder_id(folder_id).messages.delta
    what = f"{mailbox.address}: delta"
    if link:
        return await fetch_json(
            builder.with_url(link), _headers(RequestConfiguration(), options.page_size), options, what
        )
    query = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=MESSAGE_FIELDS)
    if mailbox.start_time is not None:
        moment = mailbox.start_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        query.filter = f"receivedDateTime ge {moment}"
    request = _headers(RequestConfiguration(query_parameters=query), options.page_size)
    return dict(await fetch_json(builder, request, options, what))


def is_removed(message: dict[str, Any]) -> bool:
    return "@removed" in message


async def attachments_of(
    client: GraphServiceClient, mailbox: str, messages: list[dict[str, Any]], options: SyncOptions
) -> dict[str, list[dict[str, Any]]]:
    """Attachment metadata (no content) of the messages that have any, a few requests at a time."""
    from msgraph.generated.users.item.messages.item.attachments.attachments_request_builder import (
        AttachmentsRequestBuilder,
    )

    limit = asyncio.Semaphore(options.attachment_concurrency)
    fields = ["id", "name", "size", "contentType", "isInline"]
    request = RequestConfiguration(
        query_parameters=AttachmentsRequestBuilder.AttachmentsRequestBuilderGetQueryParameters(select=fields)
    )

    async def one(message_id: str) -> tuple[str, list[dict[str, Any]]]:
        builder = client.users.by_user_id(mailbox).messages.by_message_id(message_id).attachments
        async with limit:
            try:
                page = await fetch_json(builder, request, options, f"{mailbox}: attachments")
            except APIError as exc:
                if exc.response_status_code != 404:
                    raise
                return message_id, []  # deleted since the delta page listed it
        return message_id, list(page.get("value") or [])

    wanted_ids = [str(m["id"]) for m in messages if m.get("hasAttachments") and m.get("id")]
    return dict(await asyncio.gather(*(one(i) for i in wanted_ids)))


# --- the sync ---------------------------------------------------------------------------------------------------------


class Sink:
    """Where mapped comments go: the stored versions of known ones, and publishing a batch."""

    def stored(self, source: str, comment_ids: list[str]) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def publish(self, source: str, comments: list[dict[str, Any]], actor: str) -> list[str]:
        raise NotImplementedError


@dataclass
class MailboxSync:
    """Syncs one mailbox's folders through ``client`` into ``sink``, saving links in ``engine``."""

    engine: Any
    client: GraphServiceClient
    integration: Integration
    mailbox: Mailbox
    sink: Sink
    options: SyncOptions
    progress: Callable[[int], None] | None = None
    stop: Callable[[], bool] = lambda: False

    async def run(self) -> MailboxResult:
        result = MailboxResult(self.integration.name, self.mailbox.address)
        folders = wanted(await list_folders(self.client, self.mailbox.address, self.options), self.mailbox.folders)
        states = config.folder_states(self.engine, self.integration.integration_id, self.mailbox.address)
        for folder_id, path in folders:
            state = states.get(folder_id) or FolderState(folder_id, path)
            state.path = path
            await self.folder(state, result)
            if self.stop():
                break
        return result

    async def folder(self, state: FolderState, result: MailboxResult) -> None:
        """Page through the folder's delta, publishing each page before saving the link after it.

        The next page is fetched while this one is mapped, published and its link saved (on a
        thread of its own, so the event loop keeps the request going).
        """
        link = state.next_link or state.delta_link
        page = await self.first_page(state, link)
        while page is not None and not self.stop():
            next_link, delta_link = page.get("@odata.nextLink"), page.get("@odata.deltaLink")
            if next_link is None and delta_link is None:
                raise TransientFailure(f"{self.mailbox.address} {state.path}: a delta page without next or delta link")
            ahead = asyncio.ensure_future(self.fetch(state, next_link)) if next_link else None
            try:
                attachments = await self.attachments(page.get("value") or [])
                await asyncio.to_thread(self.publish_page, page.get("value") or [], attachments, state, result)
                state.next_link, state.delta_link = next_link, delta_link or state.delta_link
                await asyncio.to_thread(self.save, state)
                page = await ahead if ahead else None
            finally:
                if ahead and not ahead.done():
                    ahead.cancel()

    async def fetch(self, state: FolderState, link: str | None) -> dict[str, Any]:
        return await delta_page(self.client, self.mailbox, state.folder_id, link, self.options)

    async def first_page(self, state: FolderState, link: str | None) -> dict[str, Any] | None:
        """The page the folder's sync starts from; None if the folder is gone. An expired link starts over."""
        try:
            return await self.fetch(state, link)
        except APIError as exc:
            if exc.response_status_code == 404 and link is None:
                log.warning("%s %s: folder gone; skipped", self.mailbox.address, state.path)
                return None
            if exc.response_status_code != GONE or link is None:
                raise
        log.warning("%s %s: delta link expired; syncing the folder again", self.mailbox.address, state.path)
        state.next_link = state.delta_link = None
        return await self.fetch(state, None)

    async def attachments(self, messages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        present = [m for m in messages if not is_removed(m)]
        return await attachments_of(self.client, self.mailbox.address, present, self.options)

    def save(self, state: FolderState) -> None:
        with self.engine.begin() as conn:
            config.save_folder_state(conn, self.integration.integration_id, self.mailbox.address, state)

    def publish_page(
        self,
        messages: list[dict[str, Any]],
        attachments: dict[str, list[dict[str, Any]]],
        state: FolderState,
        result: MailboxResult,
    ) -> None:
        """Map the page's messages, keep the stored text of known ones, publish them as one batch (confirmed)."""
        present = [m for m in messages if not is_removed(m)]
        result.removed += len(messages) - len(present)
        if not present:
            return
        comments: dict[str, dict[str, Any]] = {}
        mailbox = self.mailbox.address
        for message in present:
            found = attachments.get(str(message.get("id")))
            mapped = map_message(message, mailbox=mailbox, folder=state.path, attachments=found)
            comments[mapped["id"]] = mapped
        known = self.sink.stored(self.mailbox.source, list(comments))
        batch = [relocate(known[cid], fresh) if cid in known else fresh for cid, fresh in comments.items()]
        result.batch_ids.extend(self.sink.publish(self.mailbox.source, batch, self.integration.actor))
        result.published += len(batch)
        if self.progress:
            self.progress(len(batch))


async def sync_mailbox(
    engine: Any,
    client: GraphServiceClient,
    integration: Integration,
    mailbox: Mailbox,
    sink: Sink,
    options: SyncOptions,
    *,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> MailboxResult:
    """Sync one mailbox; permanent failures are retried, then disable it. Never raises for Graph's errors."""
    sync = MailboxSync(engine, client, integration, mailbox, sink, options, progress, stop)
    delay = options.backoff
    while True:
        try:
            result = await sync.run()
        except Exception as exc:
            kind = classify(exc) or (TransientFailure if isinstance(exc, TransientFailure) else None)
            if kind is None and not isinstance(exc, TransientFailure | PermanentFailure):
                raise
            reason = describe(exc) if not isinstance(exc, TransientFailure) else str(exc)
            permanent = kind is PermanentFailure
            disabled = config.record_failure(
                engine, integration.integration_id, mailbox.address, reason, permanent=permanent
            )
            log.warning("%s %s: %s%s", integration.name, mailbox.address, reason, " (disabled)" if disabled else "")
            if permanent and not disabled and not stop():
                await asyncio.sleep(delay)
                delay = min(delay * 2, options.max_backoff)
                continue
            return MailboxResult(integration.name, mailbox.address, error=reason, disabled=disabled)
        config.record_success(engine, integration.integration_id, mailbox.address, result.published)
        return result


class Stopper:
    """Set by SIGTERM or SIGINT: the sync finishes the page in hand, saves its link and stops."""

    def __init__(self) -> None:
        self.stopped = False

    def __call__(self) -> bool:
        return self.stopped

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)

    def _stop(self, *_: Any) -> None:
        if self.stopped:
            raise KeyboardInterrupt
        self.stopped = True


# --- a pass over the integrations, into the app's store -------------------------------------------------------------


class AppSink(Sink):
    """Publishes through the app's broker (confirmed) and reads stored comments from its store."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._source_ids: dict[str, str] = {}

    def source_id(self, source: str) -> str:
        if source not in self._source_ids:
            from commine.handlers.commands import get_source

            self._source_ids[source] = get_source(self.app.store, source).source_id
        return self._source_ids[source]

    def stored(self, source: str, comment_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The current comment of each id already in the source (the last ``MessageIngested``)."""
        from commine.domain.message import message_aggregate_id

        source_id = self.source_id(source)
        ids = {message_aggregate_id(source_id, cid): cid for cid in comment_ids}
        found: dict[str, dict[str, Any]] = {}
        for aggregate_id, events in self.app.store.read_aggregates(list(ids)).items():
            if events and events[-1].type == "MessageIngested":
                found[ids[aggregate_id]] = dict(events[-1].comment)  # type: ignore[attr-defined]
        return found

    def publish(self, source: str, comments: list[dict[str, Any]], actor: str) -> list[str]:
        from commine.integrations.ingest_client import batched, comment_bytes, make_body, send

        batches = batched(comments, self.app.settings.ingest_batch_size, comment_bytes)
        return [send(self.app, make_body(source, batch, actor=actor)) for batch in batches]


async def sync_integration(
    app: Any,
    integration: Integration,
    options: SyncOptions,
    *,
    sink: Sink | None = None,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> list[MailboxResult]:
    """Sync every enabled mailbox of one integration, one after the other."""
    keyring = app.store.cipher.keyring
    token_credential = make_credential(integration, config.load_credential(app.engine, keyring, integration))
    http = make_http()
    client = make_client(integration, token_credential, http)
    sink = sink or AppSink(app)
    results = []
    try:
        for mailbox in integration.mailboxes:
            if not mailbox.enabled or stop():
                continue
            results.append(
                await sync_mailbox(
                    app.engine, client, integration, mailbox, sink, options, progress=progress, stop=stop
                )
            )
    finally:
        await http.aclose()
        token_credential.close()
    return results


def run_pass(
    app: Any,
    names: list[str] | None,
    options: SyncOptions,
    *,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> list[MailboxResult]:
    """One sync of the named integrations (all, if none named)."""
    results: list[MailboxResult] = []
    for integration in config.list_integrations(app.engine, names):
        results.extend(asyncio.run(sync_integration(app, integration, options, progress=progress, stop=stop)))
    return results

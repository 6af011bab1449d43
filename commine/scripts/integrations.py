"""``commine integrations``: Microsoft 365 mailboxes through Microsoft Graph: add, list, remove, status, run."""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from commine.scripts.context import Context, fail, pass_context


@click.group()
def integrations() -> None:
    """Mailbox integrations: Exchange / Microsoft 365 mailboxes synced into sources through Graph."""


def _read_secret(secret_file: Path | None, secret_env: str | None, certificate: Path | None) -> Any:
    """The credential, from a file, an environment variable or a hidden prompt (never an argument)."""
    from commine.integrations.graph_config import CERTIFICATE, SECRET, Credential

    if certificate is not None:
        password = os.environ.get(secret_env) if secret_env else None
        return Credential(CERTIFICATE, certificate=certificate.read_bytes(), password=password)
    if secret_file is not None:
        text = sys.stdin.read() if str(secret_file) == "-" else secret_file.read_text()
        secret = text.strip()
    elif secret_env:
        secret = os.environ.get(secret_env, "")
        if not secret:
            fail(f"the environment variable {secret_env} is empty or unset")
    else:
        secret = click.prompt("client secret", hide_input=True)
    return Credential(SECRET, secret=secret)


def parse_mailbox(spec: str, start: datetime | None, folders: tuple[str, ...]) -> Any:
    from commine.domain.errors import DomainError
    from commine.domain.names import split_full_name
    from commine.integrations.graph_config import Mailbox

    address, sep, source = spec.partition("=")
    if not sep or not address.strip() or not source.strip():
        raise click.BadParameter(f"{spec!r}: give MAILBOX=PROJECT/SOURCE", param_hint="--mailbox")
    try:
        split_full_name("source", source.strip())
    except DomainError as exc:
        raise click.BadParameter(str(exc), param_hint="--mailbox") from None
    return Mailbox(address.strip(), source.strip(), start_time=start, folders=list(folders))


@integrations.command("add")
@click.argument("name")
@click.option("--tenant-id", required=True, help="The directory (tenant) id of the app registration.")
@click.option("--client-id", required=True, help="The application (client) id.")
@click.option("--client-secret-file", type=click.Path(path_type=Path), help="File holding the secret ('-': stdin).")
@click.option("--client-secret-env", metavar="VAR", help="Environment variable holding the secret.")
@click.option(
    "--certificate",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM file with the certificate and its private key, instead of a secret "
    "(--client-secret-env then names the variable holding its password, if any).",
)
@click.option("--mailbox", "mailboxes", multiple=True, required=True, metavar="ADDRESS=PROJECT/SOURCE")
@click.option("--start-time", default=None, metavar="ISO-TIME", help="Only mail received since then.")
@click.option("--folder", "folders", multiple=True, help="Folder path to follow (repeatable); default: every folder.")
@click.option("--authority-host", default=None, help="Token authority [https://login.microsoftonline.com].")
@click.option("--graph-base-url", default=None, help="Graph endpoint [https://graph.microsoft.com/v1.0].")
@pass_context
def add(
    ctx: Context,
    name: str,
    tenant_id: str,
    client_id: str,
    client_secret_file: Path | None,
    client_secret_env: str | None,
    certificate: Path | None,
    mailboxes: tuple[str, ...],
    start_time: str | None,
    folders: tuple[str, ...],
    authority_host: str | None,
    graph_base_url: str | None,
) -> None:
    """Add the integration NAME: an app registration and the mailboxes it follows, each into a source.

    The secret (or certificate) is stored sealed with a key of the integration's own and is never
    shown again; give it through a file, an environment variable or the prompt, not an argument.
    """
    from commine.handlers.commands import get_source
    from commine.integrations import graph_config as config
    from commine.scripts.cli import parse_moment

    start = parse_moment(start_time)
    boxes = [parse_mailbox(spec, start, folders) for spec in mailboxes]
    store = ctx.store
    for box in boxes:
        try:
            get_source(store, box.source)
        except ValueError as exc:
            fail(str(exc))
    integration = config.Integration(
        integration_id="",
        name=name,
        tenant_id=tenant_id,
        client_id=client_id,
        authority_host=authority_host or config.MICROSOFT_AUTHORITY,
        graph_base_url=graph_base_url or config.MICROSOFT_GRAPH,
        mailboxes=boxes,
    )
    credential = _read_secret(client_secret_file, client_secret_env, certificate)
    try:
        config.add_integration(store.engine, store.cipher.keyring, integration, credential)
    except config.IntegrationError as exc:
        fail(str(exc))
    click.echo(f"added integration {name} ({credential.kind}) following {len(boxes)} mailbox(es)")


@integrations.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def list_(ctx: Context, as_json: bool) -> None:
    """The integrations, without their secrets."""
    from commine.integrations.graph_config import list_integrations

    found = list_integrations(ctx.store.engine)
    if as_json:
        click.echo(json.dumps([i.public() for i in found], indent=2))
        return
    for integration in found:
        enabled = sum(m.enabled for m in integration.mailboxes)
        click.echo(
            f"{integration.name:<24} tenant {integration.tenant_id}  client {integration.client_id}  "
            f"{integration.credential_kind}  {enabled}/{len(integration.mailboxes)} mailbox(es) enabled"
        )
    if not found:
        click.echo("no integrations yet: commine integrations add NAME ...")


@integrations.command("remove")
@click.argument("name")
@click.confirmation_option(prompt="Remove the integration and destroy its stored credential?")
@pass_context
def remove(ctx: Context, name: str) -> None:
    """Remove NAME: its configuration and sync state go, its credential's key is destroyed; comments stay."""
    from commine.integrations.graph_config import IntegrationError, remove_integration

    try:
        remove_integration(ctx.store.engine, ctx.store.cipher.keyring, name)
    except IntegrationError as exc:
        fail(str(exc))
    click.echo(f"removed integration {name}; the comments it brought in stay in their sources")


@integrations.command("enable")
@click.argument("name")
@click.argument("mailbox")
@pass_context
def enable(ctx: Context, name: str, mailbox: str) -> None:
    """Follow MAILBOX of NAME again after it was disabled (consent granted again, say)."""
    from commine.integrations.graph_config import IntegrationError, enable_mailbox, get_integration

    try:
        integration = get_integration(ctx.store.engine, name)
    except IntegrationError as exc:
        fail(str(exc))
    if mailbox not in {m.address for m in integration.mailboxes}:
        fail(f"integration {name} does not follow {mailbox}")
    enable_mailbox(ctx.store.engine, integration.integration_id, mailbox)
    click.echo(f"enabled {mailbox} of {name}")


@integrations.command("status")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def status(ctx: Context, names: tuple[str, ...], as_json: bool) -> None:
    """Per mailbox: enabled or disabled (with the reason), last sync, published, folders synced."""
    from commine.integrations.graph_config import IntegrationError, folder_states, list_integrations

    engine = ctx.store.engine
    try:
        found = list_integrations(engine, list(names) or None)
    except IntegrationError as exc:
        fail(str(exc))
    report = []
    for integration in found:
        info = integration.public()
        for box in info["mailboxes"]:
            states = folder_states(engine, integration.integration_id, box["mailbox"]).values()
            box["folders_synced"] = sum(1 for s in states if s.delta_link)
            box["folders_in_progress"] = sum(1 for s in states if s.next_link)
        report.append(info)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for info in report:
        click.echo(f"integration {info['name']} ({info['graph_base_url']})")
        for box in info["mailboxes"]:
            state = "enabled" if box["enabled"] else f"DISABLED: {box['disabled_reason']}"
            click.echo(
                f"  {box['mailbox']:<32} -> {box['source']:<24} {state}; {box['published']} published, "
                f"{box['folders_synced']} folder(s) synced, last sync {box['last_synced_at'] or 'never'}"
                + (f"; last error: {box['last_error']}" if box["last_error"] and box["enabled"] else "")
            )


@integrations.command("run")
@click.argument("names", nargs=-1)
@click.option("--once", is_flag=True, help="One sync pass, then exit (otherwise: a sync every --interval).")
@click.option("--interval", default=60.0, show_default=True, help="Seconds between passes.")
@click.option("--page-size", default=100, show_default=True, help="Messages per Graph page (one ingest batch).")
@click.option("--attempts", default=5, show_default=True, help="Tries per Graph request on transient errors.")
@click.option("--backoff", default=1.0, show_default=True, help="First backoff in seconds; doubled each retry.")
@click.option("--no-wait", is_flag=True, help="Do not wait for the workers to store what was published.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for the workers.")
@pass_context
def run(
    ctx: Context,
    names: tuple[str, ...],
    once: bool,
    interval: float,
    page_size: int,
    attempts: int,
    backoff: float,
    no_wait: bool,
    timeout: float,
) -> None:
    """Sync the mailboxes of NAMES (default: every integration), continuously or --once.

    Exits non-zero after --once if a mailbox failed or was disabled in the pass.
    """
    from commine.integrations.graph import Stopper, SyncOptions
    from commine.integrations.graph_config import IntegrationError

    options = SyncOptions(page_size=page_size, attempts=attempts, backoff=backoff)
    stopper = Stopper()
    stopper.install()
    app = ctx.app
    while True:
        try:
            failed = _one_pass(app, list(names) or None, options, stopper, wait=not no_wait, timeout=timeout)
        except IntegrationError as exc:
            fail(str(exc))
        if once or stopper():
            if failed:
                sys.exit(1)
            return
        deadline = time.monotonic() + interval
        while time.monotonic() < deadline and not stopper():
            time.sleep(min(0.5, interval))
        if stopper():
            return


def _one_pass(app: Any, names: list[str] | None, options: Any, stopper: Any, *, wait: bool, timeout: float) -> bool:
    """Sync once, wait for the receipts, print a line per mailbox and the totals; True if one failed."""
    from commine.integrations.graph import run_pass
    from commine.scripts.upload import wait_stored

    runner: Any = nullcontext()
    if app.settings.embedded:
        from commine.workers.inline import inline_worker

        runner = inline_worker(app)
    with runner, tqdm(unit="message", desc="sync", file=sys.stderr, disable=None) as bar:
        results = run_pass(app, names, options, progress=bar.update, stop=stopper)
    for result in results:
        line = f"{result.integration} {result.mailbox}: {result.published} published"
        if result.error:
            line += f"; {'DISABLED' if result.disabled else 'failed'}: {result.error}"
        click.echo(line)
    batch_ids = [b for r in results for b in r.batch_ids]
    if batch_ids and (wait or app.settings.embedded):
        receipts = wait_stored(app, batch_ids, timeout)
        new, updated = sum(r.new for r in receipts), sum(r.updated for r in receipts)
        unchanged, rejected = sum(r.unchanged for r in receipts), sum(r.rejected for r in receipts)
        click.echo(f"{new} new, {updated} updated, {unchanged} unchanged, {rejected} rejected")
    return any(r.error for r in results)

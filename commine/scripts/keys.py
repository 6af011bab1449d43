"""``commine keys``: encryption-at-rest keys: status, master key rotation, source key rotation."""

from __future__ import annotations

import json
import sys

import click
from tqdm import tqdm

from commine.domain.errors import DomainError
from commine.persistence.encryption import EncryptionError, new_master_key
from commine.scripts.context import Context, fail, pass_context


@click.group()
def keys() -> None:
    """Encryption keys: each source's data key, wrapped by the master key (COMMINE_MASTER_KEY)."""


@keys.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def keys_status(ctx: Context, as_json: bool) -> None:
    """Data keys per source and dataset: versions, wrapping master key, destroyed ones, rotations."""
    from commine.persistence.rotation import status

    store = ctx.store
    found = status(store.engine)
    configured = store.cipher.keyring.wrapper.key_ids()
    if as_json:
        click.echo(json.dumps({"master_keys": configured, "encryption": store.cipher.enabled, "owners": found}))
        return
    click.echo(
        f"encryption {'on' if store.cipher.enabled else 'off'}; master keys (newest first): {', '.join(configured)}"
    )
    for owner, entry in found.items():
        versions = ", ".join(
            f"v{v['version']} " + ("destroyed" if v["destroyed"] else f"wrapped by {v['master_key_id']}")
            for v in entry["versions"]
        )
        click.echo(f"{owner}: {versions}")
        for rotation in entry["rotations"]:
            state = "finished" if rotation["finished"] else f"in progress (at log position {rotation['position']})"
            click.echo(f"  rotation to v{rotation['version']}: {rotation['records']} records, {state}")


@keys.command("new-master")
def keys_new_master() -> None:
    """Print a fresh master key (base64 of 32 random bytes) to put first in COMMINE_MASTER_KEY."""
    click.echo(new_master_key())


@keys.command("rotate-master")
@pass_context
def keys_rotate_master(ctx: Context) -> None:
    """Re-wrap every data key with the first configured master key.

    Put the new key first and keep the old one after it (COMMINE_MASTER_KEY=new,old), run this, then
    remove the old key from the configuration of every process.
    """
    from commine.persistence.rotation import rotate_master

    store = ctx.store
    try:
        count = rotate_master(store.engine, store.cipher)
    except EncryptionError as exc:
        fail(str(exc))
    current = store.cipher.keyring.wrapper.current_id
    click.echo(f"re-wrapped {count} data key(s) with master key {current}; older master keys may now be removed")


@keys.command("rotate-source")
@click.argument("full_name", metavar="[PROJECT/SOURCE]", required=False)
@click.option("--all", "every", is_flag=True, help="Every source that is not purged, one after the other.")
@click.option("--batch-size", default=500, show_default=True, help="Records re-encrypted per transaction.")
@pass_context
def keys_rotate_source(ctx: Context, full_name: str | None, every: bool, batch_size: int) -> None:
    """Give a source a new data key and re-encrypt its records under it (resumes an unfinished run).

    Content hashes stored before hashes were keyed become keyed on the way: after an upgrade,
    `--all` re-keys every source's hashes.
    """
    if every == (full_name is not None):
        fail("name one source (PROJECT/SOURCE) or give --all")
    for name, source_id in _sources(ctx, full_name):
        _rotate_one(ctx, name, source_id, batch_size)


def _sources(ctx: Context, full_name: str | None) -> list[tuple[str, str]]:
    """(project/name, source id) of the named source, or of every source not purged."""
    import sqlalchemy as sa

    from commine.handlers.commands import get_source
    from commine.persistence import schema as t

    if full_name is not None:
        try:
            return [(full_name, get_source(ctx.store, full_name).source_id)]
        except DomainError as exc:
            fail(str(exc))
    s = t.sources
    query = sa.select(s.c.project, s.c.name, s.c.source_id).where(s.c.purged.is_(False)).order_by(s.c.project, s.c.name)
    with ctx.store.engine.connect() as conn:
        return [(f"{row.project}/{row.name}", row.source_id) for row in conn.execute(query)]


def _rotate_one(ctx: Context, full_name: str, source_id: str, batch_size: int) -> None:
    from commine.persistence.rotation import records_of, rotate_source

    store = ctx.store
    total = records_of(store.engine, source_id)
    with tqdm(total=total, desc=f"re-encrypt {full_name}", unit="record", file=sys.stderr, disable=None) as bar:
        try:
            rotation = rotate_source(store.engine, store.cipher, source_id, batch_size=batch_size, progress=bar.update)
        except EncryptionError as exc:
            fail(str(exc))
    rehashed = f"; {rotation.rehashed} content hash(es) re-keyed" if rotation.rehashed else ""
    click.echo(
        f"source {full_name}: {rotation.records} record(s) re-encrypted under data key v{rotation.version}{rehashed}"
    )

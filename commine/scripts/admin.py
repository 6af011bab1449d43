"""``commine users``, ``commine tokens``, ``commine permissions`` and ``commine serve``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import click

from commine.domain.access import PERMISSIONS
from commine.domain.errors import DomainError
from commine.scripts.context import Context, actor_name, fail, pass_context


@click.group()
def users() -> None:
    """Users: who may call the HTTP API."""


@users.command("add")
@click.argument("username")
@click.option("--email", default="")
@click.option("--admin", is_flag=True, help="A global administrator: may do everything, in every project.")
@pass_context
def users_add(ctx: Context, username: str, email: str, admin: bool) -> None:
    """Add the user USERNAME."""
    from commine.handlers.access import add_user

    try:
        user = add_user(ctx.store, username, email=email, admin=admin, actor=actor_name())
    except DomainError as exc:
        fail(str(exc))
    click.echo(f"added {'administrator' if admin else 'user'} {username} (id {user.user_id})")


@click.group()
def tokens() -> None:
    """API tokens: what a client sends as `Authorization: Bearer <token>`."""


@tokens.command("issue")
@click.argument("username")
@click.option("--description", default="", help="What the token is for (kept in the log).")
@pass_context
def tokens_issue(ctx: Context, username: str, description: str) -> None:
    """Issue a new token for USERNAME and print it. It is shown this once: only its hash is kept."""
    from commine.handlers.access import issue_token

    try:
        issued = issue_token(ctx.store, username, description=description, actor=actor_name())
    except DomainError as exc:
        fail(str(exc))
    click.echo(f"token id {issued.token_id} for {username}; the token (shown once):", err=True)
    click.echo(issued.token)


@tokens.command("revoke")
@click.argument("token_id_or_user", metavar="TOKEN-ID|USER")
@pass_context
def tokens_revoke(ctx: Context, token_id_or_user: str) -> None:
    """Revoke one token by its id, or every token of a user."""
    from commine.handlers.access import revoke_tokens

    try:
        revoked = revoke_tokens(ctx.store, token_id_or_user, actor=actor_name())
    except DomainError as exc:
        fail(str(exc))
    click.echo(f"revoked {len(revoked)} token(s){': ' + ', '.join(revoked) if revoked else ''}")


_PERMISSION_HELP = "\n".join(f"  {name:<24} {what}" for name, what in PERMISSIONS.items())


@click.group(help=f"Permissions of users in projects.\n\n\b\nPermissions:\n{_PERMISSION_HELP}")
def permissions() -> None:
    pass


@permissions.command("grant")
@click.argument("username")
@click.argument("project")
@click.argument("names", nargs=-1, required=True, metavar="PERMISSION...")
@pass_context
def permissions_grant(ctx: Context, username: str, project: str, names: tuple[str, ...]) -> None:
    """Grant USERNAME the PERMISSIONs in PROJECT."""
    from commine.handlers.access import grant

    try:
        new = grant(ctx.store, username, project, list(names), actor=actor_name())
    except DomainError as exc:
        fail(str(exc))
    click.echo(f"granted {username} in {project}: {', '.join(new) if new else 'nothing new'}")


@permissions.command("revoke")
@click.argument("username")
@click.argument("project")
@click.argument("names", nargs=-1, required=True, metavar="PERMISSION...")
@pass_context
def permissions_revoke(ctx: Context, username: str, project: str, names: tuple[str, ...]) -> None:
    """Take the PERMISSIONs in PROJECT away from USERNAME."""
    from commine.handlers.access import revoke

    try:
        held = revoke(ctx.store, username, project, list(names), actor=actor_name())
    except DomainError as exc:
        fail(str(exc))
    click.echo(f"revoked from {username} in {project}: {', '.join(held) if held else 'nothing held'}")


@click.command()
@click.option("--host", default=None, help="Interface to listen on [COMMINE_API_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [COMMINE_API_PORT, default 8000].")
@click.option("--workers", type=int, default=None, help="Server processes [COMMINE_API_WORKERS, default 1].")
@pass_context
def serve(ctx: Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the HTTP API and the web UI at / (with --embedded: SQLite, workers and retraining inside)."""
    settings = ctx.settings
    host, port = host or settings.api_host, port or settings.api_port
    workers = workers if workers is not None else settings.api_workers
    if workers < 1:
        fail("--workers must be at least 1")
    if workers == 1:
        run_server(ctx.app, host, port)
        return
    if settings.embedded:
        fail("the embedded mode serves from one process (its SQLite store and in-process workers); drop --workers")
    import uvicorn

    ctx.store  # noqa: B018 -- create and migrate the database once, before the processes race to
    click.echo(f"commine web UI and API on http://{host}:{port}/ ({workers} processes)")
    uvicorn.run(f"{__name__}:worker_app", factory=True, host=host, port=port, workers=workers, log_level="info")


def run_server(app: Any, host: str, port: int) -> None:
    """uvicorn over the app; in the embedded mode the actors and the retraining run on threads of the server."""
    import uvicorn

    if app.settings.embedded:
        from commine.workers.inline import background_trainer, worker_for

        worker_for(app)  # the in-process actors run on a thread of the server
        background_trainer(app)  # so labelling in the UI lands a new model version
    click.echo(f"commine web UI and API on http://{host}:{port}/")
    try:
        uvicorn.run(served(app), host=host, port=port, log_level="info")
    finally:
        _stop_serving()


def served(app: Any) -> Any:
    """The ASGI app a server process serves: the web UI's long reads in child processes, its views warmed."""
    from commine.api.app import create_app
    from commine.api.ui import offload
    from commine.api.ui.data import warm
    from commine.bootstrap import tune_gc

    offload.use_processes(app.settings)  # the web UI's long reads keep off the server's GIL
    if app.settings.ui_warm:
        warm(app.store)  # the web UI's dataset views, ready before their first visit
    api = create_app(app)
    tune_gc()
    return api


def _stop_serving() -> None:
    from commine.api.ui import offload

    offload.use_processes(None)  # its children go before the store they read (the demo's is temporary)


def worker_app() -> Any:
    """What each process of ``commine serve --workers N`` serves, from the environment's settings
    (the command's other options are environment variables too)."""
    from commine.bootstrap import bootstrap
    from commine.settings import load_settings

    app = bootstrap(load_settings())
    api = served(app)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            _stop_serving()
            app.close()

    api.router.lifespan_context = lifespan
    return api


COMMANDS = [users, tokens, permissions, serve]

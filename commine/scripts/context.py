"""What every ``commine`` command shares: the settings, the app built from them, who acts."""

from __future__ import annotations

import getpass
from typing import Any

import click

from commine.settings import Settings


def actor_name() -> str:
    """Who is acting, for the log: the operating-system user of the CLI."""
    try:
        return f"user:{getpass.getuser()}"
    except Exception:
        return "user:unknown"


class Context:
    """Settings, and the app built from them on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app: Any = None
        self._store: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            from commine.bootstrap import bootstrap

            self._app = bootstrap(self.settings)
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None
        if self._store is not None:
            self._store.engine.dispose()
            self._store = None

    @property
    def store(self) -> Any:
        """The event store alone, for commands that need no broker (opened and migrated once)."""
        if self._app is not None:
            return self._app.store
        if self._store is None:
            from commine.bootstrap import open_store

            self._store = open_store(self.settings)
        return self._store


pass_context = click.make_pass_decorator(Context)


def fail(message: str) -> None:
    raise click.ClickException(message)

"""Configuration: every knob is an environment variable with a local default.

The defaults point at the services every machine of this project runs on 127.0.0.1 (RabbitMQ
guest/guest, PostgreSQL as ``postgres`` with trust auth, Redis). ``COMMINE_EMBEDDED=1`` (or the
``--embedded`` flag of any command) swaps them for a SQLite file and an in-process broker so
the whole pipeline runs with no server at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

#: The PostgreSQL database the real deployment uses; created on first use.
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/commine"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _switch(value: str | None, *, default: bool) -> bool:
    """``on``/``off`` (or 1/0, true/false, yes/no); blank means ``default``, anything else is an error."""
    text = (value or "").strip().lower()
    if not text:
        return default
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected on or off, got {value!r}")


@dataclass(frozen=True)
class Settings:
    """What one process needs to know to reach its store and broker."""

    embedded: bool
    database_url: str
    amqp_url: str
    redis_url: str
    home: Path
    #: Prefix of every queue and exchange name, so a test run or a second deployment can share
    #: one RabbitMQ server with another without touching its queues.
    queue_prefix: str
    #: Comments per broker message: one confirmed publish carries a whole batch (infra-notes:
    #: a confirm per comment caps ingestion near 1,200/s).
    ingest_batch_size: int
    worker_threads: int
    #: Declare handler queues as quorum queues (replicated, needs RabbitMQ 3.8+).
    quorum_queues: bool
    #: Publish every committed event on the ``<prefix>.events`` topic exchange. Off saves the
    #: broker and the workers that work where nobody subscribes.
    relay_events: bool = True
    #: Retrain a dataset's model when its annotations change (a coalesced job on Redis with RQ).
    retrain: bool = True
    #: Predict new messages on ingestion under their datasets' newest models.
    predict: bool = True
    #: Compute the transformer embedding (all-MiniLM-L6-v2) of new messages, when its extra is installed.
    transformer: bool = True
    #: Where ``commine serve`` listens.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    #: Server processes ``commine serve`` starts (``COMMINE_API_WORKERS``): one per core lets the
    #: robots' fetches use every core, each process holding its own web UI caches.
    api_workers: int = 1
    #: ``commine serve`` prepares every dataset's view for the web UI on a thread at start
    #: (``COMMINE_UI_WARM=off`` leaves each to its first visit).
    ui_warm: bool = True
    #: Encrypt customer text at rest (``COMMINE_ENCRYPTION=on|off``). Off only stops new writes being
    #: sealed: what was sealed before still opens while its keys exist.
    encryption: bool = True
    #: Master keys (``COMMINE_MASTER_KEY``): base64 of 32 bytes each, comma-separated, newest first; the
    #: newest wraps new data keys, the older ones still unwrap what they wrapped until ``keys rotate-master``.
    master_key: str | None = None
    #: A file holding the master keys, one per line, newest first (``COMMINE_MASTER_KEY_FILE``). With
    #: neither set, ``<home>/master.key`` is used, generated (mode 0600) on first use.
    master_key_file: Path | None = None

    @property
    def default_master_key_file(self) -> Path:
        return self.home / "master.key"

    @property
    def embedded_database_url(self) -> str:
        return f"sqlite:///{self.home / 'commine.db'}"

    def with_embedded(self, embedded: bool = True) -> Settings:
        """The same settings, switched to (or from) the embedded store and broker."""
        if not embedded:
            return replace(self, embedded=False)
        url = self.database_url if self.database_url.startswith("sqlite") else self.embedded_database_url
        return replace(self, embedded=True, database_url=url)


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read the settings from the environment (``os.environ`` unless given)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("COMMINE_HOME") or Path.home() / ".commine")
    settings = Settings(
        embedded=False,
        database_url=env.get("COMMINE_DATABASE_URL") or DEFAULT_DATABASE_URL,
        amqp_url=env.get("COMMINE_AMQP_URL") or DEFAULT_AMQP_URL,
        redis_url=env.get("COMMINE_REDIS_URL") or DEFAULT_REDIS_URL,
        home=home,
        queue_prefix=env.get("COMMINE_QUEUE_PREFIX") or "commine",
        ingest_batch_size=int(env.get("COMMINE_INGEST_BATCH_SIZE") or 2000),
        worker_threads=int(env.get("COMMINE_WORKER_THREADS") or 2),
        quorum_queues=_flag(env.get("COMMINE_QUORUM_QUEUES")),
        relay_events=env.get("COMMINE_RELAY_EVENTS", "1") != "0",
        retrain=env.get("COMMINE_RETRAIN", "1") != "0",
        predict=env.get("COMMINE_PREDICT", "1") != "0",
        transformer=env.get("COMMINE_TRANSFORMER", "1") != "0",
        api_host=env.get("COMMINE_API_HOST") or "127.0.0.1",
        api_port=int(env.get("COMMINE_API_PORT") or 8000),
        api_workers=int(env.get("COMMINE_API_WORKERS") or 1),
        ui_warm=_switch(env.get("COMMINE_UI_WARM"), default=True),
        encryption=_switch(env.get("COMMINE_ENCRYPTION"), default=True),
        master_key=env.get("COMMINE_MASTER_KEY") or None,
        master_key_file=Path(env["COMMINE_MASTER_KEY_FILE"]) if env.get("COMMINE_MASTER_KEY_FILE") else None,
    )
    if _flag(env.get("COMMINE_EMBEDDED")):
        if not env.get("COMMINE_DATABASE_URL"):
            settings = replace(settings, database_url=settings.embedded_database_url)
        settings = settings.with_embedded()
    return settings

"""Table definitions, SQLAlchemy Core, one set for PostgreSQL and SQLite.

Two metadata objects: ``log_metadata`` is the write side (the event log and processing
receipts) and ``projection_metadata`` the read models, which replay can build again in a fresh
schema and compare with the live ones.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

#: JSON stored as jsonb on PostgreSQL, as text on SQLite.
JsonType = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)

log_metadata = sa.MetaData()
projection_metadata = sa.MetaData()

events = sa.Table(
    "events",
    log_metadata,
    # Assigned by the store as max + 1 under a table lock: gapless and in commit order.
    sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("event_id", sa.Uuid, nullable=False, unique=True),
    sa.Column("aggregate_id", sa.String(1100), nullable=False),
    sa.Column("aggregate_version", sa.Integer, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("schema_version", sa.Integer, nullable=False),
    sa.Column("occurred_at", Timestamp, nullable=False),
    sa.Column("recorded_at", Timestamp, nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("payload", JsonType, nullable=False),
    sa.UniqueConstraint("aggregate_id", "aggregate_version", name="uq_events_aggregate_version"),
)

#: An aggregate's state at a version, so that loading it reads only the events after that version
#: (a stream gains a ``StreamAdvanced`` with every robot's advance). A cache of the log: a missing or
#: older snapshot only means more events to read; ``Aggregate.snapshot_every`` says which kinds keep one.
snapshots = sa.Table(
    "snapshots",
    log_metadata,
    sa.Column("aggregate_id", sa.String(1100), primary_key=True),
    sa.Column("aggregate_version", sa.Integer, nullable=False),
    sa.Column("state", JsonType, nullable=False),
    sa.Column("taken_at", Timestamp, nullable=False),
)

#: One row per ingest batch handled, written in the same transaction as its events: the batch's
#: counts survive a redelivery, and the uploader reads them back.
ingest_receipts = sa.Table(
    "ingest_receipts",
    log_metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("source_id", sa.String(16), nullable=False),
    sa.Column("new", sa.Integer, nullable=False),
    sa.Column("updated", sa.Integer, nullable=False),
    sa.Column("unchanged", sa.Integer, nullable=False),
    sa.Column("rejected", sa.Integer, nullable=False),
    sa.Column("errors", JsonType, nullable=False),
    sa.Column("recorded_at", Timestamp, nullable=False),
)

checkpoints = sa.Table(
    "checkpoints",
    projection_metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
)

projects = sa.Table(
    "projects",
    projection_metadata,
    sa.Column("name", sa.String(1024), primary_key=True),
    sa.Column("title", sa.String(256), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

sources = sa.Table(
    "sources",
    projection_metadata,
    sa.Column("source_id", sa.String(16), primary_key=True),
    sa.Column("project", sa.String(1024), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("title", sa.String(256), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("language", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("should_translate", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("sensitive_properties", JsonType, nullable=False, server_default="[]"),
    sa.Column("purged", sa.Boolean, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index("ix_sources_project_name", "project", "name"),
)

datasets = sa.Table(
    "datasets",
    projection_metadata,
    sa.Column("dataset_id", sa.String(16), primary_key=True),
    sa.Column("project", sa.String(1024), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("title", sa.String(256), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("has_sentiment", sa.Boolean, nullable=False),
    sa.Column("created", Timestamp, nullable=False),
    sa.Column("last_modified", Timestamp, nullable=False),
    sa.Index("ix_datasets_project_name", "project", "name"),
)

dataset_sources = sa.Table(
    "dataset_sources",
    projection_metadata,
    sa.Column("dataset_id", sa.String(16), primary_key=True),
    sa.Column("source_id", sa.String(16), primary_key=True),
)

labels = sa.Table(
    "labels",
    projection_metadata,
    sa.Column("dataset_id", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
)

messages = sa.Table(
    "messages",
    projection_metadata,
    sa.Column("source_id", sa.String(16), primary_key=True),
    sa.Column("comment_id", sa.String(1024), primary_key=True),
    sa.Column("timestamp", Timestamp, nullable=False),
    sa.Column("thread_id", sa.String(1024), nullable=True),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    #: Position of the ``MessageIngested`` event holding the current content. The text itself is
    #: read from there, so customer text is stored once (and encrypted once), in the log.
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index("ix_messages_position", "position"),
)

annotations = sa.Table(
    "annotations",
    projection_metadata,
    sa.Column("dataset_id", sa.String(16), primary_key=True),
    sa.Column("uid", sa.String(1100), primary_key=True),
    sa.Column("assigned", JsonType, nullable=False),
    sa.Column("dismissed", JsonType, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    #: The queue of the message's first review from a queue (``shuffle`` means picked at random); migration 0006.
    sa.Column("queue", sa.String(32), nullable=False, server_default=""),
)

models = sa.Table(
    "models",
    projection_metadata,
    sa.Column("dataset_id", sa.String(16), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("labels", JsonType, nullable=False),
    sa.Column("training_size", sa.Integer, nullable=False),
    sa.Column("metrics", JsonType, nullable=False),
    sa.Column("artifact_hash", sa.String(64), nullable=False),
    sa.Column("trained_at", Timestamp, nullable=False),
)

streams = sa.Table(
    "streams",
    projection_metadata,
    sa.Column("stream_id", sa.String(16), primary_key=True),
    sa.Column("dataset_id", sa.String(16), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("label_thresholds", JsonType, nullable=False),
    sa.Column("comment_filter", JsonType, nullable=False),
    #: Qualifying messages past the cursor (not yet delivered).
    sa.Column("backlog", sa.Integer, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    # Added by migration 0004 (streams):
    sa.Column("title", sa.String(256), nullable=False, server_default=""),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("deliver_all_filtered", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("delivery", sa.String(16), nullable=False, server_default="fetch"),
    #: The highest sequence id delivered (advanced past); 0 before the first advance.
    sa.Column("cursor", sa.BigInteger, nullable=False, server_default="0"),
    #: The highest sequence id handed out so far: ids only grow, a reset or re-pin never reuses one.
    sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
    #: ``to_comment_created_at`` of the last reset: older messages no longer enter the stream.
    sa.Column("reset_from", Timestamp, nullable=True),
    sa.Index("ix_streams_dataset_name", "dataset_id", "name"),
)

#: Positions up to which a handler with effects outside the read models (the event relay, and
#: later prediction and stream routing) has processed the log.
tracking = sa.Table(
    "tracking",
    log_metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
)

#: Trained model artifacts, addressed by the hash ``ModelTrained`` records. Not a read model: an
#: artifact is reproducible by training again from the log, but far too costly to rebuild on replay.
model_artifacts = sa.Table(
    "model_artifacts",
    log_metadata,
    sa.Column("artifact_hash", sa.String(64), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

#: Sentence embeddings per message and encoder (float32 bytes), a cache computed from the
#: message text; ``content_hash`` says which content of the message it was computed from.
embeddings = sa.Table(
    "embeddings",
    log_metadata,
    sa.Column("source_id", sa.String(16), primary_key=True),
    sa.Column("comment_id", sa.String(1024), primary_key=True),
    sa.Column("encoder", sa.String(32), primary_key=True),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("vector", sa.LargeBinary, nullable=False),
)

#: The probabilities each model version gave each message of its dataset (labels under 0.001 left out).
predictions = sa.Table(
    "predictions",
    projection_metadata,
    sa.Column("dataset_id", sa.String(16), primary_key=True),
    sa.Column("model_version", sa.Integer, primary_key=True),
    sa.Column("uid", sa.String(1100), primary_key=True),
    sa.Column("labels", JsonType, nullable=False),
    #: Log position of the ``PredictionsRecorded`` event: a newer prediction replaces an older one.
    sa.Column("position", sa.BigInteger, nullable=False),
)

#: Access control (``domain.access``): who may call the API, with which tokens, allowed to do what.
users = sa.Table(
    "users",
    projection_metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(16), nullable=False),
    sa.Column("email", sa.String(512), nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

#: Only a token's SHA-256 is kept; a request's token is hashed and looked up here.
api_tokens = sa.Table(
    "api_tokens",
    projection_metadata,
    sa.Column("token_id", sa.String(16), primary_key=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_api_tokens_username", "username"),
)

permissions = sa.Table(
    "permissions",
    projection_metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("project", sa.String(1024), primary_key=True),
    sa.Column("permission", sa.String(64), primary_key=True),
)


# --- streams (migration 0004) -------------------------------------------------------------------------------------

#: Every message a stream has considered (predicted under its pinned version since its creation,
#: last reset or re-pin), in stream order: ``seq`` is the sequence id robots see. Entries past the
#: stream's cursor follow threshold changes; those at or before it are delivered and stay as they were.
stream_entries = sa.Table(
    "stream_entries",
    projection_metadata,
    sa.Column("stream_id", sa.String(16), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("uid", sa.String(1100), nullable=False),
    sa.Column("source_id", sa.String(16), nullable=False),
    #: Position of the message's first ``MessageIngested``: the ingestion order entries are added in.
    sa.Column("first_position", sa.BigInteger, nullable=False),
    #: When the message was first ingested (the comment's ``created_at``), what a reset goes back to.
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("passes_filter", sa.Boolean, nullable=False),
    #: Unused since migration 0101 (NULL): an entry past the cursor holds the newest probabilities
    #: of its message under the pinned version, which re-evaluation reads from ``predictions``.
    sa.Column("probabilities", JsonType, nullable=True),
    sa.Column("qualifies", sa.Boolean, nullable=False),
    #: The labels a robot gets: those meeting their thresholds, with probabilities.
    sa.Column("labels", JsonType, nullable=False),
    #: One entry per message per stream; message first, so "which streams hold these messages" is a probe each.
    sa.UniqueConstraint("uid", "stream_id", name="uq_stream_entries_uid"),
    #: The qualifying entries only: fetch finds the next ones, and the backlog counts them, by it.
    sa.Index(
        "ix_stream_entries_qualifying",
        "stream_id",
        "seq",
        postgresql_where=sa.text("qualifies"),
        sqlite_where=sa.text("qualifies"),
    ),
)

#: Comments tagged as exceptions of a stream (``PUT .../exceptions``, or a robot's reject).
stream_exceptions = sa.Table(
    "stream_exceptions",
    projection_metadata,
    sa.Column("stream_id", sa.String(16), primary_key=True),
    sa.Column("uid", sa.String(1100), primary_key=True),
    sa.Column("exception_type", sa.String(256), nullable=False),
    sa.Column("reported_at", Timestamp, nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
)

#: How far the router has pushed each queue-delivered stream onto its RabbitMQ queue. Not a read
#: model: it records an effect outside the database, like ``tracking``; sequence ids are
#: reproducible from the log, so it stays right across a rebuild of the read models.
stream_routing = sa.Table(
    "stream_routing",
    log_metadata,
    sa.Column("stream_id", sa.String(16), primary_key=True),
    sa.Column("pushed_seq", sa.BigInteger, nullable=False),
)


# --- the access log (migration 0005) --------------------------------------------------------------------------------

#: Every read of customer data, and every API call, with who, from where and what came of it: the half of
#: the audit trail the event log cannot hold, since a read changes nothing. Append-only, never rebuilt.
access_log = sa.Table(
    "access_log",
    log_metadata,
    sa.Column("access_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    #: ``api`` or ``cli``.
    sa.Column("channel", sa.String(16), nullable=False),
    #: Where from: the client's address for the API, host and process for the CLI.
    sa.Column("client", sa.String(256), nullable=False),
    #: What: ``GET /api/v1/...`` for the API, the command (``export p/ds``) for the CLI.
    sa.Column("action", sa.String(2048), nullable=False),
    #: The project the data belongs to, when the action names one; None for global actions.
    sa.Column("project", sa.String(1024), nullable=True),
    #: The HTTP status (or 0 for a CLI command that completed).
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("detail", JsonType, nullable=False),
    sa.Index("ix_access_log_at", "at"),
)


# --- encryption at rest (migration 0007_encryption) ----------------------------------------------------------------

#: Data keys of sources (``source:<id>``) and datasets (``dataset:<id>``, for model artifacts), each
#: version wrapped by the master key ``master_key_id`` names. Log metadata, not a read model: replay
#: must never recreate a destroyed key. A destroyed key keeps its row with the key material erased
#: (``wrapped_key`` NULL), a tombstone that stops a new key being made for a purged source.
data_keys = sa.Table(
    "data_keys",
    log_metadata,
    sa.Column("owner", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("master_key_id", sa.String(32), nullable=True),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("destroyed_at", Timestamp, nullable=True),
)

#: Progress of re-encrypting an owner's records under its key ``version``: the log position done up
#: to, committed with each batch, so a rotation killed midway resumes where it stopped.
key_rotations = sa.Table(
    "key_rotations",
    log_metadata,
    sa.Column("owner", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("records", sa.BigInteger, nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp, nullable=True),
)


# --- mailbox integrations (migration 0100_integrations) -------------------------------------------------------------

#: A Microsoft Graph integration: the app registration it signs in as and the servers it talks to.
#: The client secret or certificate is sealed with the integration's own data key
#: (``integration:<id>``), its ids as associated data; removing the integration destroys that key.
integrations = sa.Table(
    "integrations",
    log_metadata,
    sa.Column("integration_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(256), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("authority_host", sa.String(512), nullable=False),
    sa.Column("graph_base_url", sa.String(512), nullable=False),
    sa.Column("credential_kind", sa.String(16), nullable=False),
    sa.Column("sealed_credential", sa.LargeBinary, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

#: A mailbox an integration follows into a source, and whether it is still followed (and why not).
integration_mailboxes = sa.Table(
    "integration_mailboxes",
    log_metadata,
    sa.Column("integration_id", sa.String(32), primary_key=True),
    sa.Column("mailbox", sa.String(320), primary_key=True),
    sa.Column("source", sa.String(1024), nullable=False),
    sa.Column("start_time", Timestamp, nullable=True),
    sa.Column("folders", JsonType, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("disabled_reason", sa.Text, nullable=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_synced_at", Timestamp, nullable=True),
    sa.Column("published", sa.BigInteger, nullable=False),
)

#: Sync state per folder: the ``@odata.nextLink`` of an initial sync under way, then the
#: ``@odata.deltaLink`` a restart resumes from. Saved only after the page's batch was confirmed.
integration_folders = sa.Table(
    "integration_folders",
    log_metadata,
    sa.Column("integration_id", sa.String(32), primary_key=True),
    sa.Column("mailbox", sa.String(320), primary_key=True),
    sa.Column("folder_id", sa.String(512), primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("next_link", sa.Text, nullable=True),
    sa.Column("delta_link", sa.Text, nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
)

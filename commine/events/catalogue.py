"""The event catalogue of DESIGN.md, version 1 of every payload.

Aggregate ids name the aggregate kind first (``project:``, ``source:``, ``dataset:``,
``message:``, ``annotation:``, ``model:``, ``stream:``), so the log reads on its own.
Identifiers, timestamps and types are plain fields; customer text only ever sits inside
``MessageIngested.comment`` (and annotation free text), which is what encryption at rest wraps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from commine.events.base import DomainEvent, event


@event
@dataclass(frozen=True, kw_only=True)
class ProjectCreated(DomainEvent):
    name: str
    title: str = ""
    description: str = ""


@event
@dataclass(frozen=True, kw_only=True)
class SourceCreated(DomainEvent):
    source_id: str
    project: str
    name: str
    title: str = ""
    description: str = ""
    language: str = "en"
    kind: str = "unknown"
    should_translate: bool = False
    #: User property names (``string:Email``) only readers with ``sources-read-sensitive`` see.
    sensitive_properties: list[str] = field(default_factory=list)


@event
@dataclass(frozen=True, kw_only=True)
class SourceUpdated(DomainEvent):
    """A source's settings changed (``POST /v1/sources/<p>/<name>``); each field is its new value."""

    source_id: str
    title: str
    description: str
    should_translate: bool = False
    sensitive_properties: list[str] = field(default_factory=list)


@event
@dataclass(frozen=True, kw_only=True)
class DatasetCreated(DomainEvent):
    dataset_id: str
    project: str
    name: str
    title: str = ""
    description: str = ""
    has_sentiment: bool = False


@event
@dataclass(frozen=True, kw_only=True)
class DatasetUpdated(DomainEvent):
    """A dataset's title or description changed; each field is its new value."""

    dataset_id: str
    title: str
    description: str


@event
@dataclass(frozen=True, kw_only=True)
class DatasetDeleted(DomainEvent):
    """A dataset is gone with its taxonomy, annotations, models, predictions and streams; its sources stay.

    Its name may be used again: a later ``DatasetCreated`` on the same aggregate starts a new dataset with a
    new id, so nothing of the deleted one comes back.
    """

    dataset_id: str
    reason: str = ""


@event
@dataclass(frozen=True, kw_only=True)
class SourceAddedToDataset(DomainEvent):
    dataset_id: str
    source_id: str


@event
@dataclass(frozen=True, kw_only=True)
class LabelDefined(DomainEvent):
    dataset_id: str
    name: str
    description: str = ""


@event
@dataclass(frozen=True, kw_only=True)
class LabelRenamed(DomainEvent):
    """A label renamed, its children with it (``Old > x`` becomes ``New > x``), in annotations too."""

    dataset_id: str
    old_name: str
    new_name: str


@event
@dataclass(frozen=True, kw_only=True)
class LabelsMerged(DomainEvent):
    """Labels folded into one: each source and its children move under ``target``.

    A child ``Source > x`` becomes ``Target > x``, merged with that label when it exists.
    Annotations carrying a source name carry the target instead.
    """

    dataset_id: str
    sources: list[str]
    target: str


@event
@dataclass(frozen=True, kw_only=True)
class LabelDeleted(DomainEvent):
    """A label and its children left the taxonomy, and every annotation that carried them."""

    dataset_id: str
    name: str


@event
@dataclass(frozen=True, kw_only=True)
class MessageIngested(DomainEvent):
    """A comment arrived in a source: new (version 1) or with changed content (later versions)."""

    source_id: str
    comment_id: str
    #: The Communications Mining comment, normalised (see ``domain.comment``).
    comment: dict[str, Any]
    #: SHA-256 of the normalised comment: equal hashes mean an unchanged re-send.
    content_hash: str
    change: str = "new"


@event
@dataclass(frozen=True, kw_only=True)
class MessageDeleted(DomainEvent):
    source_id: str
    comment_id: str
    reason: str = ""


@event
@dataclass(frozen=True, kw_only=True)
class LabelApplied(DomainEvent):
    """Labels assigned to (or dismissed from) one comment in one dataset."""

    dataset_id: str
    uid: str
    #: ``[{"name": "Billing > Refund", "sentiment": "positive" | "negative" | None}]``
    assigned: list[dict[str, Any]] = field(default_factory=list)
    #: Label names the trainer said do not apply.
    dismissed: list[str] = field(default_factory=list)
    #: The active-learning queue the trainer picked the message from (``shuffle``, ``teach``, ...), or "".
    #: Validation's balance counts the messages reviewed from ``shuffle``: picked at random, unbiased.
    queue: str = ""


@event
@dataclass(frozen=True, kw_only=True)
class LabelRemoved(DomainEvent):
    dataset_id: str
    uid: str
    labels: list[str] = field(default_factory=list)


@event
@dataclass(frozen=True, kw_only=True)
class ModelTrained(DomainEvent):
    dataset_id: str
    version: int
    labels: list[str]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    training_size: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    artifact_hash: str = ""
    #: The log position the training data was read at: rebuilding the read models up to here and
    #: training with ``hyperparameters`` gives this version again.
    trained_on_position: int = 0


@event
@dataclass(frozen=True, kw_only=True)
class PredictionsRecorded(DomainEvent):
    dataset_id: str
    model_version: int
    #: ``[{"uid": ..., "labels": {"Billing > Refund": 0.93, ...}}]``
    predictions: list[dict[str, Any]] = field(default_factory=list)


@event
@dataclass(frozen=True, kw_only=True)
class StreamCreated(DomainEvent):
    stream_id: str
    dataset_id: str
    name: str
    title: str = ""
    description: str = ""
    model_version: int | None = None
    #: ``[{"name": ["Billing", "Refund"], "threshold": 0.4}]``
    label_thresholds: list[dict[str, Any]] = field(default_factory=list)
    comment_filter: dict[str, Any] = field(default_factory=dict)
    #: The reference product's behaviour: every message passing the filter is delivered and the
    #: thresholds only trim the labels returned. Off: a message needs one label at its threshold.
    deliver_all_filtered: bool = False
    #: ``"fetch"``: robots fetch and advance over HTTP. ``"queue"``: the router pushes each
    #: qualifying message onto the stream's RabbitMQ queue and advances the cursor past it.
    delivery: str = "fetch"


@event
@dataclass(frozen=True, kw_only=True)
class ThresholdChanged(DomainEvent):
    stream_id: str
    label: list[str]
    threshold: float
    previous: float | None = None


@event
@dataclass(frozen=True, kw_only=True)
class StreamModelChanged(DomainEvent):
    """The stream follows another model version from now on; what is past its cursor is re-read."""

    stream_id: str
    model_version: int
    previous: int | None = None


@event
@dataclass(frozen=True, kw_only=True)
class StreamDeleted(DomainEvent):
    stream_id: str


@event
@dataclass(frozen=True, kw_only=True)
class StreamAdvanced(DomainEvent):
    stream_id: str
    sequence_id: str


@event
@dataclass(frozen=True, kw_only=True)
class StreamReset(DomainEvent):
    stream_id: str
    to_comment_created_at: str


@event
@dataclass(frozen=True, kw_only=True)
class ExceptionReported(DomainEvent):
    stream_id: str
    uid: str
    exception_type: str = ""


@event
@dataclass(frozen=True, kw_only=True)
class ExceptionCleared(DomainEvent):
    """A comment's exception tag taken off again (``DELETE .../exceptions?uid=``)."""

    stream_id: str
    uid: str


@event
@dataclass(frozen=True, kw_only=True)
class SourcePurged(DomainEvent):
    source_id: str
    reason: str = ""


# --- access control: users, API tokens, per-project permissions (aggregate ``user:<username>``) ---


@event
@dataclass(frozen=True, kw_only=True)
class UserAdded(DomainEvent):
    user_id: str
    username: str
    email: str = ""
    #: A global administrator may do everything, in every project.
    admin: bool = False


@event
@dataclass(frozen=True, kw_only=True)
class TokenIssued(DomainEvent):
    """An API token for the user. Only its SHA-256 is recorded: the token itself is shown once."""

    username: str
    token_id: str
    token_hash: str
    description: str = ""


@event
@dataclass(frozen=True, kw_only=True)
class TokenRevoked(DomainEvent):
    username: str
    token_id: str


@event
@dataclass(frozen=True, kw_only=True)
class PermissionsGranted(DomainEvent):
    username: str
    project: str
    permissions: list[str]


@event
@dataclass(frozen=True, kw_only=True)
class PermissionsRevoked(DomainEvent):
    username: str
    project: str
    permissions: list[str]

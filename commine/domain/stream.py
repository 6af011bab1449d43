"""Stream: a dataset's work queue for robots, pinned to a model version with per-label thresholds.

Two halves, both pure:

* the ``Stream`` aggregate decides which events a command produces (create, change a threshold,
  pin another model version, advance, reset, tag and untag exceptions, delete);
* ``passes_filter``, ``labels_returned`` and ``qualifies`` say whether one message belongs in a
  stream and which of its labels a robot sees. The read model and the router call exactly these,
  so a stream's content is a function of the log and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from commine.domain.aggregate import Aggregate
from commine.domain.comment import parse_timestamp
from commine.domain.errors import AlreadyExists, CommentError, DomainError, NotFound
from commine.domain.names import check_resource_name, label_name, label_parts
from commine.events import (
    ExceptionCleared,
    ExceptionReported,
    StreamAdvanced,
    StreamCreated,
    StreamDeleted,
    StreamModelChanged,
    StreamReset,
    ThresholdChanged,
)

#: How robots receive a stream: HTTP fetch/advance (the reference's way) or its RabbitMQ queue.
DELIVERY_MODES = ("fetch", "queue")
#: Keys of a comment filter, and of one user property's condition within it.
FILTER_KEYS = {"user_properties", "sources", "timestamp"}
PROPERTY_CONDITIONS = {"one_of", "not_one_of", "minimum", "maximum"}
#: The longest exception type a robot may give (the reference calls it a "free short string").
MAX_EXCEPTION_TYPE = 256


def stream_aggregate_id(dataset_id: str, name: str) -> str:
    return f"stream:{dataset_id}/{name}"


def check_threshold(name: Any, threshold: Any) -> tuple[list[str], float]:
    """A label name in list form and its threshold as a float from 0 to 1, or a ``DomainError``."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise DomainError(f"threshold of {name!r} must be a number from 0 to 1")
    return label_parts(label_name(name)), float(threshold)


def check_thresholds(label_thresholds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not isinstance(label_thresholds, list):
        raise DomainError("label_thresholds must be a list")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in label_thresholds:
        # Bad input gets a DomainError naming it, not a KeyError / AttributeError from below.
        if not isinstance(item, dict) or "name" not in item:
            raise DomainError(f'a label threshold must be {{"name": ..., "threshold": ...}}, got {item!r}')
        parts, threshold = check_threshold(item["name"], item.get("threshold"))
        if label_name(parts) in seen:
            raise DomainError(f"label {label_name(parts)!r} has two thresholds")
        seen.add(label_name(parts))
        out.append({"name": parts, "threshold": threshold})
    return out


def check_filter(comment_filter: Any) -> dict[str, Any]:
    """A comment filter in its stored form, or a ``DomainError`` saying what is wrong with it.

    ``{"user_properties": {"string:Country": {"one_of": ["uk"]}, "number:NPS": {"minimum": 7}},
    "sources": ["<source id>", ...], "timestamp": {"minimum": ISO, "maximum": ISO}}``, every
    key optional. Times are stored in UTC ISO form.
    """
    if comment_filter is None:
        return {}
    if not isinstance(comment_filter, dict):
        raise DomainError("comment_filter must be an object")
    unknown = set(comment_filter) - FILTER_KEYS
    if unknown:
        raise DomainError(f"comment_filter: unknown keys {sorted(unknown)}; known: {sorted(FILTER_KEYS)}")
    out: dict[str, Any] = {}
    if comment_filter.get("user_properties"):
        out["user_properties"] = _check_properties(comment_filter["user_properties"])
    if comment_filter.get("sources"):
        sources = comment_filter["sources"]
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise DomainError("comment_filter.sources must be a list of source ids")
        out["sources"] = sorted(set(sources))
    if comment_filter.get("timestamp"):
        out["timestamp"] = _check_range(comment_filter["timestamp"])
    return out


def _check_properties(properties: Any) -> dict[str, Any]:
    if not isinstance(properties, dict):
        raise DomainError("comment_filter.user_properties must be an object")
    out: dict[str, Any] = {}
    for key, condition in properties.items():
        where = f"comment_filter.user_properties.{key}"
        kind, sep, name = str(key).partition(":")
        if not sep or kind not in ("string", "number") or not name:
            raise DomainError(f'{where}: a property name must be "string:NAME" or "number:NAME"')
        if not isinstance(condition, dict) or not condition or set(condition) - PROPERTY_CONDITIONS:
            raise DomainError(f"{where}: give one or more of {sorted(PROPERTY_CONDITIONS)}")
        checked: dict[str, Any] = {}
        for op in ("one_of", "not_one_of"):
            if op in condition:
                values = condition[op]
                if not isinstance(values, list) or not all(_property_value(kind, v) for v in values):
                    raise DomainError(f"{where}.{op}: must be a list of {kind} values")
                checked[op] = values
        for op in ("minimum", "maximum"):
            if op in condition:
                if not _property_value("number", condition[op]):
                    raise DomainError(f"{where}.{op}: must be a number")
                checked[op] = condition[op]
        out[key] = checked
    return out


def _property_value(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_range(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or set(value) - {"minimum", "maximum"}:
        raise DomainError('comment_filter.timestamp must be {"minimum": ISO time, "maximum": ISO time}')
    out = {}
    for op in ("minimum", "maximum"):
        if value.get(op) is not None:
            try:
                out[op] = parse_timestamp(value[op], f"comment_filter.timestamp.{op}").isoformat()
            except CommentError as exc:
                raise DomainError(str(exc)) from None
    return out


# --- which messages a stream delivers, and with which labels ------------------------------------------------------


@dataclass(frozen=True)
class StreamRules:
    """What decides a stream's content besides the predictions: thresholds, filter, delivery rule."""

    #: Label name in string form (``Billing > Refund``) to its threshold.
    thresholds: Mapping[str, float] = field(default_factory=dict)
    comment_filter: Mapping[str, Any] = field(default_factory=dict)
    deliver_all_filtered: bool = False

    @classmethod
    def of(
        cls, label_thresholds: list[dict[str, Any]], comment_filter: Mapping[str, Any], deliver_all_filtered: bool
    ) -> StreamRules:
        thresholds = {label_name(item["name"]): float(item["threshold"]) for item in label_thresholds}
        return cls(thresholds, dict(comment_filter), deliver_all_filtered)


def passes_filter(comment: Mapping[str, Any], source_id: str, comment_filter: Mapping[str, Any]) -> bool:
    """Whether a comment of ``source_id`` passes a (checked) comment filter."""
    sources = comment_filter.get("sources")
    if sources and source_id not in sources:
        return False
    span = comment_filter.get("timestamp")
    if span:
        moment = parse_timestamp(comment["timestamp"], "timestamp")
        if "minimum" in span and moment < datetime.fromisoformat(span["minimum"]):
            return False
        if "maximum" in span and moment > datetime.fromisoformat(span["maximum"]):
            return False
    properties = comment.get("user_properties") or {}
    conditions = comment_filter.get("user_properties", {})
    return all(_meets(properties.get(key), condition) for key, condition in conditions.items())


def _meets(value: Any, condition: Mapping[str, Any]) -> bool:
    """A property's value against its condition; a missing value fails all but ``not_one_of``."""
    if "not_one_of" in condition and value in condition["not_one_of"]:
        return False
    if value is None:
        return set(condition) <= {"not_one_of"}
    if "one_of" in condition and value not in condition["one_of"]:
        return False
    if "minimum" in condition and not (_number(value) and value >= condition["minimum"]):
        return False
    return not ("maximum" in condition and not (_number(value) and value <= condition["maximum"]))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def labels_returned(probabilities: Mapping[str, float], thresholds: Mapping[str, float]) -> list[dict[str, Any]]:
    """The stream's labels whose probability meets their threshold, in the reference's shape.

    ``[{"name": ["Billing", "Refund"], "probability": 0.93}]``, most probable first (ties by name),
    so two evaluations of the same prediction give the same list.
    """
    # Walk the (sparse) probabilities rather than the thresholds: a prediction keeps a handful of
    # labels, a stream has up to hundreds, and this runs once per message per stream. A label
    # the prediction leaves out has probability 0, which meets only a threshold of 0.
    met = [
        (name, float(probability))
        for name, probability in probabilities.items()
        if name in thresholds and float(probability) >= thresholds[name]
    ]
    met += [(name, 0.0) for name, threshold in thresholds.items() if threshold <= 0 and name not in probabilities]
    met.sort(key=lambda item: (-item[1], item[0]))
    return [{"name": label_parts(name), "probability": probability} for name, probability in met]


def qualifies(
    comment: Mapping[str, Any], source_id: str, probabilities: Mapping[str, float], rules: StreamRules
) -> bool:
    """Whether a message enters the stream: it passes the filter and (unless the stream delivers
    every filtered message) at least one of the stream's labels meets its threshold."""
    if not passes_filter(comment, source_id, rules.comment_filter):
        return False
    return rules.deliver_all_filtered or bool(labels_returned(probabilities, rules.thresholds))


# --- the aggregate -------------------------------------------------------------------------------------------------


def parse_sequence_id(sequence_id: Any) -> int:
    """A stream sequence id (a decimal string, as fetch hands it out) as its number."""
    text = str(sequence_id).strip()
    if not text.isdigit() or len(text) > 18:
        raise DomainError(f"invalid sequence_id {sequence_id!r}: use one that fetch returned")
    return int(text)


class Stream(Aggregate):
    prefix = "stream:"
    #: Every robot's advance is an event of its stream.
    snapshot_every = 100

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.dataset_id, _, self.name = aggregate_id.removeprefix(self.prefix).partition("/")
        self.stream_id = ""
        self.model_version: int | None = None
        self.thresholds: dict[str, float] = {}
        self.delivery = "fetch"
        self.deleted = False
        #: The highest sequence id advanced to; an advance that does not pass it records nothing.
        self.cursor = 0
        self.exceptions: dict[str, str] = {}

    @property
    def live(self) -> bool:
        return self.exists and not self.deleted

    def _require_live(self) -> None:
        if not self.live:
            raise NotFound(f"stream {self.name!r} does not exist in this dataset")

    def create(
        self,
        *,
        stream_id: str,
        model_version: int | None,
        label_thresholds: list[dict[str, Any]],
        comment_filter: dict[str, Any] | None = None,
        title: str = "",
        description: str = "",
        deliver_all_filtered: bool = False,
        delivery: str = "fetch",
        actor: str,
    ) -> None:
        check_resource_name("stream", self.name)
        if self.live:
            raise AlreadyExists(f"stream {self.name!r} exists already in this dataset")
        if delivery not in DELIVERY_MODES:
            raise DomainError(f"delivery must be one of {', '.join(DELIVERY_MODES)}, got {delivery!r}")
        if len(title) > 128:
            raise DomainError("a stream title is at most 128 characters")
        self.record(
            StreamCreated,
            actor,
            stream_id=stream_id,
            dataset_id=self.dataset_id,
            name=self.name,
            title=title or self.name,
            description=description,
            model_version=model_version,
            label_thresholds=check_thresholds(label_thresholds),
            comment_filter=check_filter(comment_filter),
            deliver_all_filtered=bool(deliver_all_filtered),
            delivery=delivery,
        )

    def change_threshold(self, label: str | list[str], threshold: float | int, *, actor: str) -> bool:
        """Set one label's threshold (adding the label to the stream if new); False if unchanged."""
        self._require_live()
        parts, value = check_threshold(label, threshold)
        previous = self.thresholds.get(label_name(parts))
        if previous == value:
            return False
        self.record(ThresholdChanged, actor, stream_id=self.stream_id, label=parts, threshold=value, previous=previous)
        return True

    def change_model_version(self, version: int, *, known_versions: set[int], actor: str) -> bool:
        """Pin another model version; ``known_versions`` are the dataset's trained ones."""
        self._require_live()
        if isinstance(version, bool) or not isinstance(version, int) or version not in known_versions:
            raise NotFound(f"the dataset has no model version {version!r}")
        if version == self.model_version:
            return False
        self.record(
            StreamModelChanged, actor, stream_id=self.stream_id, model_version=version, previous=self.model_version
        )
        return True

    def advance(self, sequence_id: str, *, actor: str) -> bool:
        """Move the cursor past ``sequence_id``; an advance to where it is already records nothing,
        so a robot repeating its advance after a lost answer does no harm."""
        self._require_live()
        number = parse_sequence_id(sequence_id)
        if number <= self.cursor:
            return False
        self.record(StreamAdvanced, actor, stream_id=self.stream_id, sequence_id=str(number))
        return True

    def reset(self, to_comment_created_at: str | datetime, *, actor: str) -> None:
        self._require_live()
        try:
            moment = parse_timestamp(to_comment_created_at, "to_comment_created_at")
        except CommentError as exc:
            raise DomainError(str(exc)) from None
        self.record(StreamReset, actor, stream_id=self.stream_id, to_comment_created_at=moment.isoformat())

    def report_exception(self, uid: str, exception_type: str, *, actor: str) -> bool:
        """Tag a comment as an exception of this stream; False if it has that tag already."""
        self._require_live()
        _check_uid(uid)
        if not isinstance(exception_type, str) or len(exception_type) > MAX_EXCEPTION_TYPE:
            raise DomainError(f"an exception type is a string of at most {MAX_EXCEPTION_TYPE} characters")
        if self.exceptions.get(uid) == exception_type:
            return False
        self.record(ExceptionReported, actor, stream_id=self.stream_id, uid=uid, exception_type=exception_type)
        return True

    def clear_exception(self, uid: str, *, actor: str) -> bool:
        self._require_live()
        _check_uid(uid)
        if uid not in self.exceptions:
            return False
        self.record(ExceptionCleared, actor, stream_id=self.stream_id, uid=uid)
        return True

    def delete(self, *, actor: str) -> None:
        self._require_live()
        self.record(StreamDeleted, actor, stream_id=self.stream_id)

    def state(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "model_version": self.model_version,
            "thresholds": dict(self.thresholds),
            "delivery": self.delivery,
            "deleted": self.deleted,
            "cursor": self.cursor,
            "exceptions": dict(self.exceptions),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.stream_id = state["stream_id"]
        self.model_version = state["model_version"]
        self.thresholds = dict(state["thresholds"])
        self.delivery = state["delivery"]
        self.deleted = state["deleted"]
        self.cursor = state["cursor"]
        self.exceptions = dict(state["exceptions"])

    def _on_StreamCreated(self, event: StreamCreated) -> None:
        self.stream_id = event.stream_id
        self.model_version = event.model_version
        self.thresholds = {label_name(t["name"]): t["threshold"] for t in event.label_thresholds}
        self.delivery = event.delivery
        self.deleted = False
        self.cursor = 0
        self.exceptions = {}

    def _on_ThresholdChanged(self, event: ThresholdChanged) -> None:
        self.thresholds[label_name(event.label)] = event.threshold

    def _on_StreamModelChanged(self, event: StreamModelChanged) -> None:
        self.model_version = event.model_version

    def _on_StreamAdvanced(self, event: StreamAdvanced) -> None:
        self.cursor = max(self.cursor, int(event.sequence_id))

    def _on_ExceptionReported(self, event: ExceptionReported) -> None:
        self.exceptions[event.uid] = event.exception_type

    def _on_ExceptionCleared(self, event: ExceptionCleared) -> None:
        self.exceptions.pop(event.uid, None)

    def _on_StreamDeleted(self, event: StreamDeleted) -> None:
        self.deleted = True


def _check_uid(uid: Any) -> None:
    if not isinstance(uid, str) or "." not in uid or len(uid) > 1100:
        raise DomainError(f"invalid comment uid {uid!r}: use <source id>.<comment id>")

"""The Communications Mining comment: validation against the reference limits, and normalisation.

A comment is what a source holds: an id, a business timestamp, an optional thread, one or more
messages (from / to / cc / bcc / subject / body / signature / sent_at / language), typed user
properties (``string:X``, ``number:Y``) and attachment metadata. ``normalise_comment`` returns a
canonical dict (timestamps in UTC ISO-8601, blank string properties dropped, absent optionals
left out) so that the content hash says exactly whether a re-sent comment changed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from commine.domain.errors import CommentError

MAX_ID_LENGTH = 1024
MAX_TEXT_LENGTH = 65536
MAX_ADDRESS_LENGTH = 512
MAX_LANGUAGE_LENGTH = 8
MAX_ATTACHMENT_FIELD = 256
MAX_PROPERTY_NAME = 256
MAX_PROPERTY_VALUE = 65536

_COMMENT_KEYS = {"id", "timestamp", "thread_id", "messages", "user_properties", "attachments", "text_format"}
_MESSAGE_KEYS = {"body", "subject", "signature", "from", "to", "cc", "bcc", "sent_at", "language"}
_TEXT_KEYS = {"text", "translated_from", "text_markup"}
_ATTACHMENT_KEYS = {"name", "size", "content_type", "attachment_reference", "content_hash"}


def parse_timestamp(value: Any, field: str) -> datetime:
    """An RFC 3339 / ISO-8601 time as an aware UTC datetime; naive times are taken as UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip().replace("z", "Z"))
        except ValueError:
            raise CommentError(field, f"not an ISO-8601 / RFC 3339 time: {value!r}") from None
    else:
        raise CommentError(field, "a time is required (ISO-8601, e.g. 2024-05-01T09:30:00Z)")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
        raise CommentError(field, f"time out of range once converted to UTC: {value!r}") from None


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _string(value: Any, field: str, limit: int, *, required: bool = False) -> str | None:
    if value is None or (value == "" and not required):
        if required:
            raise CommentError(field, "is required")
        return None
    if not isinstance(value, str):
        raise CommentError(field, f"must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise CommentError(field, f"is {len(value)} characters long; at most {limit}")
    _storable(value, field)
    return value


def _storable(value: str, field: str) -> None:
    """Reject text that UTF-8 or PostgreSQL cannot hold.

    A lone surrogate (``json.loads('"\\ud800"')`` makes one) cannot be encoded as UTF-8, so the
    content hash would crash on it; PostgreSQL's jsonb refuses U+0000, so the append would fail
    there while SQLite took it. Both are bad input and get a clear error here instead.
    """
    if "\x00" in value:
        raise CommentError(field, "contains a NUL character (U+0000), which cannot be stored")
    if value.isascii():  # the common case, and it needs no encoding to know
        return
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise CommentError(field, f"is not valid Unicode (lone surrogate at character {exc.start})") from None


def _reject_unknown(data: dict[str, Any], allowed: set[str], field: str) -> None:
    if allowed.issuperset(data):
        return
    unknown = set(data) - allowed
    if unknown:
        raise CommentError(field, f"unknown field(s): {', '.join(sorted(unknown))}")


def _comment_id(value: Any) -> str:
    ident = _string(value, "id", MAX_ID_LENGTH, required=True)
    if ident is None or not ident.strip():
        raise CommentError("id", "is required and may not be blank")
    if not ident.isascii() or not ident.isprintable():
        raise CommentError("id", "must be printable ASCII")
    return ident


def _text_block(value: Any, field: str, *, required: bool) -> dict[str, str] | None:
    if value is None:
        if required:
            raise CommentError(f"{field}.text", "is required")
        return None
    if isinstance(value, str):
        value = {"text": value}
    if not isinstance(value, dict):
        raise CommentError(field, 'must be an object like {"text": "..."}')
    _reject_unknown(value, _TEXT_KEYS, field)
    text = _string(value.get("text"), f"{field}.text", MAX_TEXT_LENGTH, required=required)
    if text is None:
        return None
    block = {"text": text}
    for key in ("translated_from", "text_markup"):
        if value.get(key) is not None:  # field names are only built when there is something to check
            extra = _string(value[key], f"{field}.{key}", MAX_TEXT_LENGTH)
            if extra is not None:
                block[key] = extra
    return block


def _addresses(value: Any, field: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise CommentError(field, "must be a list of addresses")
    out = []
    for i, address in enumerate(value):
        checked = _string(address, f"{field}[{i}]", MAX_ADDRESS_LENGTH)
        if checked is not None:
            out.append(checked)
    return out or None


def _message(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CommentError(field, "must be an object")
    _reject_unknown(value, _MESSAGE_KEYS, field)
    message: dict[str, Any] = {"body": _text_block(value.get("body"), f"{field}.body", required=True)}
    for key in ("subject", "signature"):
        if value.get(key) is not None:
            block = _text_block(value[key], f"{field}.{key}", required=False)
            if block is not None:
                message[key] = block
    if value.get("from") is not None:
        sender = _string(value["from"], f"{field}.from", MAX_ADDRESS_LENGTH)
        if sender is not None:
            message["from"] = sender
    for key in ("to", "cc", "bcc"):
        if value.get(key) is not None:
            addresses = _addresses(value[key], f"{field}.{key}")
            if addresses is not None:
                message[key] = addresses
    if value.get("sent_at") not in (None, ""):
        message["sent_at"] = format_timestamp(parse_timestamp(value["sent_at"], f"{field}.sent_at"))
    if value.get("language") is not None:
        language = _string(value["language"], f"{field}.language", MAX_LANGUAGE_LENGTH)
        if language is not None:
            message["language"] = language
    return message


def _finite(number: int | float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an int too large for a float
        return False


def _canonical_number(number: int | float) -> int | float:
    """The form of a number that reads back the same from every store.

    PostgreSQL's jsonb keeps numbers as decimals, so -0.0 comes back as 0.0; and JSON codecs
    hold integers in 64 bits, so a larger one is kept as the float it reads back as anyway.
    Normalising here keeps a comment's content hash the same after a round trip.
    """
    if isinstance(number, float) and number == 0:
        return 0.0
    if isinstance(number, int) and not -(2**63) <= number < 2**63:
        return float(number)
    return number


def _user_properties(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CommentError("user_properties", "must be an object")
    out: dict[str, Any] = {}
    for key, item in value.items():
        field = f"user_properties.{key}"
        kind, sep, name = str(key).partition(":")
        if not sep or kind not in ("string", "number") or not name:
            raise CommentError(field, 'a property name must be "string:NAME" or "number:NAME"')
        if len(name) > MAX_PROPERTY_NAME:
            raise CommentError(field, f"property name longer than {MAX_PROPERTY_NAME} characters")
        _storable(name, field)
        if kind == "string":
            text = _string(item, field, MAX_PROPERTY_VALUE)
            if text is not None and text.strip():
                out[key] = text
        else:
            if isinstance(item, bool) or not isinstance(item, int | float) or not _finite(item):
                raise CommentError(field, f"must be a finite number, got {str(item)[:40]}")
            out[key] = _canonical_number(item)
    return out


def _attachments(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise CommentError("attachments", "must be a list")
    out = []
    for i, item in enumerate(value):
        field = f"attachments[{i}]"
        if not isinstance(item, dict):
            raise CommentError(field, "must be an object")
        _reject_unknown(item, _ATTACHMENT_KEYS, field)
        size = item.get("size", 0)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise CommentError(f"{field}.size", "must be a whole number of bytes, 0 or more")
        attachment: dict[str, Any] = {"size": size}
        for key in ("name", "content_type"):
            text = _string(item.get(key), f"{field}.{key}", MAX_ATTACHMENT_FIELD, required=True)
            attachment[key] = text
        for key in ("attachment_reference", "content_hash"):
            text = _string(item.get(key), f"{field}.{key}", MAX_ID_LENGTH)
            if text is not None:
                attachment[key] = text
        out.append(attachment)
    return out


def normalise_comment(raw: Any) -> dict[str, Any]:
    """Check a comment against the reference rules and return its canonical form.

    Raises:
      CommentError: naming the field and what is wrong with it.
    """
    if not isinstance(raw, dict):
        raise CommentError("comment", "must be a JSON object")
    _reject_unknown(raw, _COMMENT_KEYS, "comment")
    comment: dict[str, Any] = {
        "id": _comment_id(raw.get("id")),
        "timestamp": format_timestamp(parse_timestamp(raw.get("timestamp"), "timestamp")),
    }
    thread = _string(raw.get("thread_id"), "thread_id", MAX_ID_LENGTH)
    if thread is not None:
        comment["thread_id"] = thread
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages:
        raise CommentError("messages", "at least one message is required")
    comment["messages"] = [_message(m, f"messages[{i}]") for i, m in enumerate(messages)]
    properties = _user_properties(raw.get("user_properties"))
    if properties:
        comment["user_properties"] = properties
    attachments = _attachments(raw.get("attachments"))
    if attachments:
        comment["attachments"] = attachments
    text_format = raw.get("text_format")
    if text_format not in (None, "plain", "markdown"):
        raise CommentError("text_format", 'must be "plain" or "markdown"')
    if text_format == "markdown":
        comment["text_format"] = text_format
    return comment


#: Turns a comment's canonical bytes into its content hash: a keyed one (HMAC under the source's
#: hash key, ``Cipher.content_hasher``) where the keys are at hand.
Hasher = Callable[[bytes], str]


def canonical(comment: dict[str, Any]) -> bytes:
    """The canonical JSON of a normalised comment: the same bytes for the same content.

    The bytes are the stdlib's ``json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)``, as every stored content hash was made from them. orjson writes the very
    same bytes, nine times quicker (2 µs against 18 µs for a comment of 1 KB), for everything but
    some floats (``1e+16`` against ``1e16``). In a normalised comment floats only occur among the
    ``number:`` user properties, so a comment holding one, or an integer past 64 bits orjson
    refuses, goes through the stdlib.
    """
    properties = comment.get("user_properties")
    if not properties or not any(type(value) is float for value in properties.values()):
        try:
            return orjson.dumps(comment, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
    return json.dumps(comment, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(comment: dict[str, Any], hasher: Hasher | None = None) -> str:
    """``hasher`` of the canonical JSON of a normalised comment; plain SHA-256 without one (the
    hash of messages stored before hashes were keyed)."""
    data = canonical(comment)
    return hasher(data) if hasher is not None else hashlib.sha256(data).hexdigest()

"""CSV upload of comments, following the Communications Mining (UiPath) CSV conventions.

A CSV file has a header row, comma or tab as delimiter, optionally double-quoted fields (which
may span several lines) and is encoded as UTF-8 (with or without BOM), UTF-16 or UTF-32. Each
record becomes a raw comment dict (the Communications Mining comment JSON) plus the labels of
its label columns. A bad record does not stop the upload: it is reported as a ``CsvError``
naming its physical line, the CSV column at fault and why, and every good record still goes
through as a ``CsvRow``. Only problems with the file as a whole (empty, a mapped column missing
from the header, too big) raise ``CsvFileError``.

The module does no I/O beyond reading the file it is given; validation is delegated to
``normalise_comment`` so that a CSV row and a JSON upload obey exactly the same rules.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from commine.domain.comment import normalise_comment
from commine.domain.errors import CommentError, DomainError
from commine.domain.names import label_name

#: The largest file accepted, in bytes; bigger uploads should be split.
MAX_FILE_BYTES = 128 * 1024 * 1024
#: Separator of several labels (or several ``to`` addresses) in one cell.
LABEL_SEPARATOR = ";"

_BAD_BYTES = "commine.csv_import.mark_bad_bytes"
#: A lone surrogate never comes out of a strict UTF-8/16/32 decode, so one in the decoded text
#: marks bytes that were not valid in the file's encoding.
_SURROGATE = re.compile("[\ud800-\udfff]")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_ADDRESS_SEPARATOR = re.compile(r"[;,]")


def _mark_bad_bytes(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: each undecodable byte becomes the lone surrogate U+DC00 + byte.

    Like ``surrogateescape``, but also for bytes below 0x80, which UTF-16 and UTF-32 can reject.
    The whole file is decoded at once and the rows holding such characters are reported.
    """
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start : error.end]
    return "".join(chr(0xDC00 + byte) for byte in bad), error.end


codecs.register_error(_BAD_BYTES, _mark_bad_bytes)


class CsvFileError(ValueError):
    """The file as a whole cannot be imported (empty, a mapped column missing, too big)."""


@dataclass(frozen=True)
class ColumnMapping:
    """Which CSV column feeds which part of a comment; ``None`` or empty means not imported.

    ``properties`` are user-property columns: a column named ``number:NPS`` or ``string:Country``
    keeps the type of its prefix, any other name ``X`` becomes the string property ``string:X``.
    ``labels`` are label columns, each cell holding labels separated by ``;``.
    """

    id: str = "id"
    timestamp: str = "timestamp"
    text: str = "text"
    subject: str | None = None
    sender: str | None = None
    to: str | None = None
    thread: str | None = None
    properties: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class CsvRow:
    """A good record: the raw comment (valid, but not normalised) and its canonical labels.

    ``line`` is the 1-based physical line of the file where the record starts (the header is
    line 1), so it points at the right place even after multi-line quoted fields.
    """

    line: int
    comment: dict[str, Any]
    labels: list[str]


@dataclass(frozen=True)
class CsvError:
    """A bad record: where it starts, which column is at fault (``None``: the whole row), and why."""

    line: int
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.column is None else f"line {self.line}, column {self.column!r}"
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class _Property:
    column: str
    key: str
    is_number: bool


@dataclass(frozen=True)
class _Plan:
    """The header resolved against the mapping: where each mapped column sits."""

    mapping: ColumnMapping
    header: tuple[str, ...]
    index: dict[str, int]
    properties: tuple[_Property, ...]
    encoding: str

    def column_of(self, field: str) -> str | None:
        """The CSV column a ``CommentError`` field path comes from; ``None`` if no column does."""
        mapping = self.mapping
        if field == "id":
            return mapping.id
        if field == "timestamp":
            return mapping.timestamp
        if field == "thread_id":
            return mapping.thread
        if field.startswith("messages[0].body"):
            return mapping.text
        if field.startswith("messages[0].subject"):
            return mapping.subject
        if field == "messages[0].from":
            return mapping.sender
        if field.startswith("messages[0].to"):
            return mapping.to
        if field.startswith("user_properties."):
            key = field.removeprefix("user_properties.")
            return next((p.column for p in self.properties if p.key == key), None)
        return None


def read_csv(
    source: str | os.PathLike[str] | bytes,
    mapping: ColumnMapping = ColumnMapping(),
) -> Iterator[CsvRow | CsvError]:
    """Read a CSV upload and yield, in file order, a ``CsvRow`` per good record and a ``CsvError``
    per problem of a bad one.

    ``source`` is a path to the file, or the file's bytes. The file is read and its header
    checked at once, so a ``CsvFileError`` is raised by this call, before any row is yielded;
    the records are then parsed and checked one at a time as the iterator is consumed.

    A bad record may give more than one ``CsvError`` (say a bad label and a bad timestamp); a
    record with an ``id`` already taken by an earlier good record is reported as a duplicate.
    Blank records are skipped silently.

    Raises:
      CsvFileError: the file is empty, over ``MAX_FILE_BYTES``, its header is not decodable, or
        a mapped column is missing from the header (or appears in it twice).
    """
    text, encoding = _decode(_read_bytes(source))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_detect_delimiter(text))
    del text  # the reader's StringIO holds its own copy
    header_line, header = _read_header(reader)
    plan = _plan(header_line, header, mapping, encoding)
    return _records(reader, plan)


def _read_bytes(source: str | os.PathLike[str] | bytes) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        size = os.stat(source).st_size
        if size > MAX_FILE_BYTES:
            raise CsvFileError(f"the file is {size:,} bytes; at most {MAX_FILE_BYTES:,} (128 MiB): split it")
        with open(source, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise CsvFileError(f"the file is over {MAX_FILE_BYTES:,} bytes (128 MiB): split it")
    return data


def _detect_encoding(data: bytes) -> tuple[str, str]:
    """The codec to decode ``data`` with, and the encoding's name for messages.

    A BOM decides; without one, the NUL bytes around an ASCII first character of the header
    betray UTF-32 or UTF-16; anything else is UTF-8. UTF-32 LE is tested before UTF-16 LE because
    its BOM starts with the UTF-16 LE one.
    """
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32", "UTF-32"
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", "UTF-8"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", "UTF-16"
    head = data[:4]
    if len(head) == 4 and head[:3] == b"\0\0\0" and head[3]:
        return "utf-32-be", "UTF-32"
    if len(head) == 4 and head[0] and head[1:] == b"\0\0\0":
        return "utf-32-le", "UTF-32"
    if len(head) >= 2 and not head[0] and head[1]:
        return "utf-16-be", "UTF-16"
    if len(head) >= 2 and head[0] and not head[1]:
        return "utf-16-le", "UTF-16"
    return "utf-8", "UTF-8"


def _decode(data: bytes) -> tuple[str, str]:
    """The whole file as text, undecodable bytes marked (see ``_mark_bad_bytes``), and its encoding."""
    codec, encoding = _detect_encoding(data)
    text = data.decode(codec, errors=_BAD_BYTES)
    if not text.strip():
        raise CsvFileError("the file is empty: a header row is required")
    # A field may legitimately be long (a body up to 65,536 characters is valid, and a longer one
    # must come back as a bad row rather than a parse failure), so lift the csv module's default
    # 128 KiB field limit to what a whole accepted file can hold. The limit is process-wide; it
    # is only ever raised here, never lowered.
    if csv.field_size_limit() < MAX_FILE_BYTES:
        csv.field_size_limit(MAX_FILE_BYTES)
    return text, encoding


def _detect_delimiter(text: str) -> str:
    """Tab if the header line has a tab and no comma outside quotes, else comma.

    Deterministic on purpose: ``csv.Sniffer`` guesses from the data and guesses wrong on files
    whose bodies are full of commas or tabs.
    """
    quoted = False
    started = False
    commas = tabs = 0
    for char in text:
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char in "\r\n":
            if started:
                break
            continue
        elif char == ",":
            commas += 1
        elif char == "\t":
            tabs += 1
        started = True
    return "\t" if tabs and not commas else ","


def _read_header(reader: Any) -> tuple[int, list[str]]:
    """The first non-blank record, with the line it is on; column names are stripped."""
    for cells in reader:
        if any(cell.strip() for cell in cells):
            return reader.line_num, [cell.strip() for cell in cells]
    raise CsvFileError("the file is empty: a header row is required")


def _property(column: str) -> _Property:
    kind, sep, name = column.partition(":")
    if sep and kind in ("string", "number") and name:
        return _Property(column, column, kind == "number")
    return _Property(column, f"string:{column}", False)


def _plan(line: int, header: list[str], mapping: ColumnMapping, encoding: str) -> _Plan:
    """Check the header against the mapping and say where each mapped column is."""
    listed = ", ".join(repr(name) for name in header)
    if any(_SURROGATE.search(name) for name in header):
        raise CsvFileError(f"the header (line {line}) is not valid {encoding}; the header has: {listed}")
    optional = (mapping.subject, mapping.sender, mapping.to, mapping.thread)
    wanted = [mapping.id, mapping.timestamp, mapping.text]
    wanted += [name for name in optional if name]
    wanted += [*mapping.properties, *mapping.labels]
    wanted = list(dict.fromkeys(wanted))
    missing = [name for name in wanted if name not in header]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        raise CsvFileError(f"column(s) {names} not found in the header; the header has: {listed}")
    twice = [name for name in wanted if header.count(name) > 1]
    if twice:
        names = ", ".join(repr(name) for name in twice)
        raise CsvFileError(f"column(s) {names} appear more than once in the header; the header has: {listed}")
    properties = tuple(_property(column) for column in dict.fromkeys(mapping.properties))
    keys: dict[str, str] = {}
    for prop in properties:
        if prop.key in keys:
            raise CsvFileError(
                f"property columns {keys[prop.key]!r} and {prop.column!r} both give the property {prop.key!r}"
            )
        keys[prop.key] = prop.column
    return _Plan(
        mapping=mapping,
        header=tuple(header),
        index={name: header.index(name) for name in wanted},
        properties=properties,
        encoding=encoding,
    )


def _records(reader: Any, plan: _Plan) -> Iterator[CsvRow | CsvError]:
    """Parse the records after the header one by one, keeping track of physical line numbers.

    ``reader.line_num`` counts the physical lines read so far, so a record starts on the line
    after the one its predecessor (or a skipped blank line) ended on.
    """
    first_seen: dict[str, int] = {}
    previous = reader.line_num
    while True:
        line = previous + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            previous = reader.line_num
            yield CsvError(line, None, f"cannot be read as CSV: {error}")
            continue
        previous = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        result = _convert(line, cells, plan)
        if not isinstance(result, CsvRow):
            yield from result
            continue
        ident = result.comment["id"]
        if ident in first_seen:
            reason = f"duplicate id {ident!r} (first seen on line {first_seen[ident]})"
            yield CsvError(line, plan.mapping.id, reason)
            continue
        first_seen[ident] = line
        yield result


def _undecodable(cell: str, encoding: str) -> str:
    bad = "".join(_SURROGATE.findall(cell))
    shown = " ".join(f"0x{ord(char) - 0xDC00:02X}" for char in bad[:8])
    more = " ..." if len(bad) > 8 else ""
    return (
        f"not valid {encoding}: byte(s) {shown}{more} cannot be decoded; "
        f"save the file as {encoding} (it is probably in another encoding)"
    )


def _parse_number(cell: str) -> int | float:
    """An integral number as ``int`` (``"12"``, ``"1e3"``, ``"4.0"``), any other as ``float``."""
    text = cell.strip()
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"not a number: {cell!r} (write it like 42, -3.5 or 1e6)")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{cell!r} is too large a number")
    if value.is_integer():
        return int(text) if text.lstrip("+-").isdigit() else int(value)
    return value


def _convert(line: int, cells: list[str], plan: _Plan) -> CsvRow | list[CsvError]:
    """One record as a validated raw comment with its labels, or every problem found in it."""
    if len(cells) != len(plan.header):
        return [CsvError(line, None, f"has {len(cells)} fields; the header has {len(plan.header)}")]
    decode_errors = [
        CsvError(line, name or None, _undecodable(value, plan.encoding))
        for name, value in zip(plan.header, cells, strict=True)
        if _SURROGATE.search(value)
    ]
    if decode_errors:
        return decode_errors

    mapping = plan.mapping

    def cell(column: str | None) -> str:
        return cells[plan.index[column]] if column else ""

    errors: list[CsvError] = []
    message: dict[str, Any] = {"body": {"text": cell(mapping.text)}}
    if cell(mapping.subject).strip():
        message["subject"] = {"text": cell(mapping.subject)}
    if cell(mapping.sender).strip():
        message["from"] = cell(mapping.sender).strip()
    addresses = [a.strip() for a in _ADDRESS_SEPARATOR.split(cell(mapping.to)) if a.strip()]
    if addresses:
        message["to"] = addresses
    ident = cell(mapping.id)
    comment: dict[str, Any] = {
        # A blank id cell is a missing id, not an id that happens to be empty.
        "id": ident if ident.strip() else None,
        "timestamp": cell(mapping.timestamp),
        "messages": [message],
    }
    if cell(mapping.thread).strip():
        comment["thread_id"] = cell(mapping.thread)
    properties: dict[str, Any] = {}
    for prop in plan.properties:
        value = cell(prop.column)
        if not value.strip():
            continue
        if not prop.is_number:
            properties[prop.key] = value
            continue
        try:
            properties[prop.key] = _parse_number(value)
        except ValueError as error:
            errors.append(CsvError(line, prop.column, str(error)))
    comment["user_properties"] = properties

    labels: list[str] = []
    for column in mapping.labels:
        for part in cell(column).split(LABEL_SEPARATOR):
            if not part.strip():
                continue
            try:
                name = label_name(part)
            except DomainError as error:
                errors.append(CsvError(line, column, str(error)))
                continue
            if name not in labels:
                labels.append(name)

    try:
        normalise_comment(comment)
    except CommentError as error:
        errors.append(CsvError(line, plan.column_of(error.field), error.reason))
    if errors:
        return errors
    return CsvRow(line=line, comment=comment, labels=labels)

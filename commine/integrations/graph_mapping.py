"""A Microsoft Graph mail message (its JSON) as a Communications Mining comment: pure, no I/O.

The input is Graph's JSON for a message, not the SDK's ``Message`` model: the sync reads delta
pages through the SDK's request builders and adapter but takes the body as bytes, because the
SDK's model deserialisation costs about 10 ms a message (msgraph-sdk-python issue #584), which
alone would cap a sync at ~100 messages a second.

What maps where:

* ``id``: the RFC 5322 ``Message-ID`` (Graph's ``internetMessageId``, angle brackets dropped). It is
  the same in every folder and every mailbox, so one mail seen in two mailboxes of a source, or moved
  between folders, stays one comment. A Message-ID that is not printable ASCII, or too long, becomes
  ``sha256-<hex>`` of itself; a message without one (a draft) uses ``graph-<immutable id>``.
* ``thread_id``: ``conversationId``; ``timestamp``: ``receivedDateTime`` (else sent, else created).
* the one message: ``from`` / ``to`` / ``cc`` / ``bcc`` addresses, ``subject``, ``sent_at``, and the
  body as readable text (HTML converted), with the quoted reply history and the signature taken out
  when their markup or layout shows where they start. The signature goes to ``signature``; the
  quoted history, which the comment schema has no message field for, to ``string:Quoted reply``.
* user properties ``string:Folder`` (the folder's path, e.g. ``Inbox/Claims``), ``string:Mailbox``,
  ``string:Categories`` (sorted, ``, `` between them);
* attachment metadata (name, size, content type, Graph id as ``attachment_reference``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

MAX_ID = 1024
MAX_TEXT = 65536
FOLDER = "string:Folder"
MAILBOX = "string:Mailbox"
CATEGORIES = "string:Categories"
QUOTED = "string:Quoted reply"
#: The properties a later sighting of a comment (a move, a new category) may change.
LOCATION_PROPERTIES = (FOLDER, MAILBOX, CATEGORIES)

#: The timestamp of a message Graph gives no time for (never seen in practice): fixed, so a re-sync
#: of it changes nothing.
EPOCH = "1970-01-01T00:00:00Z"
BODY, QUOTE, SIGNATURE = "body", "quote", "signature"

#: Elements whose id or class marks the quoted history (Outlook, OWA, Gmail, Apple Mail, Thunderbird).
_QUOTE_MARKERS = re.compile(
    r"^(gmail_quote|gmail_extra|moz-cite-prefix|yahoo_quoted|mail-editor-reference-message-container)$", re.I
)
#: Outlook's reply header: it and everything after it, to the end of the document, is history.
_HISTORY_MARKERS = re.compile(r"^(x_)?(divRplyFwdMsg|appendonsend|OutlookMessageHeader)$", re.I)
_SIGNATURE_MARKERS = re.compile(r"^(x_)?(signature|gmail_signature|moz-signature|ms-outlook-signature)$", re.I)
_BLOCK = {
    "p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote",
    "pre", "hr", "section", "article", "header", "footer",
}  # fmt: skip
_SKIP = {"style", "script", "head", "title", "xml", "o:p"}
_VOID = {"br", "hr", "img", "meta", "link", "input", "col", "area", "base", "wbr"}

#: Plain-text lines that start the quoted history.
_QUOTE_HEADER = re.compile(
    r"^\s*(-{2,}\s*Original Message\s*-{2,}|-{2,}\s*Forwarded message\s*-{2,}|_{10,}\s*$|"
    r"On .{3,200} wrote:\s*$|Le .{3,200} a écrit\s*:\s*$|Am .{3,200} schrieb .{0,200}:\s*$|"
    r"(From|Von|De|Van)\s*:\s.+$)",
    re.I,
)
_SIGNATURE_START = re.compile(r"^(-- ?|—)$")


class _Splitter(HTMLParser):
    """Collects an HTML body's text into the body, quote and signature parts as the markup marks them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: dict[str, list[str]] = {BODY: [], QUOTE: [], SIGNATURE: []}
        self._stack: list[tuple[str, str | None]] = []  # (tag, the part it opened, if any)
        self._skip = 0
        self._pre = 0

    def _part(self) -> str:
        for _, part in reversed(self._stack):
            if part is not None:
                return part
        return BODY

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        if tag in _BLOCK:
            self.parts[self._part()].append("\n")
        elif tag in ("td", "th"):
            self.parts[self._part()].append(" ")
        if tag == "pre":
            self._pre += 1
        if tag == "img":
            alt = dict(attrs).get("alt")
            if alt and not (dict(attrs).get("src") or "").startswith("cid:"):
                self.parts[self._part()].append(f" {alt} ")
        names = [dict(attrs).get("id") or "", *(dict(attrs).get("class") or "").split()]
        if self._part() == BODY and any(_HISTORY_MARKERS.match(name) for name in names if name):
            self._stack.insert(0, ("#history", QUOTE))  # never closed: the rest is history
        if tag in _VOID:
            return
        self._stack.append((tag, self._opens(tag, names)))

    def _opens(self, tag: str, names: list[str]) -> str | None:
        if self._part() != BODY:
            return None
        if tag == "blockquote" or any(_QUOTE_MARKERS.match(name) for name in names if name):
            return QUOTE
        if any(_SIGNATURE_MARKERS.match(name) for name in names if name):
            return SIGNATURE
        return None

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP and self._skip:
            self._skip -= 1
        if tag == "pre" and self._pre:
            self._pre -= 1
        if tag in _BLOCK:
            self.parts[self._part()].append("\n")
        for index in range(len(self._stack) - 1, -1, -1):
            if self._stack[index][0] == tag:
                del self._stack[index:]
                break

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if not self._pre:
            data = re.sub(r"[ \t\r\n\f\u00a0]+", " ", data)
        if self._part() == BODY and self._quote_starts_here(data):
            self._stack.insert(0, ("#history", QUOTE))  # never closed: the rest is history
        self.parts[self._part()].append(data)

    def _quote_starts_here(self, data: str) -> bool:
        """An Outlook reply header in plain markup (``From: ...`` after a rule) starts the history."""
        if not _QUOTE_HEADER.match(data.strip()):  # the cheap test first: most text is no header
            return False
        body = "".join(self.parts[BODY]).rstrip(" ")
        return bool(body.strip()) and body.endswith("\n")


def tidy(text: str) -> str:
    """Lines stripped of trailing blanks, runs of blank lines folded to one, ends trimmed."""
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def split_html(html: str) -> dict[str, str]:
    """The readable text of an HTML body as ``{"body", "quote", "signature"}``."""
    parser = _Splitter()
    parser.feed(html)
    parser.close()
    parts = {name: tidy("".join(chunks)) for name, chunks in parser.parts.items()}
    if not parts[QUOTE] and not parts[SIGNATURE]:
        return split_text(parts[BODY])
    return parts


def split_text(text: str) -> dict[str, str]:
    """A plain-text body split at its quoted history (a reply header or ``>`` lines) and signature (``-- ``)."""
    lines = text.replace("\r\n", "\n").split("\n")
    quote_at = next(
        (i for i, line in enumerate(lines) if i and (_QUOTE_HEADER.match(line) or line.startswith(">"))), len(lines)
    )
    head, quote = lines[:quote_at], lines[quote_at:]
    signature_at = next((i for i, line in enumerate(head) if i and _SIGNATURE_START.match(line.rstrip())), len(head))
    return {
        BODY: tidy("\n".join(head[:signature_at])),
        QUOTE: tidy("\n".join(quote)),
        SIGNATURE: tidy("\n".join(head[signature_at + 1 :])),
    }


def comment_id(message: Mapping[str, Any]) -> str:
    """The comment id of a Graph message: its Message-ID, the same in every mailbox and folder."""
    internet_id = str(message.get("internetMessageId") or "").strip()
    if internet_id.startswith("<") and internet_id.endswith(">"):
        internet_id = internet_id[1:-1].strip()
    if internet_id and internet_id.isascii() and internet_id.isprintable() and len(internet_id) <= MAX_ID:
        return internet_id
    if internet_id:
        return "sha256-" + hashlib.sha256(internet_id.encode()).hexdigest()
    return f"graph-{message.get('id')}"[:MAX_ID]


def _address(recipient: Any) -> str | None:
    email = recipient.get("emailAddress") if isinstance(recipient, dict) else None
    if not isinstance(email, dict):
        return None
    return str(email.get("address") or email.get("name") or "").strip() or None


def _addresses(recipients: Any) -> list[str]:
    return [a for a in (_address(r) for r in recipients or []) if a]


def _time(value: Any) -> str | None:
    """Graph's ISO-8601 time as the comment's UTC form (``...Z``); None if absent or unreadable."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def body_parts(message: Mapping[str, Any]) -> dict[str, str]:
    """The body as text parts; HTML converted, plain text split by its layout."""
    body = message.get("body") or {}
    content = str(body.get("content") or "")
    kind = str(body.get("contentType") or "").lower()
    if kind == "html" or (not kind and "<" in content and ">" in content):
        return split_html(content)
    return split_text(content)


def _clip(text: str) -> str:
    return text[:MAX_TEXT]


def attachment_metadata(attachments: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    out = []
    for attachment in attachments or []:
        size = attachment.get("size")
        item: dict[str, Any] = {
            "name": str(attachment.get("name") or "unnamed")[:256],
            "size": max(size, 0) if isinstance(size, int) and not isinstance(size, bool) else 0,
            "content_type": str(attachment.get("contentType") or "application/octet-stream")[:256],
        }
        if attachment.get("id"):
            item["attachment_reference"] = str(attachment["id"])[:MAX_ID]
        out.append(item)
    return out


def map_message(
    message: Mapping[str, Any],
    *,
    mailbox: str,
    folder: str,
    attachments: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The comment for the Graph message (its JSON) seen in ``mailbox`` under the folder path ``folder``."""
    parts = body_parts(message)
    text = parts[BODY] or parts[QUOTE] or parts[SIGNATURE]
    item: dict[str, Any] = {"body": {"text": _clip(text) or "(empty)"}}
    if message.get("subject"):
        item["subject"] = {"text": _clip(str(message["subject"]))}
    if parts[SIGNATURE] and text is not parts[SIGNATURE]:
        item["signature"] = {"text": _clip(parts[SIGNATURE])}
    sender = _address(message.get("from")) or _address(message.get("sender"))
    if sender:
        item["from"] = sender[:512]
    for key, field in (("to", "toRecipients"), ("cc", "ccRecipients"), ("bcc", "bccRecipients")):
        found = [a[:512] for a in _addresses(message.get(field))]
        if found:
            item[key] = found
    sent = _time(message.get("sentDateTime"))
    if sent:
        item["sent_at"] = sent
    properties = {FOLDER: folder, MAILBOX: mailbox}
    categories = [str(c) for c in message.get("categories") or [] if str(c).strip()]
    if categories:
        properties[CATEGORIES] = ", ".join(sorted(categories))
    if parts[QUOTE] and text is not parts[QUOTE]:
        properties[QUOTED] = _clip(parts[QUOTE])
    times = (message.get(name) for name in ("receivedDateTime", "sentDateTime", "createdDateTime"))
    comment: dict[str, Any] = {
        "id": comment_id(message),
        "timestamp": next((t for t in map(_time, times) if t), EPOCH),
        "messages": [item],
        "user_properties": properties,
    }
    if message.get("conversationId"):
        comment["thread_id"] = str(message["conversationId"])[:MAX_ID]
    found_attachments = attachment_metadata(attachments if attachments is not None else message.get("attachments"))
    if found_attachments:
        comment["attachments"] = found_attachments
    return comment


def relocate(stored: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """``stored`` with the location properties of ``fresh``: a move never rewrites the text."""
    properties = {k: v for k, v in (stored.get("user_properties") or {}).items() if k not in LOCATION_PROPERTIES}
    for key in LOCATION_PROPERTIES:
        value = (fresh.get("user_properties") or {}).get(key)
        if value:
            properties[key] = value
    return {**stored, "user_properties": properties}

"""Graph message -> comment mapping: ids, addresses, times, properties, and HTML bodies to clean text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from commine.domain.comment import normalise_comment
from commine.integrations.graph_mapping import (
    CATEGORIES,
    FOLDER,
    MAILBOX,
    QUOTED,
    comment_id,
    map_message,
    relocate,
    split_html,
    split_text,
)


def parse(data: dict[str, Any]) -> dict[str, Any]:
    """A Graph message as it comes off the wire: JSON."""
    return json.loads(json.dumps(data))


def graph_message(html: str, **extra: Any) -> dict[str, Any]:
    data = {
        "id": "AAMkAGI2",
        "internetMessageId": "<CAF=abc.123@mail.example.com>",
        "conversationId": "AAQkAGI2-conv",
        "subject": "Refund for order 42",
        "body": {"contentType": "html", "content": html},
        "from": {"emailAddress": {"name": "Ann Customer", "address": "ann@example.com"}},
        "toRecipients": [{"emailAddress": {"address": "claims@contoso.com"}}],
        "ccRecipients": [{"emailAddress": {"address": "team@contoso.com"}}],
        "bccRecipients": [{"emailAddress": {"address": "audit@contoso.com"}}],
        "sentDateTime": "2024-05-01T09:29:00Z",
        "receivedDateTime": "2024-05-01T11:30:00+02:00",
        "categories": ["Urgent", "Billing"],
    }
    data.update(extra)
    return parse(data)


OUTLOOK_REPLY = """<html><head><style>p {margin:0}</style></head><body dir="ltr">
<div style="font-family:Calibri">Hello team,<br><br>please refund order&nbsp;42 &amp; confirm.</div>
<div><img src="cid:image001.png@01DA0000" alt="logo"></div>
<div id="Signature"><p>Jane Doe<br>Claims handler</p></div>
<div id="appendonsend"></div>
<hr style="display:inline-block;width:98%">
<div id="divRplyFwdMsg" dir="ltr"><b>From:</b> Bob &lt;bob@contoso.com&gt;<br><b>Sent:</b> Monday</div>
<div>Your claim was received.</div>
</body></html>"""


def test_a_graph_message_maps_to_a_valid_comment_with_every_field_in_its_place() -> None:
    comment = map_message(graph_message(OUTLOOK_REPLY), mailbox="claims@contoso.com", folder="Inbox/Claims")
    assert normalise_comment(comment) == comment  # already canonical: a re-sync hashes the same
    assert comment["id"] == "CAF=abc.123@mail.example.com"
    assert comment["thread_id"] == "AAQkAGI2-conv"
    assert comment["timestamp"] == "2024-05-01T09:30:00Z"  # received time, in UTC
    message = comment["messages"][0]
    assert message["from"] == "ann@example.com"
    assert (message["to"], message["cc"], message["bcc"]) == (
        ["claims@contoso.com"],
        ["team@contoso.com"],
        ["audit@contoso.com"],
    )
    assert message["subject"] == {"text": "Refund for order 42"}
    assert message["sent_at"] == "2024-05-01T09:29:00Z"
    assert message["body"] == {"text": "Hello team,\n\nplease refund order 42 & confirm."}
    assert message["signature"] == {"text": "Jane Doe\nClaims handler"}
    assert comment["user_properties"] == {
        FOLDER: "Inbox/Claims",
        MAILBOX: "claims@contoso.com",
        CATEGORIES: "Billing, Urgent",
        QUOTED: "From: Bob <bob@contoso.com>\nSent: Monday\n\nYour claim was received.",
    }


def test_the_id_is_the_message_id_so_the_same_mail_in_two_mailboxes_or_folders_is_one_comment() -> None:
    first = map_message(graph_message("<p>x</p>", id="AAMk-one"), mailbox="a@contoso.com", folder="Inbox")
    second = map_message(graph_message("<p>x</p>", id="AAMk-two"), mailbox="b@contoso.com", folder="Archive")
    assert first["id"] == second["id"] == "CAF=abc.123@mail.example.com"


@pytest.mark.parametrize(
    ("internet_id", "graph_id", "expected"),
    [
        ("<plain@host>", "X", "plain@host"),
        ("<ünïcode@host>", "X", "sha256-"),
        ("<" + "a" * 2000 + "@host>", "X", "sha256-"),
        (None, "AAMk-draft", "graph-AAMk-draft"),
    ],
)
def test_ids_are_printable_ascii_and_bounded(internet_id: str | None, graph_id: str, expected: str) -> None:
    made = comment_id(parse({"id": graph_id, "internetMessageId": internet_id}))
    assert made.startswith(expected)
    assert made.isascii() and made.isprintable() and len(made) <= 1024


def test_gmail_quotes_and_signatures_are_separated_and_inline_images_leave_no_trace() -> None:
    html = (
        '<div dir="ltr">Thanks, received.<div><img src="cid:ii_123" width="10"></div>'
        '<br clear="all"><div class="gmail_signature">Max<br>Support</div></div><br>'
        '<div class="gmail_quote"><div class="gmail_attr">On Mon, Bob wrote:</div>'
        "<blockquote>Did you get it?</blockquote></div>"
    )
    parts = split_html(html)
    assert parts == {"body": "Thanks, received.", "signature": "Max\nSupport", "quote": (
        "On Mon, Bob wrote:\n\nDid you get it?"
    )}  # fmt: skip
    assert "cid:" not in json.dumps(parts)


@pytest.mark.parametrize(
    "text",
    [
        "您好，我的退款还没有到账。订单号 42。",  # noqa: RUF001 (a full-width comma, as Chinese writes it)
        "مرحبا، لم أستلم استرداد المبلغ بعد.",
        "Здравствуйте, деньги так и не вернулись.",
        "返金がまだ届いていません。注文番号42。",
        "환불이 아직 안 되었습니다.",
        "שלום, ההחזר עדיין לא הגיע.",
    ],
)
def test_non_latin_scripts_come_through_as_clean_text(text: str) -> None:
    html = f'<html><body><p style="x">{text}</p><p>&#128512; &lt;tag&gt;</p></body></html>'
    comment = map_message(graph_message(html), mailbox="m@contoso.com", folder="Inbox")
    assert comment["messages"][0]["body"]["text"] == f"{text}\n\n😀 <tag>"
    assert normalise_comment(comment) == comment


def test_styles_scripts_and_office_markup_do_not_leak_into_the_text() -> None:
    html = (
        "<html><head><title>t</title><style>.x{color:red}</style><script>var a=1;</script></head>"
        "<body><p class=MsoNormal>Line one<o:p></o:p></p><table><tr><td>A</td><td>B</td></tr></table></body></html>"
    )
    assert split_html(html)["body"] == "Line one\n\nA B"


def test_plain_text_bodies_split_at_the_reply_header_and_the_signature_marker() -> None:
    text = "Please call me.\n\n-- \nAnn\n+44 1234\n\nOn Tue, 1 May 2024, Bob <bob@x> wrote:\n> earlier\n> text"
    assert split_text(text) == {
        "body": "Please call me.",
        "signature": "Ann\n+44 1234",
        "quote": "On Tue, 1 May 2024, Bob <bob@x> wrote:\n> earlier\n> text",
    }
    forwarded = "FYI\n\n-----Original Message-----\nFrom: Bob\nold"
    assert split_text(forwarded)["body"] == "FYI"
    assert split_text(forwarded)["quote"].startswith("-----Original Message-----")


def test_a_message_that_is_only_a_quote_keeps_its_text_in_the_body() -> None:
    html = "<blockquote>only quoted</blockquote>"
    comment = map_message(graph_message(html), mailbox="m@contoso.com", folder="Inbox")
    assert comment["messages"][0]["body"]["text"] == "only quoted"
    assert QUOTED not in comment["user_properties"]


def test_attachments_give_their_metadata() -> None:
    attachment = {"id": "att-1", "name": "invoice.pdf", "size": 1234, "contentType": "application/pdf"}
    comment = map_message(graph_message("<p>x</p>"), mailbox="m", folder="Inbox", attachments=[attachment])
    assert comment["attachments"] == [
        {"name": "invoice.pdf", "size": 1234, "content_type": "application/pdf", "attachment_reference": "att-1"}
    ]


def test_relocating_changes_the_folder_and_categories_and_never_the_text() -> None:
    stored = map_message(graph_message("<p>original text</p>"), mailbox="a@contoso.com", folder="Inbox")
    edited = graph_message("<p>edited text</p>", categories=["Done"])
    fresh = map_message(edited, mailbox="a@contoso.com", folder="Archive")
    moved = relocate(stored, fresh)
    assert moved["messages"] == stored["messages"]
    assert moved["user_properties"][FOLDER] == "Archive"
    assert moved["user_properties"][CATEGORIES] == "Done"
    assert normalise_comment(moved) == moved

"""The text a model reads from a comment, and the token form fastText is trained on."""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r"\w+|[^\w\s]")


def comment_text(comment: dict[str, Any]) -> str:
    """Subject and body of every message of a Communications Mining comment, in order, one per line."""
    parts: list[str] = []
    for message in comment.get("messages") or []:
        for field in ("subject", "body"):
            text = (message.get(field) or {}).get("text")
            if text:
                parts.append(text)
    return "\n".join(parts)


def tokens(text: str) -> str:
    """Lower-cased, punctuation split off, one line: fastText splits on spaces only and reads a
    newline as the end of an example, so both would otherwise corrupt what it learns."""
    return " ".join(_TOKEN.findall(text.lower()))

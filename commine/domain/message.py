"""Message: one comment of one source, identified by (source id, comment id).

Ingestion is idempotent by that pair: a re-sent comment with the same content records nothing,
with new content records an update, and a deleted one can come back.
"""

from __future__ import annotations

from typing import Any

from commine.domain.aggregate import Aggregate
from commine.domain.comment import Hasher, content_hash
from commine.domain.errors import NotFound
from commine.events import MessageDeleted, MessageIngested

NEW, UPDATED, UNCHANGED = "new", "updated", "unchanged"


def message_aggregate_id(source_id: str, comment_id: str) -> str:
    return f"message:{source_id}/{comment_id}"


class Message(Aggregate):
    prefix = "message:"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.source_id, _, self.comment_id = aggregate_id.removeprefix(self.prefix).partition("/")
        self.content_hash = ""
        self.deleted = False

    def ingest(self, comment: dict[str, Any], *, actor: str, hasher: Hasher | None = None) -> str:
        """Record a normalised comment; returns ``new``, ``updated`` or ``unchanged``.

        ``hasher`` keys the content hash (the source's hash key). A message last stored with the
        plain SHA-256 of older versions still compares as unchanged when its content is the same.
        """
        digest = content_hash(comment, hasher)
        if self.exists and not self.deleted and self._same(digest, comment, hasher):
            return UNCHANGED
        change = UPDATED if self.exists and not self.deleted else NEW
        self.record(
            MessageIngested,
            actor,
            source_id=self.source_id,
            comment_id=self.comment_id,
            comment=comment,
            content_hash=digest,
            change=change,
        )
        return change

    def _same(self, digest: str, comment: dict[str, Any], hasher: Hasher | None) -> bool:
        if digest == self.content_hash:
            return True
        return hasher is not None and content_hash(comment) == self.content_hash

    def delete(self, *, reason: str, actor: str) -> None:
        if not self.exists or self.deleted:
            raise NotFound(f"comment {self.comment_id!r} does not exist in source {self.source_id}")
        self.record(MessageDeleted, actor, source_id=self.source_id, comment_id=self.comment_id, reason=reason)

    def _on_MessageIngested(self, event: MessageIngested) -> None:
        self.content_hash = event.content_hash
        self.deleted = False

    def _on_MessageDeleted(self, event: MessageDeleted) -> None:
        self.deleted = True

"""Source: one channel of communications (a mailbox, a CSV export, a chat) inside a project."""

from __future__ import annotations

import re

from commine.domain.aggregate import Aggregate
from commine.domain.errors import AlreadyExists, DomainError, NotFound
from commine.domain.names import check_resource_name
from commine.events import SourceCreated, SourcePurged

#: Checked with ``fullmatch``, so a trailing newline is not accepted.
SOURCE_ID = re.compile(r"[0-9a-f]{16}")
MAX_TITLE = 128
MAX_DESCRIPTION = 16384


def source_aggregate_id(project: str, name: str) -> str:
    return f"source:{project}/{name}"


def check_title(title: str, description: str) -> None:
    if len(title) > MAX_TITLE:
        raise DomainError(f"title is {len(title)} characters; at most {MAX_TITLE}")
    if len(description) > MAX_DESCRIPTION:
        raise DomainError(f"description is {len(description)} characters; at most {MAX_DESCRIPTION}")


class Source(Aggregate):
    prefix = "source:"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.project, _, self.name = aggregate_id.removeprefix(self.prefix).partition("/")
        self.source_id = ""
        self.purged = False

    def create(
        self,
        *,
        source_id: str,
        project_exists: bool,
        title: str = "",
        description: str = "",
        language: str = "en",
        kind: str = "unknown",
        actor: str,
    ) -> None:
        check_resource_name("source", self.name)
        if not project_exists:
            raise NotFound(f"project {self.project!r} does not exist; create it first")
        if self.exists and not self.purged:
            raise AlreadyExists(f"source {self.project}/{self.name} exists already")
        if not isinstance(source_id, str) or not SOURCE_ID.fullmatch(source_id):
            raise DomainError(f"source id must be 16 lower-case hex digits, got {source_id!r}")
        check_title(title, description)
        self.record(
            SourceCreated,
            actor,
            source_id=source_id,
            project=self.project,
            name=self.name,
            title=title or self.name,
            description=description,
            language=language,
            kind=kind,
        )

    def purge(self, *, reason: str, actor: str) -> None:
        if not self.exists or self.purged:
            raise NotFound(f"source {self.project}/{self.name} does not exist")
        self.record(SourcePurged, actor, source_id=self.source_id, reason=reason)

    def _on_SourceCreated(self, event: SourceCreated) -> None:
        self.source_id = event.source_id
        self.purged = False

    def _on_SourcePurged(self, event: SourcePurged) -> None:
        self.purged = True

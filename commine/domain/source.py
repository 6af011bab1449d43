"""Source: one channel of communications (a mailbox, a CSV export, a chat) inside a project."""

from __future__ import annotations

import re

from commine.domain.aggregate import Aggregate
from commine.domain.errors import AlreadyExists, DomainError, NotFound
from commine.domain.names import check_resource_name
from commine.events import SourceCreated, SourcePurged, SourceUpdated

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


def check_properties(names: list[str]) -> list[str]:
    """Sensitive user property names, each once: typed names such as ``string:Email``."""
    if not isinstance(names, list) or not all(isinstance(n, str) and 0 < len(n) <= 256 for n in names):
        raise DomainError("sensitive_properties must be a list of property names of 1-256 characters")
    return list(dict.fromkeys(names))


class Source(Aggregate):
    prefix = "source:"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.project, _, self.name = aggregate_id.removeprefix(self.prefix).partition("/")
        self.source_id = ""
        self.purged = False
        self.title = ""
        self.description = ""
        self.should_translate = False
        self.sensitive_properties: list[str] = []

    def create(
        self,
        *,
        source_id: str,
        project_exists: bool,
        title: str = "",
        description: str = "",
        language: str = "en",
        kind: str = "unknown",
        should_translate: bool = False,
        sensitive_properties: list[str] | None = None,
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
            should_translate=should_translate,
            sensitive_properties=check_properties(sensitive_properties or []),
        )

    def update(
        self,
        *,
        title: str | None = None,
        description: str | None = None,
        should_translate: bool | None = None,
        sensitive_properties: list[str] | None = None,
        actor: str,
    ) -> bool:
        """Change the given settings (None keeps one); False, and nothing recorded, when nothing changes."""
        if not self.exists or self.purged:
            raise NotFound(f"source {self.project}/{self.name} does not exist")
        new_title = self.title if title is None else (title or self.name)
        new_description = self.description if description is None else description
        check_title(new_title, new_description)
        translate = self.should_translate if should_translate is None else should_translate
        sensitive = (
            self.sensitive_properties if sensitive_properties is None else check_properties(sensitive_properties)
        )
        if (new_title, new_description, translate, sensitive) == (
            self.title,
            self.description,
            self.should_translate,
            self.sensitive_properties,
        ):
            return False
        self.record(
            SourceUpdated,
            actor,
            source_id=self.source_id,
            title=new_title,
            description=new_description,
            should_translate=translate,
            sensitive_properties=sensitive,
        )
        return True

    def purge(self, *, reason: str, actor: str) -> None:
        if not self.exists or self.purged:
            raise NotFound(f"source {self.project}/{self.name} does not exist")
        self.record(SourcePurged, actor, source_id=self.source_id, reason=reason)

    def _on_SourceCreated(self, event: SourceCreated) -> None:
        self.source_id = event.source_id
        self.purged = False
        self.title = event.title
        self.description = event.description
        self.should_translate = event.should_translate
        self.sensitive_properties = list(event.sensitive_properties)

    def _on_SourceUpdated(self, event: SourceUpdated) -> None:
        self.title = event.title
        self.description = event.description
        self.should_translate = event.should_translate
        self.sensitive_properties = list(event.sensitive_properties)

    def _on_SourcePurged(self, event: SourcePurged) -> None:
        self.purged = True

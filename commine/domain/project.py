"""Project: the workspace that owns sources, datasets and permissions."""

from __future__ import annotations

from commine.domain.aggregate import Aggregate
from commine.domain.errors import AlreadyExists
from commine.domain.names import check_project_name
from commine.events import ProjectCreated


def project_aggregate_id(name: str) -> str:
    return f"project:{name}"


class Project(Aggregate):
    prefix = "project:"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name = aggregate_id.removeprefix(self.prefix)
        self.title = ""

    def create(self, *, title: str = "", description: str = "", actor: str) -> None:
        check_project_name(self.name)
        if self.exists:
            raise AlreadyExists(f"project {self.name!r} exists already")
        self.record(ProjectCreated, actor, name=self.name, title=title or self.name, description=description)

    def _on_ProjectCreated(self, event: ProjectCreated) -> None:
        self.title = event.title

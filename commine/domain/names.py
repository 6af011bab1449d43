"""Names and their rules: projects, sources, datasets, streams and hierarchical labels."""

from __future__ import annotations

import re

from commine.domain.errors import DomainError

# Checked with ``fullmatch``: ``match`` with ``$`` would accept a trailing newline ("acme\n").
PROJECT_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,1024}")
RESOURCE_NAME = re.compile(r"[A-Za-z0-9_\-]{1,256}")

#: Separator of hierarchy levels in a label's string form (``Billing > Refund``).
LABEL_SEPARATOR = " > "
#: The reference product's limit, counted over the whole string including the hierarchy.
MAX_LABEL_LENGTH = 64


def check_project_name(name: str) -> str:
    if not isinstance(name, str) or not PROJECT_NAME.fullmatch(name):
        raise DomainError(f"invalid project name {name!r}: use 1-1024 of A-Z a-z 0-9 _ - .")
    return name


def check_resource_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not RESOURCE_NAME.fullmatch(name):
        raise DomainError(f"invalid {kind} name {name!r}: use 1-256 of A-Z a-z 0-9 _ -")
    return name


def split_full_name(kind: str, full_name: str) -> tuple[str, str]:
    """``"project/name"`` into its two parts, each checked."""
    project, sep, name = full_name.partition("/")
    if not sep:
        raise DomainError(f"{kind} must be given as PROJECT/NAME, got {full_name!r}")
    return check_project_name(project), check_resource_name(kind, name)


def label_parts(name: str | list[str]) -> list[str]:
    """The hierarchy of a label as a list, from either form (``"A > B"`` or ``["A", "B"]``).

    A level of the list form may not contain ``>``: ``["A > B"]`` would otherwise silently
    become the two-level label ``A > B``, so the two forms would no longer map one to one.
    """
    if isinstance(name, str):
        parts = [p.strip() for p in name.split(">")]
    elif isinstance(name, list | tuple) and all(isinstance(p, str) for p in name):
        if any(">" in p for p in name):
            raise DomainError(f"invalid label name {name!r}: a level of the list form may not contain '>'")
        parts = [p.strip() for p in name]
    else:
        raise DomainError(f"invalid label name {name!r}: give a string or a list of strings")
    if not parts or any(not p for p in parts):
        raise DomainError(f"invalid label name {name!r}: every level needs a name")
    return parts


def label_name(name: str | list[str]) -> str:
    """The canonical string form of a label, checked against the length limit."""
    canonical = LABEL_SEPARATOR.join(label_parts(name))
    if len(canonical) > MAX_LABEL_LENGTH:
        raise DomainError(
            f"label {canonical!r} is {len(canonical)} characters; at most {MAX_LABEL_LENGTH} including the hierarchy"
        )
    return canonical


def label_ancestors(name: str) -> list[str]:
    """Every ancestor of a label, root first: ``A > B > C`` gives ``["A", "A > B"]``."""
    parts = label_parts(name)
    return [LABEL_SEPARATOR.join(parts[:i]) for i in range(1, len(parts))]

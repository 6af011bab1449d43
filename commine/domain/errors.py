"""Errors the domain raises when a command cannot be carried out; each says what is wrong."""


class DomainError(ValueError):
    """A command broke a rule of the domain."""


class NotFound(DomainError):
    """The command names something that does not exist."""


class AlreadyExists(DomainError):
    """The command would create something that exists already."""


class CommentError(DomainError):
    """A comment does not satisfy the Communications Mining comment rules.

    ``field`` is the dotted path of the offending field (``messages[0].body.text``), so a CSV
    import can map it back to a column.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

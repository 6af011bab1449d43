"""Errors of the event catalogue and its codec."""


class EventError(Exception):
    """Base class of every event catalogue error."""


class UnknownEventType(EventError):
    """A stored or received record names an event type the catalogue does not know."""


class UnsupportedSchemaVersion(EventError):
    """A record's schema version is newer than the code, or no upcaster leads from it."""


class MalformedEvent(EventError):
    """A record does not have the fields its event type needs."""

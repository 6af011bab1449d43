"""Keeping the read models up to date: the reaction of the ``project`` queue."""

from __future__ import annotations

from commine.persistence import projections
from commine.persistence.store import EventStore


def project(store: EventStore) -> bool:
    """Catch the read models up with the log; False when another runner already is at it."""
    return projections.catch_up(store, wait=False) is not None

"""Which published messages the broker has yet to confirm, for a channel in confirm mode.

RabbitMQ numbers a channel's publishes 1, 2, 3 ... and settles them with acks or nacks, one
tag at a time or, with ``multiple``, every tag up to one. A publisher that keeps its pending
tags in a set and scans it on every multiple-ack pays for all it still waits on, per confirm
frame; here a frame costs what it settles.
"""

from __future__ import annotations


class Unconfirmed:
    """Delivery tags issued in order from 1 and not yet settled by the broker."""

    def __init__(self) -> None:
        #: Every tag below ``_low`` is settled; ``_high`` is the last tag issued.
        self._low = 1
        self._high = 0
        #: Tags from ``_low`` on that were settled one at a time (out of order).
        self._settled: set[int] = set()

    def __len__(self) -> int:
        return self._high - self._low + 1 - len(self._settled)

    def issue(self) -> int:
        """The delivery tag of the next publish on the channel."""
        self._high += 1
        return self._high

    def settle(self, tag: int, *, multiple: bool) -> int:
        """Record an ack or nack of ``tag`` (and every tag before it, with ``multiple``); how many
        tags it settled that were pending. Tags never issued, or settled already, count for nothing."""
        if multiple:
            upto = min(tag, self._high)
            settled = 0
            for each in range(self._low, upto + 1):
                if each in self._settled:
                    self._settled.remove(each)
                else:
                    settled += 1
            self._low = max(self._low, upto + 1)
        elif self._low <= tag <= self._high and tag not in self._settled:
            self._settled.add(tag)
            settled = 1
        else:
            return 0
        while self._low in self._settled:  # a single ack at the front moves the front
            self._settled.remove(self._low)
            self._low += 1
        return settled

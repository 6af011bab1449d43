"""``commine bench``: benchmarks that print a one-line JSON summary last."""

from __future__ import annotations

import click


@click.group()
def bench() -> None:
    """Measure throughput against a ceiling taken in the same run."""

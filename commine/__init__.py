"""commine: an open communications-mining platform on an event-sourced core."""

__version__ = "0.1.0"

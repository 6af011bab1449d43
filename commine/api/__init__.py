"""The Communications Mining-compatible HTTP API: an adapter at the edge, over the handlers and read models."""

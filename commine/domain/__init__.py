"""The pure domain: aggregates decide which events a command produces. No I/O here."""

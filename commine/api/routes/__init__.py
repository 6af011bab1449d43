"""One router per resource of the reference API."""

"""The one error for generation parameters that can't be generated (the tabs and the A1111 API show it)."""
from __future__ import annotations


class BadRequest(ValueError):
    """Parameters that can't be generated; the message names the field."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message

"""The one exception family of colora.

`core` and `store` raise these; only the CLI prints them. Pure Python, so that `store`
and the fast CLI paths can import it without pulling in torch.
"""

from __future__ import annotations


class ColoraError(Exception):
    """A domain error with a one-line message and an optional hint naming the next step."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class NotFoundError(ColoraError):
    """A task, backbone, adapter or file that does not exist."""


class InvalidInputError(ColoraError):
    """User input (a folder, an image, an option value) that colora cannot use."""


class IntegrityError(ColoraError):
    """Files or rows that disagree with what was recorded (hashes, shapes, versions)."""


class ConflictError(ColoraError):
    """Something already exists, or is being changed by another process."""

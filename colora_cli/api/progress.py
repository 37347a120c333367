"""How a use case reports to whoever runs it: notes and progress, silent unless asked."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Update = Callable[..., None]  # update(completed, loss=None)


class Reporter:
    """Silent: what a Python caller gets by default. The CLI's subclass prints (colora.cli.output)."""

    def note(self, message: str) -> None:
        """A line for the user (a choice made, a step started, something skipped)."""

    @contextmanager
    def progress(self, description: str, total: int, *, loss: bool = False) -> Iterator[Update]:
        """A long step: yields `update(completed, loss=None)`."""
        yield lambda completed, loss=None: None


SILENT = Reporter()

"""Training-run statuses: one enum for the ORM, the listing (plain sqlite3) and the doctor."""

from __future__ import annotations

import enum


class RunStatus(str, enum.Enum):
    """Where a training run stands. Stored as its value; equal to that string."""

    RUNNING = "running"  # a process is training it (or died: `colora doctor` tells)
    DONE = "done"  # its adapter is in the index
    FAILED = "failed"  # stopped by an error
    INTERRUPTED = "interrupted"  # stopped by the user or a dead process; resumable from its checkpoint
    ABANDONED = "abandoned"  # a newer run of the task took over its checkpoint

    def __str__(self) -> str:
        return self.value

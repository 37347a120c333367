"""Checking a task's recorded manifest against the files on disk."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import IntegrityError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from store.schema import Pair  # noqa: F401


def manifest_changes(pairs: list[Pair]) -> list[str]:
    """One line per pair file that is missing or whose content changed since `task add`."""
    from core.files import sha256_file
    changes = []
    for p in pairs:
        for role, path, digest in (("input", p.input_path, p.input_sha256), ("target", p.target_path, p.target_sha256)):
            f = Path(path)
            if not f.is_file():
                changes.append(f"missing {role} {f.name}")
            elif sha256_file(f) != digest:
                changes.append(f"changed {role} {f.name}")
    return changes


def require_unchanged(task_name: str, pairs: list[Pair]) -> None:
    changes = manifest_changes(pairs)
    if changes:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise IntegrityError(
            f"{len(changes)} file(s) of task '{task_name}' changed since it was added: {shown}",
            hint=f"restore the files, or re-register them: `colora task rm {task_name} --yes` then `colora task add {task_name} FOLDER`",
        )

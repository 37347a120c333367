"""`colora doctor`: the store checked against its files, safe repairs, the index rebuilt from weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from colora.store.doctor import Finding
    from colora.store.reindex import Reindexed


@dataclass
class DoctorReport:
    root: Path
    findings: list[Finding]
    reindexed: Reindexed | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error" and not f.fixed]

    @property
    def leftovers(self) -> list[Finding]:
        return [f for f in self.findings if f.severity in ("cleanup", "warning") and f.fixable and not f.fixed]


def run_doctor(home=None, *, fix: bool = False, reindex: bool = False) -> DoctorReport:
    """Check the store; with `fix`, repair what is safe (temporary files, dead runs, weight files the
    index lost: re-indexed, never deleted); with `reindex`, first rebuild a damaged or lost index
    from the weight files."""
    from colora.store.doctor import check
    from colora.store.doctor import fix as repair
    from colora.store.reindex import rebuild
    from colora.store.store import Store

    reindexed = None
    if reindex:
        store, reindexed = rebuild(home)
    else:
        store = Store.open(home)
    findings = check(store)
    if fix:
        findings = repair(store, findings)
    return DoctorReport(store.root, findings, reindexed)

"""Checking the store's rows against its files, and repairing only what is safe.

Findings have a severity:
  error    the index and the files disagree (a missing or altered weights file, a broken DB);
           never repaired automatically, except dropping the row of an adapter whose file is gone
  cleanup  leftovers of interrupted work (temp files, orphan files, runs whose process died);
           `--fix` removes or closes them
  info     normal states worth knowing (an unfinished run that `--resume` can continue)

Files younger than GRACE_S are left alone: a concurrent command may be about to commit them.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, text

from core.files import sha256_file
from store.processes import pid_alive
from store.schema import Adapter, Backbone, Task, TrainRun
from store.status import RunStatus
from store.store import Store

GRACE_S = 120


@dataclass
class Finding:
    severity: str  # error | cleanup | info
    kind: str  # what `fix` dispatches on, e.g. "dead_run", "temp_file"
    what: str
    path: str | None = None
    fixable: bool = False
    ref: int | None = None  # the row concerned, where there is one
    fixed: bool = False


def _old(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime > GRACE_S
    except FileNotFoundError:
        return False


def check(store: Store) -> list[Finding]:
    findings: list[Finding] = []
    with store.engine.connect() as conn:
        result = conn.execute(text("PRAGMA integrity_check")).scalar_one()
        if result != "ok":
            findings.append(Finding("error", "db", f"SQLite integrity check failed: {result}", "colora.db"))
        for row in conn.execute(text("PRAGMA foreign_key_check")):
            findings.append(Finding("error", "db", f"row {row[1]} of table {row[0]} points to a missing {row[2]} row", "colora.db"))
    with store.session() as s:
        backbones = list(s.scalars(select(Backbone)))
        adapters = list(s.scalars(select(Adapter)))
        runs = list(s.scalars(select(TrainRun)))
        tasks = {t.id: t.name for t in s.scalars(select(Task))}
    referenced = {store.path(b.path) for b in backbones} | {store.path(a.path) for a in adapters}
    for b in backbones:
        f = store.path(b.path)
        if not f.is_file():
            findings.append(Finding("error", "backbone_missing", f"backbone '{b.name}' is missing its file", b.path))
        elif sha256_file(f) != b.file_sha256:
            findings.append(Finding("error", "backbone_changed", f"backbone '{b.name}' file changed since it was added", b.path))
    for a in adapters:
        f = store.path(a.path)
        name = tasks.get(a.task_id, "?")
        if not f.is_file():
            findings.append(Finding("error", "adapter_missing", f"adapter of task '{name}' is missing its file (the row can be dropped; retrain)",
                                    a.path, fixable=True, ref=a.id))
        elif sha256_file(f) != a.file_sha256:
            findings.append(Finding("error", "adapter_changed", f"adapter of task '{name}' file changed since it was written", a.path))
    live_tasks = set()
    for r in runs:
        name = tasks.get(r.task_id, "?")
        if r.status == RunStatus.RUNNING and pid_alive(r.pid):
            live_tasks.add(name)
            continue
        ckpt = store.path(r.checkpoint_path) if r.checkpoint_path else None
        if ckpt is not None and ckpt.is_file() and r.status != RunStatus.DONE:
            referenced.add(ckpt)
            findings.append(Finding("info", "resumable_run", f"training run {r.id} of '{name}' stopped at its last checkpoint; "
                                            f"continue with `colora train {name} --resume`", r.checkpoint_path))
        if r.status == RunStatus.RUNNING:
            findings.append(Finding("cleanup", "dead_run", f"training run {r.id} of '{name}' is marked running but its process is gone",
                                    fixable=True, ref=r.id))
    meta = store.meta_adapter()
    if meta is not None:
        meta_file = store.path(meta.path)
        referenced.add(meta_file)
        if not meta_file.is_file():
            findings.append(Finding("error", "missing_file", "the meta-adapter file is missing; distill it again with "
                                    "`colora recycle distill`", meta.path))
    for sub in ("backbones", "tasks", "pretrain", "recycle"):
        root = store.root / sub
        if not root.is_dir():
            continue
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(store.root).as_posix()
            task_name = f.relative_to(root).parts[0] if sub == "tasks" else None
            if task_name in live_tasks or not f.is_file():
                continue
            if f.name.endswith(".part"):
                if _old(f):
                    findings.append(Finding("cleanup", "temp_file", "temporary file left by an interrupted write", rel, fixable=True))
            elif sub == "pretrain":
                findings.append(Finding("info", "pretrain_checkpoint", "unfinished pre-training checkpoint; continue with `colora backbone "
                                                "pretrain ... --resume`", rel))
            elif f not in referenced and _old(f):
                findings.append(Finding("cleanup", "orphan_file", "file not referenced by the index", rel, fixable=True))
    for d in sorted((store.root / "tasks").glob("*")) if (store.root / "tasks").is_dir() else []:
        if d.is_dir() and d.name not in tasks.values() and not any(d.iterdir()):
            findings.append(Finding("cleanup", "orphan_dir", "empty folder of a removed task", d.relative_to(store.root).as_posix(), fixable=True))
    return findings


def fix(store: Store, findings: list[Finding]) -> list[Finding]:
    """Apply the safe repairs; returns the findings with `fixed` set."""
    for f in findings:
        if not f.fixable:
            continue
        if f.kind == "dead_run":
            with store.session() as s:
                run = s.get(TrainRun, f.ref)
                if run is not None and run.status == RunStatus.RUNNING and not pid_alive(run.pid):
                    run.status = RunStatus.INTERRUPTED
        elif f.kind == "adapter_missing":
            with store.session() as s:
                row = s.get(Adapter, f.ref)
                if row is not None and not store.path(row.path).exists():
                    s.delete(row)
        elif f.kind in ("temp_file", "orphan_file"):
            store.path(f.path).unlink(missing_ok=True)
        elif f.kind == "orphan_dir":
            shutil.rmtree(store.path(f.path), ignore_errors=True)
        else:
            continue
        f.fixed = True
    return findings

"""Checking the store's rows against its files, repairing only what is safe, re-indexing weights.

Findings have a severity:
  error    the index and the files disagree (a missing or altered weights file, a broken DB);
           never repaired automatically, except dropping the row of an adapter whose file is gone
           and removing a cached ONNX export that is not the one colora wrote (rebuilt on demand)
  warning  something to look at: weight files the index does not know (`--fix` re-indexes them
           from their own metadata), links inside the store (never followed, never removed),
           stale checkpoints, cached ONNX exports of adapters the store no longer has
  cleanup  leftovers of interrupted work: colora's temporary `*.part` files, runs whose process
           died, empty folders of removed tasks; `--fix` removes or closes them
  info     normal states worth knowing (an unfinished run that `--resume` can continue)

Nothing the store holds is deleted to tidy it: the only files `--fix` removes are colora's own
temporary files, which it can recognise by name. Files younger than GRACE_S are left alone: a
concurrent command may be about to commit them.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, text

from colora.core.files import is_temp_name, sha256_file
from colora.store.layout import onnx_key
from colora.store.processes import run_alive
from colora.store.schema import Adapter, Backbone, Task, TrainRun
from colora.store.status import RunStatus
from colora.store.store import Store

GRACE_S = 120
ROOMS = ("backbones", "tasks", "pretrain", "recycle", "cache")  # the store's folders of files


@dataclass
class Finding:
    severity: str  # error | warning | cleanup | info
    kind: str  # what `fix` dispatches on, e.g. "dead_run", "temp_file"
    what: str
    path: str | None = None
    fixable: bool = False
    ref: int | None = None  # the row concerned, where there is one
    fixed: bool = False


def _old(path: Path) -> bool:
    try:
        return time.time() - path.lstat().st_mtime > GRACE_S
    except FileNotFoundError:
        return False


def check(store: Store) -> list[Finding]:
    missing = _missing_tables(store)
    if missing:
        return missing
    findings = _database(store)
    with store.session() as s:
        backbones = list(s.scalars(select(Backbone)))
        adapters = list(s.scalars(select(Adapter)))
        runs = list(s.scalars(select(TrainRun)))
        tasks = {t.id: t.name for t in s.scalars(select(Task))}
    meta = store.meta_adapter()
    referenced = {store.path(b.path) for b in backbones} | {store.path(a.path) for a in adapters}
    file_sha = {b.id: b.file_sha256 for b in backbones}
    cached = {
        f"{tasks.get(a.task_id, '?')}-{onnx_key(a.file_sha256, file_sha.get(a.backbone_id, ''))}-" for a in adapters
    }
    for b in backbones:
        findings += _weights_file(store, b.path, b.file_sha256, f"backbone '{b.name}'", "backbone")
    for a in adapters:
        name = tasks.get(a.task_id, "?")
        for f in _weights_file(store, a.path, a.file_sha256, f"adapter of task '{name}'", "adapter"):
            if f.kind == "adapter_missing":
                f.what, f.fixable, f.ref = f"{f.what} (the row can be dropped; retrain)", True, a.id
            findings.append(f)
    if meta is not None:
        referenced.add(store.path(meta.path))
        for f in _weights_file(store, meta.path, meta.file_sha256, "the meta-adapter", "meta"):
            f.what += "; distill it again with `colora recycle distill`"
            findings.append(f)
    live_tasks = set()
    for r in runs:
        name = tasks.get(r.task_id, "?")
        if r.status == RunStatus.RUNNING and run_alive(
            r.pid, r.host, r.heartbeat_at, now=store.database_time(), shared=bool(store.url)
        ):
            live_tasks.add(name)
            continue
        ckpt = store.path(r.checkpoint_path) if r.checkpoint_path else None
        if ckpt is not None and ckpt.is_file() and r.status != RunStatus.DONE:
            referenced.add(ckpt)
            findings.append(
                Finding(
                    "info",
                    "resumable_run",
                    f"training run {r.id} of '{name}' stopped at its last checkpoint; "
                    f"continue with `colora train {name} --resume`",
                    r.checkpoint_path,
                )
            )
        if r.status == RunStatus.RUNNING:
            findings.append(
                Finding(
                    "cleanup",
                    "dead_run",
                    f"training run {r.id} of '{name}' is marked running but its process is gone",
                    fixable=True,
                    ref=r.id,
                )
            )
    findings += _files(store, referenced, live_tasks, set(tasks.values()), cached)
    return findings


def _missing_tables(store: Store) -> list[Finding]:
    """A table dropped by hand passes SQLite's own checks; nothing else can be checked without it."""
    from sqlalchemy import inspect

    from colora.store.schema import Base

    with store.engine.connect() as conn:
        missing = sorted(set(Base.metadata.tables) - set(inspect(conn).get_table_names()))
    if not missing:
        return []
    message = f"the index lacks table(s) {', '.join(missing)}; rebuild it with `colora doctor --reindex`"
    return [Finding("error", "db", message, "colora.db" if not store.url else store.index_name)]


def _database(store: Store) -> list[Finding]:
    findings = []
    if store.url:  # a database server checks its own pages and enforces its foreign keys
        return findings
    with store.engine.connect() as conn:
        result = conn.execute(text("PRAGMA integrity_check")).scalar_one()
        if result != "ok":
            findings.append(
                Finding(
                    "error",
                    "db",
                    f"SQLite integrity check failed: {result}; rebuild the index with `colora doctor --reindex`",
                    "colora.db",
                )
            )
        for row in conn.execute(text("PRAGMA foreign_key_check")):
            findings.append(
                Finding("error", "db", f"row {row[1]} of table {row[0]} points to a missing {row[2]} row", "colora.db")
            )
    return findings


def _weights_file(store: Store, rel: str, recorded_sha: str | None, label: str, kind: str) -> list[Finding]:
    f = store.path(rel)
    if f.is_symlink() or not f.is_file():
        return [Finding("error", f"{kind}_missing", f"{label} is missing its file", rel)]
    if recorded_sha is not None and sha256_file(f) != recorded_sha:
        return [Finding("error", f"{kind}_changed", f"{label} file changed since it was written", rel)]
    return []


def _cached_export(store: Store, f: Path, rel: str) -> list[Finding]:
    """A live cached export must be the file colora wrote: its sha256 is recorded in the index.
    A young file may be a restore's export on its way to being recorded: left alone."""
    if not _old(f):
        return []
    recorded = store.cache_digest(rel)
    if recorded is None:  # an older colora's, or the index was rebuilt: restore exports it again
        severity, what = "warning", "a cached ONNX export with no recorded sha256 (restore makes it again)"
    elif sha256_file(f) != recorded:
        severity, what = "error", "a cached ONNX export that changed since colora wrote it (restore never runs it)"
    else:
        return []
    return [Finding(severity, "cache_changed", f"{what}; `colora doctor --fix` removes it", rel, fixable=True)]


def _files(
    store: Store, referenced: set[Path], live_tasks: set[str], task_names: set[str], cached: set[str]
) -> list[Finding]:
    """Every file under the store's folders, walked without following links. `cached`: the name
    prefixes of the ONNX exports of the adapters the store has (Store.onnx_relpath)."""
    findings = []
    for room in ROOMS:
        top = store.root / room
        if not top.is_dir() or top.is_symlink():
            continue
        for folder, dirs, files in os.walk(top, followlinks=False):
            here = Path(folder)
            for name in sorted(dirs + files):
                f = here / name
                rel = f.relative_to(store.root).as_posix()
                task = f.relative_to(top).parts[0] if room == "tasks" else None
                if task in live_tasks:
                    continue
                mode = f.lstat().st_mode
                if stat.S_ISLNK(mode):
                    findings.append(
                        Finding(
                            "warning",
                            "link",
                            f"a link inside the store (colora makes none); it is never "
                            f"followed or removed: remove it yourself if it is not wanted "
                            f"(points to {os.readlink(f)})",
                            rel,
                        )
                    )
                elif not stat.S_ISREG(mode):
                    continue
                elif is_temp_name(name):
                    if _old(f):
                        findings.append(
                            Finding(
                                "cleanup", "temp_file", "temporary file left by an interrupted write", rel, fixable=True
                            )
                        )
                elif room == "cache":
                    if any(name.startswith(prefix) for prefix in cached):
                        findings += _cached_export(store, f, rel)
                    elif _old(f):
                        findings.append(
                            Finding(
                                "warning",
                                "stale_cache",
                                "a cached ONNX export of an adapter the store "
                                "no longer has (rebuilt on demand); safe to remove",
                                rel,
                            )
                        )
                elif room == "pretrain":
                    findings.append(
                        Finding(
                            "info",
                            "pretrain_checkpoint",
                            "unfinished pre-training checkpoint; continue with `colora backbone pretrain ... --resume`",
                            rel,
                        )
                    )
                elif store.path(rel) in referenced or not _old(f):
                    continue
                elif name == "checkpoint.safetensors":
                    findings.append(
                        Finding(
                            "warning",
                            "stale_checkpoint",
                            "a training checkpoint no run can resume; remove it yourself if it is not wanted",
                            rel,
                        )
                    )
                elif name.endswith(".safetensors"):
                    findings.append(
                        Finding(
                            "warning",
                            "not_indexed",
                            "weights file the index does not know; `--fix` re-indexes it from its own metadata",
                            rel,
                            fixable=True,
                        )
                    )
                else:
                    findings.append(Finding("info", "foreign", "not a colora file; left alone", rel))
    tasks_dir = store.root / "tasks"
    if tasks_dir.is_dir() and not tasks_dir.is_symlink():
        for d in sorted(tasks_dir.iterdir()):
            if d.is_dir() and not d.is_symlink() and d.name not in task_names and not any(d.iterdir()):
                findings.append(
                    Finding(
                        "cleanup",
                        "orphan_dir",
                        "empty folder of a removed task",
                        d.relative_to(store.root).as_posix(),
                        fixable=True,
                    )
                )
    return findings


def fix(store: Store, findings: list[Finding]) -> list[Finding]:
    """Apply the safe repairs; returns the findings with `fixed` set."""
    from colora.store.reindex import reindex

    to_index = [store.path(f.path) for f in findings if f.fixable and f.kind == "not_indexed"]
    indexed = {p.relative_to(store.root).as_posix() for p in reindex(store, to_index).indexed} if to_index else set()
    for f in findings:
        if not f.fixable:
            continue
        if f.kind == "dead_run":
            with store.session() as s:
                run = s.get(TrainRun, f.ref)
                if (
                    run is not None
                    and run.status == RunStatus.RUNNING
                    and not run_alive(
                        run.pid, run.host, run.heartbeat_at, now=store.database_time(), shared=bool(store.url)
                    )
                ):
                    run.status = RunStatus.INTERRUPTED
        elif f.kind == "adapter_missing":
            with store.session() as s:
                row = s.get(Adapter, f.ref)
                if row is not None and not store.path(row.path).exists():
                    s.delete(row)
        elif f.kind == "cache_changed":
            path = store.root / f.path  # a link is never followed: only a regular file is removed
            if _cached_export(store, path, f.path) if path.is_file() and not path.is_symlink() else []:
                path.unlink(missing_ok=True)  # still not the file colora recorded
                store.forget_cache_digest(f.path)
        elif f.kind == "temp_file":
            path = store.root / f.path  # not resolved: a link is removed as a link, its target untouched
            if stat.S_ISREG(path.lstat().st_mode) and is_temp_name(path.name):
                path.unlink()
        elif f.kind == "orphan_dir":
            path = store.root / f.path
            if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()
        elif f.kind == "not_indexed":
            if f.path not in indexed:
                continue
        else:
            continue
        f.fixed = True
    return findings

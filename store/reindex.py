"""Re-indexing: rows rebuilt from the weight files themselves, when the index lost them.

Weight files carry their own metadata (a backbone its config and fingerprint, an adapter its
backbone's fingerprint, rank plan and method, a meta-adapter its zoo), so a lost, emptied or
damaged index can be rebuilt from them: `colora doctor --fix` indexes the files the index does
not know, `colora doctor --reindex` sets a damaged index aside and rebuilds it. What only the
index knew is gone: the pairs behind each task (tasks come back without pairs; `task rm` and
`task add` re-register them), training runs and evaluations.

Read with the standard library (safetensors headers are JSON): the store never imports torch.
The files are not trusted more than on import: every later load checks them again.
"""

from __future__ import annotations

import json
import math
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from colora.core.errors import ColoraError, NotFoundError
from colora.core.files import read_safetensors_header, sha256_file
from colora.store import database
from colora.store.names import validate_slug
from colora.store.paths import DB_NAME, db_url, resolve_home
from colora.store.schema import Adapter, Backbone, MetaAdapter, Setting, Task
from colora.store.store import DEFAULT_BACKBONE_KEY, Store

REINDEXED_FOLDER = "(re-indexed from its adapter file)"


@dataclass
class Reindexed:
    indexed: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why)
    set_aside: Path | None = None  # the damaged index, kept


def rebuild(home=None) -> tuple[Store, Reindexed]:
    """`colora doctor --reindex`: an unreadable index is moved aside (never deleted) and a new one is
    made; then every weight file the index does not know is indexed."""
    root = resolve_home(home)
    if not any((root / name).exists() for name in (DB_NAME, "backbones", "tasks")):
        raise NotFoundError(f"no colora store at {root} to re-index", hint="check --home (or $COLORA_HOME)")
    set_aside = None
    if db_url() is None and (root / DB_NAME).exists() and not _readable(root):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        set_aside = root / f"{DB_NAME}.damaged-{stamp}"
        for suffix in ("", "-wal", "-shm"):
            if (root / (DB_NAME + suffix)).exists():
                os.replace(root / (DB_NAME + suffix), root / f"{DB_NAME}.damaged-{stamp}{suffix}")
    store = Store.create(root)
    result = reindex(store, _weight_files(store))
    result.set_aside = set_aside
    return store, result


def _readable(root: Path) -> bool:
    """The file is sound SQLite and, at this colora's schema version, has every table (a table
    dropped by hand passes SQLite's own check but breaks every command)."""
    from colora.store.migrations import SCHEMA_VERSION
    from colora.store.schema import Base

    try:
        conn = database.connect(root)
        try:
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                return False
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return version < SCHEMA_VERSION or set(Base.metadata.tables) <= tables  # older: migrated next
        finally:
            conn.close()
    except Exception:  # noqa: BLE001 - any failure to read it means it is not usable as it is
        return False


def _weight_files(store: Store) -> list[Path]:
    files = []
    for room in ("backbones", "tasks", "recycle"):
        top = store.root / room
        if top.is_dir() and not top.is_symlink():
            for folder, _, names in os.walk(top, followlinks=False):
                files += [
                    Path(folder) / n
                    for n in sorted(names)
                    if n.endswith(".safetensors")
                    and n != "checkpoint.safetensors"
                    and stat.S_ISREG((Path(folder) / n).lstat().st_mode)
                ]
    return files


def reindex(store: Store, files: list[Path]) -> Reindexed:
    """Index those of `files` (inside the store) that the index does not know: backbones first
    (adapters name them), then the newest adapter file of each task, then the newest meta-adapter."""
    result = Reindexed()
    known = _known_paths(store)
    todo = [f for f in files if f.relative_to(store.root).as_posix() not in known]
    by_room: dict[str, list[Path]] = {"backbones": [], "tasks": [], "recycle": []}
    for f in todo:
        by_room.setdefault(f.relative_to(store.root).parts[0], []).append(f)
    for f in by_room["backbones"]:
        _try(result, f, lambda f=f: _backbone(store, f))
    newest: dict[str, Path] = {}
    for f in sorted(by_room["tasks"], key=lambda p: p.stat().st_mtime):
        newest[f.relative_to(store.root).parts[1]] = f
    for f in by_room["tasks"]:
        if newest.get(f.relative_to(store.root).parts[1]) != f:
            result.skipped.append((f, "an older adapter file of the same task"))
        else:
            _try(result, f, lambda f=f: _adapter(store, f))
    for f in sorted(by_room["recycle"], key=lambda p: p.stat().st_mtime)[-1:]:
        _try(result, f, lambda f=f: _meta_adapter(store, f))
    return result


def _known_paths(store: Store) -> set[str]:
    with store.session() as s:
        known = {b.path for b in s.scalars(select(Backbone))} | {a.path for a in s.scalars(select(Adapter))}
        known |= {m.path for m in s.scalars(select(MetaAdapter))}
    return known


def _try(result: Reindexed, f: Path, index) -> None:
    try:
        why = index()
    except (ColoraError, ValueError, KeyError, TypeError, OSError, RecursionError) as e:
        why = getattr(e, "message", None) or str(e)
    if why:
        result.skipped.append((f, why))
    else:
        result.indexed.append(f)


def _backbone(store: Store, f: Path) -> str | None:
    tensors, meta = read_safetensors_header(f)
    if meta.get("format") != "colora-backbone" or "sha256" not in meta or "config" not in meta:
        return "not a colora backbone file"
    name = validate_slug(f.stem, "backbone")
    json.loads(meta["config"])
    with store.session() as s:
        if s.scalar(select(Backbone).where(Backbone.name == name)) is not None:
            return f"a backbone named '{name}' is already indexed"
        s.add(
            Backbone(
                name=name,
                sha256=meta["sha256"],
                file_sha256=sha256_file(f),
                path=f.relative_to(store.root).as_posix(),
                config=meta["config"],
                params=sum(math.prod(shape) for _, shape in tensors.values()),
                pretrained=meta.get("pretrained") == "true",
                description=meta.get("description", "re-indexed backbone"),
                recipe=meta.get("recipe"),
                loss_curve=meta.get("loss_curve"),
                size_bytes=f.stat().st_size,
            )
        )
        if s.get(Setting, DEFAULT_BACKBONE_KEY) is None:
            s.add(Setting(key=DEFAULT_BACKBONE_KEY, value=name))
    return None


def _adapter(store: Store, f: Path) -> str | None:
    _, meta = read_safetensors_header(f)
    if meta.get("format") != "colora-adapter":
        return "not a colora adapter file"
    task_name = validate_slug(f.relative_to(store.root).parts[1])
    plan = {k: int(v) for k, v in json.loads(meta["rank_plan"]).items()}
    backbone = store.backbone_by_sha256(meta.get("backbone_sha256", ""))
    if backbone is None:
        return "its backbone is not in the store (import or re-index that first)"
    shapes, _ = read_safetensors_header(store.path(backbone.path))
    trainable = 0
    for path, rank in plan.items():
        out_c, in_c, kh, kw = shapes[f"{path}.weight"][1]
        trainable += rank * (in_c * kh * kw + out_c)
    extra = json.loads(meta.get("extra", "{}"))
    info = extra.get("plan_info") if isinstance(extra, dict) else None
    budget = info.get("budget") if isinstance(info, dict) else None
    with store.session() as s:
        task = s.scalar(select(Task).where(Task.name == task_name))
        if task is None:
            task = Task(name=task_name, folder=REINDEXED_FOLDER, val_folder=None, val_fraction=None, split_seed=0)
            s.add(task)
            s.flush()
        elif s.scalar(select(Adapter).where(Adapter.task_id == task.id)) is not None:
            return f"task '{task_name}' already has an adapter"
        s.add(
            Adapter(
                task_id=task.id,
                backbone_id=backbone.id,
                path=f.relative_to(store.root).as_posix(),
                file_sha256=sha256_file(f),
                size_bytes=f.stat().st_size,
                trainable_params=trainable,
                backbone_params=backbone.params,
                plan_method=meta.get("plan_method", "uniform"),
                recycled=meta.get("recycled") == "true",
                budget=float(budget) if isinstance(budget, (int, float)) and 0 < budget <= 1 else None,
            )
        )
    return None


def _meta_adapter(store: Store, f: Path) -> str | None:
    _, meta = read_safetensors_header(f)
    if meta.get("format") != "colora-meta-adapter":
        return "not a colora meta-adapter file"
    if store.meta_adapter() is not None:
        return "a meta-adapter is already indexed"
    with store.session() as s:
        s.add(
            MetaAdapter(
                path=f.relative_to(store.root).as_posix(),
                file_sha256=sha256_file(f),
                backbone_sha256=meta["backbone_sha256"],
                zoo=json.dumps(json.loads(meta["zoo"])),
                steps=int(meta["steps"]),
                final_loss=float(json.loads(meta["final_loss"])),
            )
        )
    return None

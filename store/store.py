"""The store: a SQLite index (colora.db) plus weight files under one root folder.

    <root>/colora.db
    <root>/backbones/<name>.safetensors
    <root>/tasks/<task>/adapter-<run>.safetensors
    <root>/tasks/<task>/adapter-imported-<stamp>.safetensors, adapter-recycled-<stamp>.safetensors
    <root>/tasks/<task>/checkpoint.safetensors       (while a training run is unfinished)
    <root>/pretrain/<backbone>/checkpoint.safetensors (while a pre-training is unfinished)
    <root>/recycle/meta-<stamp>.safetensors          (LoRA Recycle's meta-adapter)
    <root>/cache/onnx/<task>-<key>-<graph>.onnx      (a task model's ONNX export for `restore --engine`)

Every one of these paths is built here (the `*_relpath` methods), and every path read from the
index or built from a name goes through `path()`, which refuses anything outside the root.

Files are written to a temp name and renamed into place *before* the row that points to
them is committed, so a crash leaves at worst an orphan file, never a row without a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, event, select, text, update
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.exc import IntegrityError as SQLIntegrityError
from sqlalchemy.orm import Session, joinedload, sessionmaker

from colora.core.errors import ConflictError, InvalidInputError, NotFoundError
from colora.core.files import copy_atomic, sha256_file
from colora.store import database
from colora.store.migrations import check_version, migrate
from colora.store.names import validate_slug
from colora.store.paths import DB_NAME, db_url, inside, resolve_home
from colora.store.processes import as_utc, run_alive, this_host
from colora.store.schema import (
    Adapter,
    Backbone,
    EvalResult,
    MetaAdapter,
    Pair,
    Setting,
    Task,
    TrainRun,
    utcnow,
)
from colora.store.status import RunStatus

DEFAULT_BACKBONE_KEY = "default_backbone"
STORE_ID_KEY = "store_id"  # a server index and its folder's marker file name the same store
STORE_ID_FILE = ".colora-store"
MIGRATED_KEY = "migrated_to"  # a SQLite index whose store moved to a server


@dataclass(frozen=True)
class NewPair:
    stem: str
    split: str
    input_path: str
    target_path: str
    width: int
    height: int
    input_sha256: str
    target_sha256: str


class Store:
    def __init__(self, root: Path, *, read_only: bool = False, url: str | None = None):
        """`url`: the index lives in that database server (PostgreSQL) instead of root/colora.db."""
        self.root = root
        self.read_only = read_only
        self.url = url
        if url:
            self.engine = database.server_engine(url)
        else:
            self.engine = create_engine("sqlite://", creator=lambda: database.connect(root, read_only=read_only))
            event.listen(self.engine, "connect", _sqlite_pragmas if not read_only else _sqlite_read_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def index_name(self) -> str:
        """Where the index is, as it may be printed."""
        return database.shown(self.url) if self.url else str(self.root / DB_NAME)

    # ------------------------------------------------------------ opening

    @classmethod
    def create(cls, home: str | os.PathLike | None = None, url: str | None = None, *, bind: bool = True) -> "Store":
        """The store at `home` (folders and index made if missing); its index in `url`, else
        $COLORA_DB_URL, else root/colora.db (`url=""`: root/colora.db whatever the environment says)."""
        root = resolve_home(home)
        if root.exists() and not root.is_dir():
            raise InvalidInputError(f"{root} exists and is not a folder", hint="choose another --home")
        for sub in ("", "backbones", "tasks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        store = cls(root, url=(db_url() if url is None else url) or None)
        store._migrate()
        if bind:  # `store migrate` binds its destination once the rows are in
            store._bind_folder("create")
        return store

    @classmethod
    def open(cls, home: str | os.PathLike | None = None, url: str | None = None) -> "Store":
        """The store at `home`; read-only where this process may not write it (reading commands work)."""
        root = resolve_home(home)
        url = url or db_url()
        if url:
            store = cls(root, url=url)
            with store._translated(), store.engine.connect() as conn:
                from sqlalchemy import inspect

                initialised = inspect(conn).has_table("settings")
            if not initialised or not root.is_dir():
                raise NotFoundError(
                    f"no colora store in {database.shown(url)} with its files at {root}",
                    hint="run `colora init` with the same --home and database URL first",
                )
        else:
            if not (root / DB_NAME).is_file():
                raise NotFoundError(f"no colora store at {root}", hint="run `colora init` first (or pass --home)")
            store = cls(root, read_only=not database.writable(root))
        store._migrate()
        store._bind_folder("open")
        return store

    def _bind_folder(self, mode: str) -> None:
        """A database server's index belongs to one weights folder: the index and a marker file in
        the folder hold the same store id, so a machine that mounts the folder elsewhere (or names
        another one) is refused instead of reading rows whose files it cannot see. A SQLite index
        lives in its folder; one whose store moved to a server (`store migrate`) is refused.
        `mode`: "open", "create" (binds a new index, or a new empty folder) or "adopt" (binds this
        folder to the index, for `store migrate`)."""
        with self.session() as s:
            settings = {r.key: r.value for r in s.scalars(select(Setting))}
        if settings.get(MIGRATED_KEY):
            raise ConflictError(
                f"this store's index moved to {settings[MIGRATED_KEY]} (colora store migrate)",
                hint="use it there (--db / $COLORA_DB_URL, or without them for colora.db); this copy is kept, unused",
            )
        if not self.url:
            return
        marker = self.root / STORE_ID_FILE
        found = marker.read_text(encoding="utf-8").strip() if marker.is_file() else None
        recorded, fresh = settings.get(STORE_ID_KEY), False
        if recorded is None and mode != "open":  # a new index (or one `store migrate` just filled)
            recorded, fresh = found or secrets.token_hex(8), True
            with self.session() as s:
                s.merge(Setting(key=STORE_ID_KEY, value=recorded))
        if mode == "adopt" or fresh and found is None:
            copy_atomic_text(marker, recorded)
            found = recorded
        if recorded is None or found != recorded:
            raise ConflictError(
                f"the index in {self.index_name} belongs to another store folder than {self.root}",
                hint="give the folder that holds its weights with --home (every machine must see the same folder)",
            )

    def _migrate(self) -> None:
        with self._translated():
            with self.engine.begin() as conn:
                if self.read_only:
                    check_version(conn, self.root)
                else:
                    migrate(conn)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._translated(), self._sessions() as s, s.begin():
            yield s

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Database errors as what they mean for the store (damaged, read-only, busy)."""
        try:
            yield
        except (OperationalError, DatabaseError) as e:
            if isinstance(e, SQLIntegrityError):
                raise
            explained = database.explain(e, self.root)
            if explained is None and self.url:  # a server's own message, first line, without the password
                first = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:200]
                explained = ConflictError(
                    f"the store's database refused the command ({first})",
                    hint="check the database URL, the server and the role's rights",
                )
            if explained is None:
                raise
            if self.url:
                explained = type(explained)(database.scrub(explained.message, self.url), hint=explained.hint)
            raise explained from None

    def path(self, relative: str) -> Path:
        return inside(self.root, relative)

    def refuse_inside(self, path: str | os.PathLike, what: str) -> None:
        """A user's output (restored images, a report, an exported file) never goes into the store:
        it could replace weights, and `colora doctor` would not know it."""
        p = Path(path).absolute().resolve()  # links followed: a link into the store counts as inside
        if p == self.root or self.root in p.parents:
            raise InvalidInputError(
                f"{what} {path} is inside the store ({self.root})", hint="write it somewhere outside the store folder"
            )

    # ------------------------------------------------------------ backbones

    def add_backbone(
        self,
        name: str,
        source: Path,
        *,
        sha256: str,
        config: str,
        params: int,
        pretrained: bool,
        description: str,
        recipe: dict | None = None,
        loss_curve: list | None = None,
        make_default: bool = False,
    ) -> Backbone:
        """Copy a validated backbone file into the store and index it."""
        validate_slug(name, "backbone")
        rel = self.backbone_relpath(name)
        with self.session() as s:
            if s.scalar(select(Backbone).where(Backbone.name == name)):
                raise ConflictError(f"backbone '{name}' already exists", hint="choose another --name")
        dest = self.path(rel)
        if dest.exists() or dest.is_symlink():  # a file the index lost (or another's): never overwritten
            raise ConflictError(
                f"{rel} already exists in the store, but the index does not know it",
                hint="if the index lost it, `colora doctor --fix` re-indexes it; else choose another --name",
            )
        copy_atomic(Path(source), dest, overwrite=False)
        row = Backbone(
            name=name,
            sha256=sha256,
            file_sha256=sha256_file(dest),
            path=rel,
            config=config,
            params=params,
            pretrained=pretrained,
            description=description,
            recipe=json.dumps(recipe) if recipe is not None else None,
            loss_curve=json.dumps(loss_curve) if loss_curve is not None else None,
            size_bytes=dest.stat().st_size,
        )
        try:
            with self.session() as s:
                s.add(row)
                s.flush()
                if make_default or s.get(Setting, DEFAULT_BACKBONE_KEY) is None:
                    s.merge(Setting(key=DEFAULT_BACKBONE_KEY, value=name))
        except SQLIntegrityError:
            raise ConflictError(f"backbone '{name}' already exists", hint="choose another --name") from None
        return row

    def backbones(self) -> list[Backbone]:
        with self.session() as s:
            return list(s.scalars(select(Backbone).order_by(Backbone.id)))

    def default_backbone_name(self) -> str | None:
        with self.session() as s:
            setting = s.get(Setting, DEFAULT_BACKBONE_KEY)
            return setting.value if setting else None

    def set_default_backbone(self, name: str) -> None:
        self.backbone(name)
        with self.session() as s:
            s.merge(Setting(key=DEFAULT_BACKBONE_KEY, value=name))

    def backbone(self, name: str | None = None) -> Backbone:
        """By name, or the default one."""
        name = name or self.default_backbone_name()
        if name is None:
            raise NotFoundError("the store has no backbone", hint="run `colora init`")
        with self.session() as s:
            row = s.scalar(select(Backbone).where(Backbone.name == name))
        if row is None:
            raise NotFoundError(f"no backbone named '{name}'", hint="see `colora backbone list`")
        return row

    def backbone_by_id(self, backbone_id: int) -> Backbone:
        with self.session() as s:
            return s.get_one(Backbone, backbone_id)

    # ------------------------------------------------------------ tasks

    def add_task(
        self,
        name: str,
        folder: str,
        pairs: Sequence[NewPair],
        *,
        val_folder: str | None,
        val_fraction: float | None,
        seed: int,
    ) -> Task:
        validate_slug(name)
        task = Task(name=name, folder=folder, val_folder=val_folder, val_fraction=val_fraction, split_seed=seed)
        task.pairs = [Pair(**p.__dict__) for p in pairs]
        self.ensure_task_absent(name)
        try:
            with self.session() as s:
                s.add(task)
        except SQLIntegrityError:  # lost a race with another `task add` of the same name
            raise _task_exists(name) from None
        return task

    def ensure_task_absent(self, name: str) -> None:
        with self.session() as s:
            if s.scalar(select(Task.id).where(Task.name == validate_slug(name))) is not None:
                raise _task_exists(name)

    def tasks(self) -> list[Task]:
        with self.session() as s:
            return list(s.scalars(select(Task).order_by(Task.name)))

    def task(self, name: str) -> Task:
        validate_slug(name)
        with self.session() as s:
            row = s.scalar(select(Task).where(Task.name == name))
        if row is None:
            raise NotFoundError(
                f"no task named '{name}'", hint=f"add it with `colora task add {name} FOLDER`, or see `colora list`"
            )
        return row

    def pairs(self, task: Task, split: str | None = None) -> list[Pair]:
        with self.session() as s:
            q = select(Pair).where(Pair.task_id == task.id).order_by(Pair.split, Pair.stem)
            if split:
                q = q.where(Pair.split == split)
            return list(s.scalars(q))

    def set_rank_plan(self, task: Task, plan: dict[str, int], method: str, info: dict) -> None:
        with self.session() as s:
            row = s.get_one(Task, task.id)
            row.rank_plan = json.dumps(plan)
            row.rank_plan_method = method
            row.rank_plan_info = json.dumps(info)

    def remove_task(self, name: str) -> None:
        task = self.task(name)
        with self.session() as s:
            s.delete(s.get_one(Task, task.id))
        # rows first, then files: a crash in between leaves only orphan files
        shutil.rmtree(self.task_dir(name), ignore_errors=True)

    def task_dir(self, name: str) -> Path:
        return self.path(f"tasks/{validate_slug(name)}")

    # ------------------------------------------------------------ adapters and runs

    def adapter(self, task: Task) -> Adapter | None:
        with self.session() as s:
            return s.scalar(select(Adapter).options(joinedload(Adapter.backbone)).where(Adapter.task_id == task.id))

    def zoo(self, backbone: Backbone, *, exclude: str | None = None) -> list[Adapter]:
        """Trained (not recycled) adapters on `backbone`, by task name: what LoRA Recycle mixes."""
        with self.session() as s:
            rows = s.scalars(
                select(Adapter)
                .options(joinedload(Adapter.task), joinedload(Adapter.backbone))
                .where(Adapter.backbone_id == backbone.id, Adapter.recycled.is_(False))
            )
            return sorted((a for a in rows if a.task.name != exclude), key=lambda a: a.task.name)

    def adapters(self, backbone: Backbone) -> list[Adapter]:
        """Every adapter on `backbone` (trained, imported or recycled), by task name."""
        with self.session() as s:
            rows = s.scalars(
                select(Adapter)
                .options(joinedload(Adapter.task), joinedload(Adapter.backbone))
                .where(Adapter.backbone_id == backbone.id)
            )
            return sorted(rows, key=lambda a: a.task.name)

    def set_signature(self, adapter: Adapter, signature: str) -> None:
        with self.session() as s:
            row = s.get(Adapter, adapter.id)
            if row is not None and row.file_sha256 == adapter.file_sha256:
                row.signature = signature

    # ------------------------------------------------------------ where files go

    def backbone_relpath(self, name: str) -> str:
        return f"backbones/{validate_slug(name, 'backbone')}.safetensors"

    def checkpoint_relpath(self, task: Task) -> str:
        return f"tasks/{task.name}/checkpoint.safetensors"

    def adapter_relpath(self, task: Task, run: TrainRun) -> str:
        return f"tasks/{task.name}/adapter-{run.id}.safetensors"

    def new_adapter_relpath(self, task_name: str, kind: str) -> str:
        """A fresh name for an adapter that comes from no training run (kind: imported, recycled)."""
        return f"tasks/{validate_slug(task_name)}/adapter-{kind}-{_stamp()}.safetensors"

    def pretrain_checkpoint_relpath(self, backbone_name: str) -> str:
        return f"pretrain/{validate_slug(backbone_name, 'backbone')}/checkpoint.safetensors"

    def new_meta_adapter_relpath(self) -> str:
        return f"recycle/meta-{_stamp()}.safetensors"

    def onnx_relpath(self, task_name: str, adapter: Adapter, graph: str) -> str:
        """The cached ONNX export of a task's model (derived, rebuilt on demand; not indexed). Named
        after the adapter's and its backbone's file digests: a retrained, re-imported or recycled
        adapter never meets the export of the one it replaced."""
        key = onnx_key(adapter.file_sha256, adapter.backbone.file_sha256)
        return f"{ONNX_CACHE}/{validate_slug(task_name)}-{key}-{graph}.onnx"

    def prune_onnx(self, task_name: str, adapter: Adapter) -> None:
        """Remove the task's cached exports of the adapters it had before `adapter`."""
        folder, prefix = self.path(ONNX_CACHE), f"{validate_slug(task_name)}-"
        key = onnx_key(adapter.file_sha256, adapter.backbone.file_sha256)
        for f in sorted(folder.glob(f"{prefix}*.onnx")) if folder.is_dir() else ():
            m = ONNX_NAME.match(f.name[len(prefix) :])  # not a file of a task named `<task>-...`
            if m and m.group(1) != key and f.is_file() and not f.is_symlink():
                f.unlink(missing_ok=True)
                self.forget_cache_digest(f"{ONNX_CACHE}/{f.name}")

    # The sha256 of each cached export, recorded when colora writes it and checked before every
    # use (and by `doctor`): a cache file changed by anyone else is never run.

    def cache_digest(self, rel: str) -> str | None:
        with self.session() as s:
            row = s.get(Setting, CACHE_DIGEST_KEY + rel)
            return row.value if row is not None else None

    def record_cache_digest(self, rel: str, sha256: str) -> None:
        with self.session() as s:
            s.merge(Setting(key=CACHE_DIGEST_KEY + rel, value=sha256))

    def forget_cache_digest(self, rel: str) -> None:
        with self.session() as s:
            row = s.get(Setting, CACHE_DIGEST_KEY + rel)
            if row is not None:
                s.delete(row)

    # ------------------------------------------------------------ training runs

    def start_run(self, task: Task, backbone: Backbone, config: str, *, resume: TrainRun | None = None) -> TrainRun:
        """Claim the task for this process: a new run, or `resume` continued.

        Refused when another live process trains the task. The check and the claim are one
        transaction that first takes the write lock (an UPDATE of the task row), so two
        processes starting at once cannot both pass the check.
        """
        with self.session() as s:
            s.execute(update(Task).where(Task.id == task.id).values(name=Task.name))  # the write lock, first
            self._refuse_live_run(s, task)
            if resume is not None:
                run = s.get_one(TrainRun, resume.id)
                run.status, run.pid, run.error = RunStatus.RUNNING, os.getpid(), None
                run.host, run.heartbeat_at = this_host(), self._now(s)
                return run
            # a fresh run reuses the task's checkpoint file: earlier unfinished runs can no longer resume
            for old in s.scalars(
                select(TrainRun).where(TrainRun.task_id == task.id, TrainRun.status != RunStatus.DONE)
            ):
                old.status, old.checkpoint_path = RunStatus.ABANDONED, None
            run = TrainRun(
                task_id=task.id,
                backbone_id=backbone.id,
                status=RunStatus.RUNNING,
                config=config,
                checkpoint_path=self.checkpoint_relpath(task),
                pid=os.getpid(),
                host=this_host(),
                heartbeat_at=self._now(s),
            )
            s.add(run)
            s.flush()
            return run

    def refuse_if_training(self, task: Task) -> None:
        """An early, read-only form of `start_run`'s check (before minutes of work that it would waste)."""
        with self.session() as s:
            self._refuse_live_run(s, task)

    def heartbeat(self, run: TrainRun) -> None:
        """A sign of life of this run, on the database's clock, for machines that cannot probe its
        process (store/processes.py). Refused when the run is no longer running: another process
        took the task over after judging this one dead, and this one must stop."""
        with self.session() as s:
            done = s.execute(
                update(TrainRun)
                .where(TrainRun.id == run.id, TrainRun.status == RunStatus.RUNNING)
                .values(heartbeat_at=self._now(s))
            )
            if done.rowcount == 0:
                raise ConflictError(
                    f"training run {run.id} was taken over by another process (its machine looked "
                    "dead to the others); this one stops",
                    hint="see `colora list` for the task",
                )

    def database_time(self) -> str:
        with self.session() as s:
            return self._now(s)

    def _now(self, s: Session) -> str:
        """The database's clock (UTC, ISO): every machine of a team judges heartbeats by one clock."""
        if not self.url:
            return utcnow()
        return as_utc(s.scalar(text("SELECT CURRENT_TIMESTAMP"))).isoformat(timespec="seconds")

    def _refuse_live_run(self, s: Session, task: Task) -> None:
        now = self._now(s)
        for other in s.scalars(
            select(TrainRun).where(TrainRun.task_id == task.id, TrainRun.status == RunStatus.RUNNING)
        ):
            mine = other.pid == os.getpid() and other.host in (None, this_host())
            alive = run_alive(other.pid, other.host, other.heartbeat_at, now=now, shared=bool(self.url))
            if other.pid and not mine and alive:
                where = "" if other.host in (None, this_host()) else f" on {other.host}"
                raise ConflictError(
                    f"task '{task.name}' is already being trained (process {other.pid}{where})",
                    hint="wait for it to finish, or stop it and use --resume",
                )

    def resumable_run(self, task: Task) -> TrainRun | None:
        """The latest unfinished run of this task whose checkpoint file exists."""
        with self.session() as s:
            run = s.scalar(select(TrainRun).where(TrainRun.task_id == task.id).order_by(TrainRun.id.desc()))
        if run and run.status != RunStatus.DONE and run.checkpoint_path and self.path(run.checkpoint_path).exists():
            return run
        return None

    def mark_run(self, run: TrainRun, status: RunStatus, *, error: str | None = None) -> None:
        with self.session() as s:
            row = s.get_one(TrainRun, run.id)
            row.status = status
            row.error = error

    def finish_run(
        self,
        run: TrainRun,
        task: Task,
        *,
        adapter_rel: str,
        trainable_params: int,
        backbone_params: int,
        plan_method: str,
        budget: float | None,
        loss_curve: list,
        steps_done: int,
        wall_time_s: float,
    ) -> Adapter:
        """Index the adapter file (already in place) and close the run, in one transaction."""
        with self.session() as s:
            row = s.get_one(TrainRun, run.id)
            if row.status != RunStatus.RUNNING:  # taken over meanwhile: its adapter must not replace the new one
                self.path(adapter_rel).unlink(missing_ok=True)
                raise ConflictError(
                    f"training run {run.id} was taken over by another process; its result is dropped",
                    hint="see `colora list` for the task",
                )
            adapter, old_file = self._replace_adapter(
                s,
                task,
                run.backbone_id,
                adapter_rel,
                trainable_params=trainable_params,
                backbone_params=backbone_params,
                plan_method=plan_method,
                budget=budget,
            )
            row.status, row.adapter_id, row.finished_at = RunStatus.DONE, adapter.id, utcnow()
            row.loss_curve, row.steps_done, row.wall_time_s = json.dumps(loss_curve), steps_done, wall_time_s
            row.checkpoint_path = None
        if old_file and old_file != adapter_rel:
            self.path(old_file).unlink(missing_ok=True)
        if run.checkpoint_path:
            self.path(run.checkpoint_path).unlink(missing_ok=True)
        return adapter

    def add_adapter(
        self,
        task: Task | str,
        backbone: Backbone,
        adapter_rel: str,
        *,
        trainable_params: int,
        plan_method: str,
        budget: float | None,
        recycled: bool = False,
        replace_trained: bool = True,
    ) -> Adapter:
        """Index an adapter file (already in place) that did not come from a training run (imported,
        recycled), all or nothing: in one transaction the task is created if `task` is a name the
        store does not have, and a trained adapter is replaced only with `replace_trained`. If
        anything refuses or fails, no row is written and the file is removed."""
        try:
            try:
                adapter, old_file = self._index_adapter(
                    task, backbone, adapter_rel, trainable_params, plan_method, budget, recycled, replace_trained
                )
            except SQLIntegrityError:  # another command created the same task a moment ago: once more
                adapter, old_file = self._index_adapter(
                    task, backbone, adapter_rel, trainable_params, plan_method, budget, recycled, replace_trained
                )
        except BaseException:
            self.path(adapter_rel).unlink(missing_ok=True)
            raise
        if old_file and old_file != adapter_rel:
            self.path(old_file).unlink(missing_ok=True)
        return adapter

    def _index_adapter(
        self,
        task: Task | str,
        backbone: Backbone,
        adapter_rel: str,
        trainable_params: int,
        plan_method: str,
        budget: float | None,
        recycled: bool,
        replace_trained: bool,
    ) -> tuple[Adapter, str | None]:
        with self.session() as s:
            if isinstance(task, str):
                row = s.scalar(select(Task).where(Task.name == validate_slug(task)))
                if row is None:
                    row = Task(name=task, folder="(imported adapter)", val_folder=None, val_fraction=None, split_seed=0)
                    s.add(row)
                    s.flush()
                task = row
            old = s.scalar(select(Adapter).where(Adapter.task_id == task.id))
            if old is not None and not old.recycled and not replace_trained:
                raise ConflictError(
                    f"task '{task.name}' already has a trained adapter",
                    hint="pass --replace to replace it (its file is removed), or choose another task",
                )
            return self._replace_adapter(
                s,
                task,
                backbone.id,
                adapter_rel,
                trainable_params=trainable_params,
                backbone_params=backbone.params,
                plan_method=plan_method,
                budget=budget,
                recycled=recycled,
            )

    def _replace_adapter(
        self, s: Session, task: Task, backbone_id: int, adapter_rel: str, **fields
    ) -> tuple[Adapter, str | None]:
        """A task has one current adapter: the new row replaces the old one (whose file the caller removes)."""
        path = self.path(adapter_rel)
        old = s.scalar(select(Adapter).where(Adapter.task_id == task.id))
        old_file = old.path if old is not None else None
        if old is not None:
            s.delete(old)
            s.flush()
        adapter = Adapter(
            task_id=task.id,
            backbone_id=backbone_id,
            path=adapter_rel,
            file_sha256=sha256_file(path),
            size_bytes=path.stat().st_size,
            **fields,
        )
        s.add(adapter)
        s.flush()
        return adapter, old_file

    def backbone_by_sha256(self, sha256: str) -> Backbone | None:
        with self.session() as s:
            return s.scalar(select(Backbone).where(Backbone.sha256 == sha256).order_by(Backbone.id))

    def run(self, run_id: int) -> TrainRun:
        with self.session() as s:
            run = s.get(TrainRun, run_id)
        if run is None:
            raise NotFoundError(f"no training run {run_id} in the store")
        return run

    def last_run(self, task: Task) -> TrainRun | None:
        with self.session() as s:
            return s.scalar(select(TrainRun).where(TrainRun.task_id == task.id).order_by(TrainRun.id.desc()))

    # ------------------------------------------------------------ evaluation

    def record_eval(
        self, task: Task, backbone: Backbone, adapter: Adapter | None, results: dict[str, tuple[float, float, list]]
    ) -> dict[str, EvalResult]:
        """results: subject -> (mean psnr, mean ssim, [[stem, psnr, ssim], ...]); returns the rows written."""
        rows = {
            subject: EvalResult(
                task_id=task.id,
                adapter_id=adapter.id if adapter and subject == "adapter" else None,
                backbone_id=backbone.id,
                subject=subject,
                psnr=psnr,
                ssim=ssim,
                n_pairs=len(per_pair),
                per_pair=json.dumps(per_pair),
            )
            for subject, (psnr, ssim, per_pair) in results.items()
        }
        with self.session() as s:
            s.add_all(rows.values())
        return rows

    def last_eval(self, task: Task, subject: str) -> EvalResult | None:
        with self.session() as s:
            return s.scalar(
                select(EvalResult)
                .where(EvalResult.task_id == task.id, EvalResult.subject == subject)
                .order_by(EvalResult.id.desc())
            )

    # ------------------------------------------------------------ LoRA Recycle's meta-adapter

    def meta_adapter(self) -> MetaAdapter | None:
        with self.session() as s:
            return s.scalar(select(MetaAdapter).order_by(MetaAdapter.id.desc()))

    def set_meta_adapter(
        self, rel: str, *, backbone_sha256: str, zoo: list[dict], steps: int, final_loss: float
    ) -> MetaAdapter:
        """Index a meta-adapter file (already in place); it replaces the previous one, whose file is removed."""
        with self.session() as s:
            old = list(s.scalars(select(MetaAdapter)))
            for row in old:
                s.delete(row)
            meta = MetaAdapter(
                path=rel,
                file_sha256=sha256_file(self.path(rel)),
                backbone_sha256=backbone_sha256,
                zoo=json.dumps(zoo),
                steps=steps,
                final_loss=final_loss,
            )
            s.add(meta)
        for row in old:
            if row.path != rel:
                self.path(row.path).unlink(missing_ok=True)
        return meta


ONNX_CACHE = "cache/onnx"
CACHE_DIGEST_KEY = "cache_sha256:"  # + the cache file's path: its sha256 (settings table)
ONNX_NAME = re.compile(r"^([0-9a-f]{12})-([a-z0-9]+)\.onnx$")  # after `<task>-`: <key>-<graph>.onnx


def onnx_key(adapter_file_sha256: str, backbone_file_sha256: str) -> str:
    return hashlib.sha256(f"{adapter_file_sha256}:{backbone_file_sha256}".encode()).hexdigest()[:12]


def copy_atomic_text(path: Path, text: str) -> None:
    from colora.core.files import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def _stamp() -> str:
    """A file-name stamp that sorts by time and never repeats (time to the second plus randomness)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _task_exists(name: str) -> ConflictError:
    return ConflictError(
        f"task '{name}' already exists", hint=f"choose another name, or remove it first with `colora task rm {name}`"
    )


def _sqlite_read_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys = ON")
    cur.execute(f"PRAGMA busy_timeout = {database.BUSY_TIMEOUT_S * 1000}")
    cur.close()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys = ON")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA busy_timeout = 30000")
    cur.close()

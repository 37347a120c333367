"""The store: a SQLite index (colora.db) plus weight files under one root folder.

    <root>/colora.db
    <root>/backbones/<name>.safetensors
    <root>/tasks/<task>/adapter-<run>.safetensors
    <root>/tasks/<task>/adapter-imported-<stamp>.safetensors, adapter-recycled-<stamp>.safetensors
    <root>/tasks/<task>/checkpoint.safetensors       (while a training run is unfinished)
    <root>/pretrain/<backbone>/checkpoint.safetensors (while a pre-training is unfinished)
    <root>/recycle/meta-<stamp>.safetensors          (LoRA Recycle's meta-adapter)
    <root>/cache/onnx/<task>-<key>-<graph>.onnx      (a task model's ONNX export for `restore --engine`)

Every one of these paths is built in one place (the `*_relpath` methods, store/layout.py), and
every path read from the index or built from a name goes through `path()`, which refuses anything
outside the root. `Store` is opening and binding (here), backbones and tasks (here), plus three
mixins along the store's other seams: `StoreLayout` (where files go, the ONNX cache's digests),
`TrainingRuns` (store/runs.py) and `AdapterIndex` (adapters, evaluations, the meta-adapter:
store/adapters.py).

Files are written to a temp name and renamed into place *before* the row that points to
them is committed, so a crash leaves at worst an orphan file, never a row without a file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, event, select, update
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.exc import IntegrityError as SQLIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from colora.core.errors import ConflictError, InvalidInputError, NotFoundError
from colora.core.files import copy_atomic, sha256_file
from colora.store import database
from colora.store.adapters import AdapterIndex
from colora.store.layout import StoreLayout
from colora.store.migrations import check_version, migrate
from colora.store.names import validate_slug
from colora.store.paths import DB_NAME, db_url, inside, resolve_home
from colora.store.runs import TrainingRuns
from colora.store.schema import (
    Backbone,
    Pair,
    Setting,
    Task,
)

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


class Store(StoreLayout, TrainingRuns, AdapterIndex):
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
        """Refused while a live process trains the task (its checkpoint and adapter would be orphaned);
        the check and the delete are one transaction behind the task row's write lock, as in start_run."""
        task = self.task(name)
        with self.session() as s:
            s.execute(update(Task).where(Task.id == task.id).values(name=Task.name))  # the write lock, first
            self._refuse_live_run(s, task, doing="remove")
            row = s.get(Task, task.id)
            if row is None:  # another `task rm` was first
                raise NotFoundError(f"task '{name}' not found", hint="see `colora list`")
            s.delete(row)
        # rows first, then files: a crash in between leaves only orphan files
        shutil.rmtree(self.task_dir(name), ignore_errors=True)

    def task_dir(self, name: str) -> Path:
        return self.path(f"tasks/{validate_slug(name)}")


def copy_atomic_text(path: Path, text: str) -> None:
    from colora.core.files import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


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

"""`colora store migrate`: copy a store's index between SQLite and PostgreSQL, verified.

The weight files stay where they are (the store folder); only the index moves. The destination
gets the same schema through the same migrations, must be empty, and receives every row with its
id; the copy then counts and hashes every table on both sides, and checks every weight file
against the sha256 the index records. Nothing is copied into a database that already holds a store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from sqlalchemy import func, insert, select, text

from colora.core.errors import ConflictError, IntegrityError
from colora.core.files import sha256_file
from colora.store.schema import Base

# parents before children (foreign keys)
TABLES = ("settings", "backbones", "tasks", "pairs", "adapters", "train_runs", "eval_results", "meta_adapters")


@dataclass
class Copied:
    counts: dict[str, int] = field(default_factory=dict)
    files_checked: int = 0


def copy_index(source, dest) -> Copied:
    """Every row of `source`'s index into `dest`'s (both `store.store.Store`s over the same folder).

    The weight files are checked first; the source is read in one snapshot; the copy is compared
    row by row before it is committed, so a failed copy leaves the destination empty. Then the
    source is marked as moved (colora refuses to use it: one store, one live index)."""
    from colora.store.schema import Setting
    from colora.store.store import MIGRATED_KEY

    tables = [Base.metadata.tables[name] for name in TABLES]
    with dest._translated(), dest.engine.connect() as conn:
        busy = [t.name for t in tables if conn.execute(select(func.count()).select_from(t)).scalar_one()]
    if busy:
        hint = (
            (
                "the store folder's colora.db still holds an index: move it aside (with its -wal and -shm files) "
                "and migrate again"
            )
            if not dest.url
            else "migrate into an empty database, or drop that one first"
        )
        raise ConflictError(f"{dest.index_name} already holds a store (table {busy[0]} has rows)", hint=hint)
    result = Copied(files_checked=check_files(source))
    snapshot = {"isolation_level": "REPEATABLE READ"} if source.url else {}
    with (
        source._translated(),
        source.engine.connect().execution_options(**snapshot) as src,
        src.begin(),
        dest._translated(),
        dest.engine.begin() as dst,
    ):
        for table in tables:
            rows = [dict(r._mapping) for r in src.execute(select(table))]
            if rows:
                dst.execute(insert(table), rows)
        if dst.dialect.name == "postgresql":  # ids were given explicitly: move each identity past them
            for table in tables:
                if "id" in table.c:
                    dst.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                            f"coalesce((SELECT max(id) FROM {table.name}), 0) + 1, false)"
                        )
                    )
        for table in tables:  # before the commit: a copy that differs is rolled back
            theirs, ours = table_digest(src, table), table_digest(dst, table)
            if theirs != ours:
                raise IntegrityError(
                    f"the copy of table {table.name} differs from the original "
                    f"({ours[0]} rows copied of {theirs[0]}); nothing was copied",
                    hint="report this as a bug",
                )
            result.counts[table.name] = theirs[0]
    with source.session() as s:
        s.merge(Setting(key=MIGRATED_KEY, value=dest.index_name))
    return result


def table_digest(conn, table) -> tuple[int, str]:
    """(rows, sha256 of every row's values in id order), the same whichever engine holds them."""
    order = [c for c in table.primary_key.columns]
    h = hashlib.sha256()
    n = 0
    for row in conn.execute(select(table).order_by(*order)):
        values = {k: (v.value if hasattr(v, "value") else v) for k, v in row._mapping.items()}
        h.update(json.dumps(values, sort_keys=True, default=str).encode())
        n += 1
    return n, h.hexdigest()


def check_files(store) -> int:
    """Every backbone and adapter file the index names exists and has its recorded sha256."""
    from colora.store.schema import Adapter, Backbone

    checked = 0
    with store.session() as s:
        rows = [(b.path, b.file_sha256) for b in s.scalars(select(Backbone))]
        rows += [(a.path, a.file_sha256) for a in s.scalars(select(Adapter))]
    for rel, sha in rows:
        path = store.path(rel)
        if not path.is_file() or sha256_file(path) != sha:
            raise IntegrityError(
                f"{rel} is missing or changed since it was indexed; nothing was copied",
                hint="run `colora doctor` and fix the store first",
            )
        checked += 1
    return checked

"""Ordered, idempotent schema migrations, one path for SQLite and PostgreSQL.

The version is SQLite's user_version, or on PostgreSQL the one row of `colora_schema`. A step is
SQL text (written for SQLite; `_ddl` says the few things PostgreSQL spells differently), a
(table, column, type) column to add, or a function of the connection (for data moves); every
step can run twice. Append new steps; never edit a released one. A database
whose version is newer than the last step here comes from a newer colora and is refused rather
than guessed at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # SQLAlchemy loads only when migrating: `colora list` reads SCHEMA_VERSION
    from sqlalchemy import Connection

from colora.core.errors import IntegrityError

V1 = [
    """CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS backbones (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, sha256 TEXT NOT NULL,
        file_sha256 TEXT NOT NULL, path TEXT NOT NULL, config TEXT NOT NULL,
        params INTEGER NOT NULL, pretrained BOOLEAN NOT NULL, description TEXT NOT NULL,
        recipe TEXT, loss_curve TEXT, size_bytes INTEGER NOT NULL, created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tasks (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, folder TEXT NOT NULL,
        val_folder TEXT, val_fraction FLOAT, split_seed INTEGER NOT NULL,
        rank_plan TEXT, rank_plan_method TEXT, created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS pairs (
        id INTEGER PRIMARY KEY,
        task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        stem TEXT NOT NULL, split TEXT NOT NULL CHECK (split IN ('train', 'val')),
        input_path TEXT NOT NULL, target_path TEXT NOT NULL,
        width INTEGER NOT NULL, height INTEGER NOT NULL,
        input_sha256 TEXT NOT NULL, target_sha256 TEXT NOT NULL,
        UNIQUE (task_id, split, stem))""",
    """CREATE TABLE IF NOT EXISTS adapters (
        id INTEGER PRIMARY KEY,
        task_id INTEGER NOT NULL UNIQUE REFERENCES tasks(id) ON DELETE CASCADE,
        backbone_id INTEGER NOT NULL REFERENCES backbones(id),
        path TEXT NOT NULL, file_sha256 TEXT NOT NULL, size_bytes INTEGER NOT NULL,
        trainable_params INTEGER NOT NULL, backbone_params INTEGER NOT NULL,
        rank_plan TEXT NOT NULL, plan_method TEXT NOT NULL,
        recycled BOOLEAN NOT NULL DEFAULT 0, created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS train_runs (
        id INTEGER PRIMARY KEY,
        task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        backbone_id INTEGER NOT NULL REFERENCES backbones(id),
        adapter_id INTEGER REFERENCES adapters(id) ON DELETE SET NULL,
        status TEXT NOT NULL, config TEXT NOT NULL, loss_curve TEXT,
        steps_done INTEGER NOT NULL DEFAULT 0, wall_time_s FLOAT, checkpoint_path TEXT,
        pid INTEGER, error TEXT, started_at TEXT NOT NULL, finished_at TEXT)""",
    """CREATE TABLE IF NOT EXISTS eval_results (
        id INTEGER PRIMARY KEY,
        task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        adapter_id INTEGER REFERENCES adapters(id) ON DELETE CASCADE,
        backbone_id INTEGER NOT NULL REFERENCES backbones(id),
        subject TEXT NOT NULL, psnr FLOAT NOT NULL, ssim FLOAT NOT NULL,
        n_pairs INTEGER NOT NULL, per_pair TEXT NOT NULL, created_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS ix_pairs_task ON pairs (task_id)",
    "CREATE INDEX IF NOT EXISTS ix_eval_task ON eval_results (task_id, subject, id)",
    "CREATE INDEX IF NOT EXISTS ix_runs_task ON train_runs (task_id, id)",
]

# CoLoRA rank plans: how a task's plan was computed, and each adapter's parameter budget
V2 = [
    ("tasks", "rank_plan_info", "TEXT"),
    ("adapters", "budget", "FLOAT"),
]

# LoRA Recycle: a cached degradation signature per adapter (for `restore --task auto`)
V3 = [
    ("adapters", "signature", "TEXT"),
]


def _meta_adapter_table(conn: Connection) -> None:
    """LoRA Recycle's meta-adapter moves from a JSON blob in `settings` into its own table."""
    import json

    from sqlalchemy import text

    conn.execute(
        text(
            _ddl(
                """CREATE TABLE IF NOT EXISTS meta_adapters (
        id INTEGER PRIMARY KEY, path TEXT NOT NULL, file_sha256 TEXT, backbone_sha256 TEXT NOT NULL,
        zoo TEXT NOT NULL, steps INTEGER NOT NULL, final_loss FLOAT NOT NULL, created_at TEXT NOT NULL)""",
                conn.dialect.name,
            )
        )
    )
    old = conn.execute(text("SELECT value FROM settings WHERE key = 'meta_adapter'")).scalar()
    if old:
        record = json.loads(old)
        conn.execute(
            text(
                "INSERT INTO meta_adapters (path, backbone_sha256, zoo, steps, final_loss, created_at) "
                "VALUES (:path, :sha, :zoo, :steps, :loss, :created)"
            ),
            {
                "path": record["path"],
                "sha": record["backbone_sha256"],
                "zoo": json.dumps(record["zoo"]),
                "steps": record["steps"],
                "loss": record["final_loss"],
                "created": record["created"],
            },
        )
        conn.execute(text("DELETE FROM settings WHERE key = 'meta_adapter'"))


def _drop_adapter_rank_plan(conn: Connection) -> None:
    """The adapter file carries its rank plan (the portable truth); the index no longer copies it."""
    from sqlalchemy import text

    if "rank_plan" in _columns(conn, "adapters"):
        conn.execute(text("ALTER TABLE adapters DROP COLUMN rank_plan"))


# The store owns its tables: the meta-adapter gets one; the adapter row stops copying the plan
V4 = [_meta_adapter_table, _drop_adapter_rank_plan]

# Teams: a run records the machine it runs on and when it last showed life, so that a run on
# another machine (whose process cannot be probed) blocks a second training only while alive
V5 = [
    ("train_runs", "host", "TEXT"),
    ("train_runs", "heartbeat_at", "TEXT"),
]

MIGRATIONS: list[list] = [V1, V2, V3, V4, V5]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: Connection) -> int:
    """Bring the database to SCHEMA_VERSION; returns the version it found."""
    from sqlalchemy import text

    if conn.dialect.name == "postgresql":  # one migrator at a time across machines, until commit
        conn.execute(text("SELECT pg_advisory_xact_lock(7343562)"))
    found = schema_version(conn)
    if found > SCHEMA_VERSION:
        raise IntegrityError(
            f"this store was written by a newer colora (schema {found}, this colora knows up to {SCHEMA_VERSION})",
            hint="upgrade colora (pip install -U colora)",
        )
    for version in range(found, SCHEMA_VERSION):
        for step in MIGRATIONS[version]:
            if isinstance(step, tuple):
                _add_column(conn, *step)
            elif callable(step):
                step(conn)
            else:
                conn.execute(text(_ddl(step, conn.dialect.name)))
        _set_version(conn, version + 1)
    return found


def schema_version(conn: Connection) -> int:
    from sqlalchemy import text

    if conn.dialect.name == "sqlite":
        return conn.execute(text("PRAGMA user_version")).scalar_one()
    if conn.execute(text("SELECT to_regclass('colora_schema')")).scalar() is None:
        return 0  # a new database (read without writing: a read-only role can open a store)
    return conn.execute(text("SELECT max(version) FROM colora_schema")).scalar() or 0


def _set_version(conn: Connection, version: int) -> None:
    from sqlalchemy import text

    if conn.dialect.name == "sqlite":
        conn.execute(text(f"PRAGMA user_version = {int(version)}"))
    else:
        conn.execute(text("CREATE TABLE IF NOT EXISTS colora_schema (version INTEGER NOT NULL)"))
        conn.execute(text("DELETE FROM colora_schema"))
        conn.execute(text("INSERT INTO colora_schema (version) VALUES (:v)"), {"v": version})


def _ddl(sql: str, dialect: str) -> str:
    """SQLite DDL as PostgreSQL spells it: generated ids, boolean literals, double floats."""
    if dialect == "sqlite":
        return sql
    return (
        sql.replace("id INTEGER PRIMARY KEY", "id INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
        .replace("BOOLEAN NOT NULL DEFAULT 0", "BOOLEAN NOT NULL DEFAULT FALSE")
        .replace(" FLOAT", " DOUBLE PRECISION")
    )


def _columns(conn: Connection, table: str) -> set[str]:
    from sqlalchemy import inspect

    return {c["name"] for c in inspect(conn).get_columns(table)}


def check_version(conn: Connection, root) -> None:
    """For a store that cannot be written: its schema must already be this colora's."""
    found = schema_version(conn)
    if found > SCHEMA_VERSION:
        migrate(conn)  # refuses, with the message about a newer colora
    if found < SCHEMA_VERSION:
        raise IntegrityError(
            f"the store at {root} is read-only and was written by an older colora (schema {found})",
            hint="open it once with this colora where it is writable, so that it can be upgraded",
        )


def _add_column(conn: Connection, table: str, column: str, sql_type: str) -> None:
    """ALTER TABLE ADD COLUMN, skipped when the column exists (so a step can be re-run)."""
    from sqlalchemy import text

    if column not in _columns(conn, table):
        conn.execute(text(_ddl(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}", conn.dialect.name)))

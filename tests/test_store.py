"""The store's index: migrations, integrity rules, path safety, and `list` staying free of torch."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
from sqlalchemy import inspect

from colora.core.errors import IntegrityError, InvalidInputError, NotFoundError
from colora.store.migrations import SCHEMA_VERSION
from colora.store.names import validate_slug
from colora.store.paths import inside
from colora.store.schema import Base
from colora.store.store import Store


def test_fresh_store_matches_the_orm_schema(isolated_home):
    store = Store.create(isolated_home)
    db = inspect(store.engine)
    for table in Base.metadata.sorted_tables:
        on_disk = {c["name"] for c in db.get_columns(table.name)}
        assert on_disk == {c.name for c in table.columns}, table.name
    with sqlite3.connect(isolated_home / "colora.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def write_v1_store(home, *statements: str) -> None:
    """A database as the first schema version left it, plus `statements`."""
    from colora.store.migrations import V1

    home.mkdir(parents=True)
    with sqlite3.connect(home / "colora.db") as conn:
        for statement in (*V1, *statements):
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")


def test_version_1_database_is_migrated_and_migrations_are_idempotent(isolated_home):
    write_v1_store(isolated_home)
    Store.open(isolated_home)
    Store.open(isolated_home)  # a second open changes nothing
    with sqlite3.connect(isolated_home / "colora.db") as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(tasks)")}
        assert "rank_plan_info" in columns
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_database_from_a_newer_colora_is_refused(isolated_home):
    Store.create(isolated_home)
    with sqlite3.connect(isolated_home / "colora.db") as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(IntegrityError, match="newer colora"):
        Store.open(isolated_home)


def test_missing_store_says_how_to_create_it(tmp_path):
    with pytest.raises(NotFoundError) as e:
        Store.open(tmp_path / "nowhere")
    assert "colora init" in e.value.hint


@pytest.mark.parametrize("name", ["", "Rain", "../x", "a/b", "a b", "-x", "x" * 64, "auto", "naïve"])
def test_bad_names_are_refused(name):
    with pytest.raises(InvalidInputError):
        validate_slug(name)


def test_paths_cannot_escape_the_store(tmp_path):
    with pytest.raises(InvalidInputError, match="escapes"):
        inside(tmp_path, "../outside")
    assert inside(tmp_path, "tasks/rain/a.safetensors") == tmp_path / "tasks/rain/a.safetensors"


def test_list_and_help_do_not_import_torch(isolated_home):
    Store.create(isolated_home)
    code = (
        "import sys; from typer.testing import CliRunner; from colora.cli.main import app; "
        "r1 = CliRunner().invoke(app, ['list']); r2 = CliRunner().invoke(app, ['--help']); "
        "assert r1.exit_code == 0 and r2.exit_code == 0, (r1.output, r2.output); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_list_reads_an_older_store_after_migrating_it(isolated_home):
    """`colora list` reads with sqlite3 alone, but a store an older colora wrote is migrated first."""
    from colora.store.summary import store_rows

    write_v1_store(
        isolated_home, "INSERT INTO tasks (name, folder, split_seed, created_at) VALUES ('old', '/x', 0, '2026-01-01')"
    )
    rows = store_rows(isolated_home)
    assert [r["task"] for r in rows] == ["old"] and rows[0]["adapter"] == "untrained"
    with sqlite3.connect(isolated_home / "colora.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert "signature" in {r[1] for r in conn.execute("PRAGMA table_info(adapters)")}


def test_list_of_a_newer_store_is_refused(isolated_home):
    from colora.store.summary import store_rows

    Store.create(isolated_home)
    with sqlite3.connect(isolated_home / "colora.db") as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(IntegrityError, match="newer colora"):
        store_rows(isolated_home)


def test_version_3_meta_adapter_setting_moves_to_its_table_and_the_plan_copy_goes(isolated_home):
    import json

    from colora.store.migrations import MIGRATIONS

    record = {
        "path": "recycle/meta-1.safetensors",
        "backbone_sha256": "ab" * 32,
        "zoo": [{"task": "rain", "file_sha256": "cd" * 32}],
        "steps": 40,
        "final_loss": 0.01,
        "created": "2026-11-20 10:00:00",
    }
    write_v1_store(isolated_home)
    with sqlite3.connect(isolated_home / "colora.db") as conn:  # bring it to version 3 by hand, as colora 0.1 did
        for version in (1, 2):
            for table, column, sql_type in MIGRATIONS[version]:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
        conn.execute("INSERT INTO settings (key, value) VALUES ('meta_adapter', ?)", (json.dumps(record),))
        conn.execute("PRAGMA user_version = 3")
    store = Store.open(isolated_home)
    meta = store.meta_adapter()
    assert (meta.path, meta.backbone_sha256, meta.zoo_list(), meta.steps) == (
        record["path"],
        record["backbone_sha256"],
        record["zoo"],
        record["steps"],
    )
    with sqlite3.connect(isolated_home / "colora.db") as conn:
        assert conn.execute("SELECT count(*) FROM settings WHERE key = 'meta_adapter'").fetchone()[0] == 0
        assert "rank_plan" not in {row[1] for row in conn.execute("PRAGMA table_info(adapters)")}
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

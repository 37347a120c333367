"""The store's guarantees on both index engines: SQLite (the default) and a real PostgreSQL server.

Each test runs twice (the `backend` fixture); the PostgreSQL run skips, saying why, where no
server is reachable (.ci/run installs and starts one).
"""

from __future__ import annotations

import json
import multiprocessing
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select

from colora.core.errors import ConflictError, NotFoundError
from colora.store.migrations import SCHEMA_VERSION, migrate, schema_version
from colora.store.schema import Base, Pair, TrainRun
from colora.store.status import RunStatus
from colora.store.store import NewPair, Store
from helpers import FAST_TRAIN, TINY_INIT, err, invoke, make_pairs, ok, out


def pair(stem: str, split: str = "train") -> NewPair:
    return NewPair(stem, split, f"/in/{stem}.png", f"/gt/{stem}.png", 8, 8, "0" * 64, "1" * 64)


def store_with_backbone(home) -> Store:
    """A store whose index has a backbone row (all a training run needs to point at)."""
    from colora.store.schema import Backbone, Setting

    store = Store.create(home)
    with store.session() as s:
        s.add(
            Backbone(
                name="b",
                sha256="0",
                file_sha256="0",
                path="backbones/b.safetensors",
                config="{}",
                params=1,
                pretrained=False,
                description="-",
                size_bytes=1,
            )
        )
        s.add(Setting(key="default_backbone", value="b"))
    return store


def test_a_fresh_index_matches_the_orm_and_migrating_again_changes_nothing(backend, isolated_home):
    store = Store.create(isolated_home)
    assert (store.url is not None) == (backend == "postgresql")
    db = inspect(store.engine)
    for table in Base.metadata.sorted_tables:
        assert {c["name"] for c in db.get_columns(table.name)} == {c.name for c in table.columns}, table.name
    with store.engine.begin() as conn:
        assert migrate(conn) == SCHEMA_VERSION  # found current: nothing to do
        assert schema_version(conn) == SCHEMA_VERSION
    assert Store.open(isolated_home).url == store.url


def test_a_duplicate_task_is_a_conflict_and_removal_cascades(backend, isolated_home):
    store = Store.create(isolated_home)
    store.add_task("rain", "/x", [pair("a"), pair("b", "val")], val_folder=None, val_fraction=0.5, seed=0)
    with pytest.raises(ConflictError, match="already exists"):
        store.add_task("rain", "/x", [pair("c")], val_folder=None, val_fraction=0.5, seed=0)
    assert [p.stem for p in store.pairs(store.task("rain"))] == ["a", "b"]
    store.remove_task("rain")
    with pytest.raises(NotFoundError):
        store.task("rain")
    with store.session() as s:
        assert s.scalars(select(Pair)).all() == []


def _add_task(home: str, barrier, results) -> None:
    store = Store.open(home)
    barrier.wait()
    try:
        store.add_task("rain", "/x", [pair("a")], val_folder=None, val_fraction=None, seed=0)
        results.put("added")
    except ConflictError as e:
        results.put(e.message)


def _claim(home: str, barrier, results) -> None:
    """Claim task 'rain' for a training run; stay alive while the other process tries."""
    import time

    store = Store.open(home)
    task = store.task("rain")
    barrier.wait()
    try:
        store.start_run(task, store.backbone(), "{}")
        results.put("claimed")
    except ConflictError as e:
        results.put(e.message)
    time.sleep(3)


def race(target, home) -> list[str]:
    """Two processes run `target` at the same moment; their outcomes, sorted."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=target, args=(str(home), barrier, results)) for _ in range(2)]
    for w in workers:
        w.start()
    outcomes = sorted(results.get(timeout=90) for _ in workers)
    for w in workers:
        w.join(timeout=60)
    return outcomes


def test_two_processes_adding_one_task_name_at_once_add_it_once(backend, isolated_home):
    Store.create(isolated_home)
    outcomes = race(_add_task, isolated_home)
    assert outcomes[0] == "added" and "task 'rain' already exists" in outcomes[1], outcomes
    assert [p.stem for p in Store.open(isolated_home).pairs(Store.open(isolated_home).task("rain"))] == ["a"]


def test_two_processes_starting_a_run_at_once_cannot_both_claim_the_task(backend, isolated_home):
    store = store_with_backbone(isolated_home)
    store.add_task("rain", "/x", [], val_folder=None, val_fraction=None, seed=0)
    outcomes = race(_claim, isolated_home)
    assert outcomes[0] == "claimed" and "is already being trained" in outcomes[1], outcomes


@pytest.mark.parametrize("age_minutes, refused", [(1, True), (60, False)])
def test_a_run_on_another_machine_blocks_a_second_training_while_its_heartbeat_is_fresh(
    backend, isolated_home, age_minutes, refused
):
    if backend != "postgresql":
        pytest.skip("a SQLite store is one machine's: its runs are judged by their process")
    store = store_with_backbone(isolated_home)
    task = store.add_task("rain", "/x", [], val_folder=None, val_fraction=None, seed=0)
    beat = (datetime.now(timezone.utc) - timedelta(minutes=age_minutes)).isoformat(timespec="seconds")
    with store.session() as s:
        s.add(
            TrainRun(
                task_id=task.id,
                backbone_id=store.backbone().id,
                status=RunStatus.RUNNING,
                config="{}",
                pid=1,
                host="gpu-node-7",
                heartbeat_at=beat,
            )
        )
    if refused:
        with pytest.raises(ConflictError, match=r"already being trained \(process 1 on gpu-node-7\)"):
            store.start_run(task, store.backbone(), "{}")
    else:  # its machine stopped showing life: the task can be trained again
        assert store.start_run(task, store.backbone(), "{}").host is not None


def test_the_commands_work_end_to_end_on_either_index(backend, isolated_home, tmp_path, wide_console):
    ok(invoke(*TINY_INIT))
    ok(invoke("task", "add", "noise", make_pairs(tmp_path / "pairs")))
    ok(invoke("train", "noise", *FAST_TRAIN))
    ok(invoke("eval", "noise"))
    ok(invoke("restore", "--task", "noise", tmp_path / "pairs" / "input", "-o", tmp_path / "out"))
    assert len(list((tmp_path / "out").iterdir())) == 6
    [row] = json.loads(out(ok(invoke("list", "--json"))))
    assert row["task"] == "noise" and row["adapter"].startswith("trained") and row["psnr"] is not None
    assert "is consistent" in err(ok(invoke("doctor")))
    assert (isolated_home / "colora.db").exists() == (backend == "sqlite")


def test_migrate_sqlite_to_postgresql_and_back_loses_nothing(
    pg_database, isolated_home, tmp_path, monkeypatch, wide_console
):
    ok(invoke(*TINY_INIT))
    ok(invoke("task", "add", "noise", make_pairs(tmp_path / "pairs")))
    ok(invoke("train", "noise", *FAST_TRAIN))
    ok(invoke("eval", "noise"))
    before = out(ok(invoke("list", "--json")))
    r = ok(invoke("store", "migrate", "--to", pg_database))
    assert "2 weight file(s) match their sha256" in err(r)
    assert "colora:***@" in out(r) + err(r) and ":colora@" not in out(r) + err(r)  # no password printed
    assert out(ok(invoke("--db", pg_database, "list", "--json"))) == before
    for args in (("list",), ("store", "migrate", "--to", pg_database)):  # one store, one live index
        r = invoke(*args)
        assert r.exit_code == 1 and "this store's index moved to postgresql+psycopg://colora:***@" in err(r)

    monkeypatch.setenv("COLORA_DB_URL", pg_database)  # the PostgreSQL copy is a working store
    ok(invoke("train", "noise", *FAST_TRAIN))
    with Store.open(isolated_home).session() as s:  # its ids continue after the copied ones
        assert [r.id for r in s.scalars(select(TrainRun).order_by(TrainRun.id))] == [1, 2]
    after = out(ok(invoke("list", "--json")))
    r = invoke("store", "migrate", "--to", "sqlite")
    assert r.exit_code == 1 and "colora.db exists" in err(r) and "move it aside" in err(r)
    (isolated_home / "colora.db").rename(tmp_path / "old.db")
    for extra in isolated_home.glob("colora.db-*"):
        extra.unlink()
    ok(invoke("store", "migrate", "--to", "sqlite"))
    monkeypatch.delenv("COLORA_DB_URL")
    assert out(ok(invoke("list", "--json"))) == after


def test_a_server_index_refuses_a_folder_that_is_not_its_own(backend, isolated_home, tmp_path):
    """A machine that names another folder (or mounts the store elsewhere) must not act on rows
    whose files it cannot see: `doctor --fix` there would drop the team's adapters."""
    if backend != "postgresql":
        pytest.skip("a SQLite index lives in its folder")
    ok(invoke(*TINY_INIT))
    other = tmp_path / "elsewhere"
    for args in (TINY_INIT, ("list",), ("doctor", "--fix")):
        r = invoke(*args, "--home", other)
        assert r.exit_code == 1 and "belongs to another store folder" in err(r), args
    assert out(ok(invoke("list", "--json"))) == "[]\n"


def test_a_read_only_database_role_can_list(backend, isolated_home, pg_database):
    if backend != "postgresql":
        pytest.skip("roles are a database server's")
    import psycopg
    from sqlalchemy.engine import make_url

    ok(invoke(*TINY_INIT))
    url = make_url(pg_database)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS colora_reader")
        conn.execute("CREATE ROLE colora_reader LOGIN PASSWORD 'reader'")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO colora_reader")
    try:
        reader = url.set(username="colora_reader", password="reader").render_as_string(hide_password=False)
        assert out(ok(invoke("--db", reader, "list", "--json"))) == "[]\n"
        r = invoke("--db", reader, "task", "add", "x", make_pairs(isolated_home.parent / "p"))
        assert (
            r.exit_code == 1 and "does not let this role change it" in err(r) and "reader" not in err(r).split("(")[0]
        )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP OWNED BY colora_reader")
            conn.execute("DROP ROLE IF EXISTS colora_reader")

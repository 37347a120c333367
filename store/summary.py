"""`colora list`'s rows, read with the standard library's sqlite3 (no SQLAlchemy, no torch).

Listing is the command people run most; importing SQLAlchemy's ORM alone costs longer than
the whole listing should (bench/speed.py). Five queries, whatever the number of tasks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping

from colora.core.errors import NotFoundError
from colora.store import database
from colora.store.paths import DB_NAME, db_url, resolve_home
from colora.store.processes import run_alive
from colora.store.status import RunStatus


def store_rows(home=None) -> list[dict]:
    """The listing of the store at `home`; a store an older colora wrote is migrated first."""
    from colora.store.migrations import SCHEMA_VERSION

    root = resolve_home(home)
    if db_url():  # a database server: through SQLAlchemy (the fast path is for the SQLite file)
        from sqlalchemy import text

        from colora.store.store import Store

        store = Store.open(root)
        with store._translated(), store.engine.connect() as conn:
            return summarize(lambda sql: conn.execute(text(sql)).mappings().all(), shared=True)
    if not (root / DB_NAME).is_file():
        raise NotFoundError(f"no colora store at {root}", hint="run `colora init` first (or pass --home)")
    try:
        conn = database.connect(root, read_only=True)
        conn.row_factory = sqlite3.Row
        try:
            moved = conn.execute("SELECT count(*) FROM settings WHERE key = 'migrated_to'").fetchone()[0]
            if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION and not moved:
                return summarize(lambda sql: conn.execute(sql).fetchall())
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise database.explain(e, root) or e from None
    from colora.store.store import Store  # older: migrate (needs SQLAlchemy); newer or moved: Store.open refuses it

    Store.open(root)
    return store_rows(root)


def summarize(query: Callable[[str], list[Mapping]], shared: bool = False) -> list[dict]:
    """One dict per task, sorted by name; `query` runs SQL and returns rows by column name.
    `shared`: a database server's index (runs on other machines are judged by their heartbeat)."""
    now = query("SELECT CURRENT_TIMESTAMP AS now")[0]["now"] if shared else None
    tasks = query("SELECT id, name FROM tasks ORDER BY name")
    counts = {
        (r["task_id"], r["split"]): r["n"]
        for r in query("SELECT task_id, split, count(*) AS n FROM pairs GROUP BY task_id, split")
    }
    adapters = {r["task_id"]: r for r in query("SELECT * FROM adapters")}
    backbones = {r["id"]: r["name"] for r in query("SELECT id, name FROM backbones")}
    evals = {
        r["task_id"]: r
        for r in query(
            "SELECT * FROM eval_results WHERE id IN "
            "(SELECT max(id) FROM eval_results WHERE subject = 'adapter' GROUP BY task_id)"
        )
    }
    inputs = {
        r["task_id"]: r["psnr"]
        for r in query(
            "SELECT task_id, psnr FROM eval_results WHERE id IN "
            "(SELECT max(id) FROM eval_results WHERE subject = 'input' GROUP BY task_id)"
        )
    }
    runs = {
        r["task_id"]: r
        for r in query("SELECT * FROM train_runs WHERE id IN (SELECT max(id) FROM train_runs GROUP BY task_id)")
    }
    rows = []
    for t in tasks:
        a = adapters.get(t["id"])
        e = evals.get(t["id"])
        e = e if a is not None and e is not None and e["adapter_id"] == a["id"] else None
        run = runs.get(t["id"])
        if (
            run is not None
            and run["status"] == RunStatus.RUNNING
            and run_alive(run["pid"], run["host"], run["heartbeat_at"], now=now, shared=shared)
        ):
            status = "training"
        elif run is not None and run["status"] != RunStatus.DONE:
            status = "interrupted" if a is None else "trained (a retraining was interrupted)"
        else:
            status = "untrained"
        if a is not None and (run is None or run["status"] == RunStatus.DONE):
            status = "recycled" if a["recycled"] else "trained"
        harmful = e is not None and t["id"] in inputs and e["psnr"] < inputs[t["id"]]
        if harmful:  # do no harm: say it where people look
            status += " (worse than the input!)"
        rows.append(
            {
                "task": t["name"],
                "train_pairs": counts.get((t["id"], "train"), 0),
                "val_pairs": counts.get((t["id"], "val"), 0),
                "adapter": status,
                "backbone": backbones[a["backbone_id"]] if a is not None else None,
                "trainable_params": a["trainable_params"] if a is not None else None,
                "percent_of_backbone": round(100 * a["trainable_params"] / a["backbone_params"], 2)
                if a is not None
                else None,
                "plan_method": a["plan_method"] if a is not None else None,
                "budget_percent": round(100 * a["budget"], 2) if a is not None and a["budget"] is not None else None,
                "size_bytes": a["size_bytes"] if a is not None else None,
                "psnr": round(e["psnr"], 3) if e is not None else None,
                "ssim": round(e["ssim"], 4) if e is not None else None,
                "worse_than_input": harmful,
            }
        )
    return rows

"""`colora list`'s rows, read with the standard library's sqlite3 (no SQLAlchemy, no torch).

Listing is the command people run most; importing SQLAlchemy's ORM alone costs longer than
the whole listing should (bench/speed.py). Five queries, whatever the number of tasks.
"""
from __future__ import annotations

import sqlite3

from core.errors import NotFoundError
from store import database
from store.paths import DB_NAME, resolve_home
from store.processes import pid_alive
from store.status import RunStatus


def store_rows(home=None) -> list[dict]:
    """The listing of the store at `home`; a store an older colora wrote is migrated first."""
    from store.migrations import SCHEMA_VERSION

    root = resolve_home(home)
    if not (root / DB_NAME).is_file():
        raise NotFoundError(f"no colora store at {root}", hint="run `colora init` first (or pass --home)")
    try:
        conn = database.connect(root, read_only=True)
        conn.row_factory = sqlite3.Row
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return summarize(conn)
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise database.explain(e, root) or e from None
    from store.store import Store  # older: migrate (needs SQLAlchemy); newer: Store.open refuses it

    Store.open(root)
    return store_rows(root)


def summarize(conn: sqlite3.Connection) -> list[dict]:
    """One dict per task, sorted by name."""
    tasks = conn.execute("SELECT id, name FROM tasks ORDER BY name").fetchall()
    counts = {(r[0], r[1]): r[2] for r in conn.execute(
        "SELECT task_id, split, count(*) FROM pairs GROUP BY task_id, split")}
    adapters = {r["task_id"]: r for r in conn.execute("SELECT * FROM adapters")}
    backbones = {r["id"]: r["name"] for r in conn.execute("SELECT id, name FROM backbones")}
    evals = {r["task_id"]: r for r in conn.execute(
        "SELECT * FROM eval_results WHERE id IN "
        "(SELECT max(id) FROM eval_results WHERE subject = 'adapter' GROUP BY task_id)")}
    inputs = {r["task_id"]: r["psnr"] for r in conn.execute(
        "SELECT task_id, psnr FROM eval_results WHERE id IN "
        "(SELECT max(id) FROM eval_results WHERE subject = 'input' GROUP BY task_id)")}
    runs = {r["task_id"]: r for r in conn.execute(
        "SELECT * FROM train_runs WHERE id IN (SELECT max(id) FROM train_runs GROUP BY task_id)")}
    rows = []
    for t in tasks:
        a = adapters.get(t["id"])
        e = evals.get(t["id"])
        e = e if a is not None and e is not None and e["adapter_id"] == a["id"] else None
        run = runs.get(t["id"])
        if run is not None and run["status"] == RunStatus.RUNNING and pid_alive(run["pid"]):
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
        rows.append({
            "task": t["name"],
            "train_pairs": counts.get((t["id"], "train"), 0),
            "val_pairs": counts.get((t["id"], "val"), 0),
            "adapter": status,
            "backbone": backbones[a["backbone_id"]] if a is not None else None,
            "trainable_params": a["trainable_params"] if a is not None else None,
            "percent_of_backbone": round(100 * a["trainable_params"] / a["backbone_params"], 2) if a is not None else None,
            "plan_method": a["plan_method"] if a is not None else None,
            "budget_percent": round(100 * a["budget"], 2) if a is not None and a["budget"] is not None else None,
            "size_bytes": a["size_bytes"] if a is not None else None,
            "psnr": round(e["psnr"], 3) if e is not None else None,
            "ssim": round(e["ssim"], 4) if e is not None else None,
            "worse_than_input": harmful,
        })
    return rows

"""`colora list`'s table: columns and cells from the store's rows (store/summary.py). No Rich, no Typer."""

from __future__ import annotations

from colora.core.text import human_bytes, human_count

COLUMNS = ["task", "pairs (train/val)", "adapter", "plan", "trainable", "% backbone (budget)", "size", "PSNR", "SSIM"]
EMPTY_NOTE = "No tasks yet. Add one with `colora task add NAME FOLDER`."


def cells(rows: list[dict]) -> list[list]:
    return [
        [
            r["task"],
            f"{r['train_pairs']}/{r['val_pairs']}",
            r["adapter"],
            r["plan_method"],
            human_count(r["trainable_params"]),
            _percent(r),
            human_bytes(r["size_bytes"]),
            r["psnr"],
            r["ssim"],
        ]
        for r in rows
    ]


def _percent(row: dict) -> str | None:
    if row["percent_of_backbone"] is None:
        return None
    budget = f" ({row['budget_percent']:g}%)" if row["budget_percent"] is not None else ""
    return f"{row['percent_of_backbone']:.2f}%{budget}"

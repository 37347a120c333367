"""`colora eval`."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer

from colora.cli import output
from colora.cli.options import Device, Home, Json, Tile, task_names
from colora.core.defaults import DEVICE, TILE


def eval_task(
    name: Annotated[str, typer.Argument(help="Task name.")],
    as_json: Json = False,
    report: Annotated[
        Optional[Path],
        typer.Option(
            "--report",
            help="Also write an HTML report (metrics, example crops, loss curve, rank plan) into this folder.",
        ),
    ] = None,
    against: Annotated[
        Optional[str],
        typer.Option(
            "--against",
            help="Also score the adapters of these other tasks (comma-separated) on this task's validation pairs.",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier report in the --report folder.")
    ] = False,
    device: Device = DEVICE,
    tile: Tile = TILE,
    self_ensemble: Annotated[
        bool,
        typer.Option(
            "--self-ensemble",
            help="Also score the adapter restoring each image as the average over its 8 flips and "
            "quarter turns (row `adapter x8`; what `restore --self-ensemble` does).",
        ),
    ] = False,
    home: Home = None,
) -> None:
    """PSNR and SSIM on the task's validation pairs: input, backbone alone, backbone + adapter.

    Example: colora eval rain --json

    Example: colora eval rain --report reports/rain --against noise,haze
    """
    from colora.api.evaluation import evaluate_task
    from colora.store.store import Store

    if overwrite and report is None:
        raise typer.BadParameter("--overwrite only applies to a --report folder", param_hint="--overwrite")
    store = Store.open(home)
    others = task_names(against, "--against") if against is not None else []
    command = " ".join(
        ["colora", "eval", name]
        + (["--report", shlex.quote(str(report))] if report else [])
        + (["--against", ",".join(others)] if others else [])
        + (["--self-ensemble"] if self_ensemble else [])
    )
    done = evaluate_task(
        store,
        name,
        against=others,
        report=report,
        overwrite=overwrite,
        device=device,
        tile=tile,
        command=command,
        self_ensemble=self_ensemble,
        reporter=output.REPORTER,
    )
    if as_json:
        data = {"task": name, "backbone": done.backbone.name, "results": [_rounded(r) for r in done.rows]}
        if done.report is not None:
            data["report"] = str(done.report)
        output.print_json(data)
    else:
        output.table(
            f"{name}: {done.n_val_pairs} validation pairs, backbone '{done.backbone.name}' ({done.backbone.label})",
            ["subject", "PSNR (dB)", "SSIM", "ΔPSNR vs input"],
            [
                [r["subject"], f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", f"{r['delta_psnr_vs_input']:+.2f}"]
                for r in done.rows
            ],
        )
    if done.harm is not None:
        output.note(
            f"Warning: the adapter of '{name}' is worse than the unrestored input on these validation pairs "
            f"({-done.harm:+.2f} dB): restoring with it would harm such images. Train longer, add pairs, "
            "or check that inputs and targets are paired right."
        )
    if done.report is not None:
        output.note(f"Wrote the report to {done.report}")


def _rounded(row: dict) -> dict:
    """A result row as JSON shows it: dB to 3 places, SSIM to 4."""
    return row | {
        "psnr": round(row["psnr"], 3),
        "ssim": round(row["ssim"], 4),
        "delta_psnr_vs_input": round(row["delta_psnr_vs_input"], 3),
    }

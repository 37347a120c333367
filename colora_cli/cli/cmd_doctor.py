"""`colora doctor`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from colora.cli import output
from colora.cli.options import Home, Json
from colora.core.errors import IntegrityError


def doctor(
    fix_: Annotated[
        bool,
        typer.Option("--fix", help="Repair what is safe: temp files, dead runs; re-index weight files the index lost."),
    ] = False,
    reindex: Annotated[
        bool,
        typer.Option(
            "--reindex", help="Rebuild a damaged or lost index from the weight files (a damaged one is kept aside)."
        ),
    ] = False,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Check the store's index against its files; exit code 1 if errors remain.

    Example: colora doctor --fix
    """
    from colora.api.doctor import run_doctor

    report = run_doctor(home, fix=fix_, reindex=reindex)
    if report.reindexed is not None:
        _print_reindexed(report)
    if as_json:
        output.print_json([asdict(f) for f in report.findings])
    elif report.findings:
        output.table(
            None,
            ["severity", "finding", "path", "state"],
            [
                [f.severity, f.what, f.path, "fixed" if f.fixed else ("fixable with --fix" if f.fixable else "")]
                for f in report.findings
            ],
            justify_numbers=False,
        )
    if report.errors:
        raise IntegrityError(
            f"{len(report.errors)} error(s) in the store at {report.root}",
            hint="`colora doctor --fix` repairs what is safe; retrain or re-import the rest",
        )
    left = len(report.leftovers)
    output.note(
        f"Store at {report.root} is consistent" + (f" ({left} thing(s) to tidy with --fix)" if left else "") + "."
    )


def _print_reindexed(report) -> None:
    r = report.reindexed
    if r.set_aside is not None:
        output.note(f"The damaged index was moved to {r.set_aside} (kept, not deleted); a new one was made.")
    output.note(f"Re-indexed {len(r.indexed)} weight file(s) from their own metadata.")
    for path, why in r.skipped:
        output.note(f"Not indexed: {path.relative_to(report.root)} ({why})")
    if r.indexed:
        output.note(
            "Tasks come back without their pairs (only the old index knew them): "
            "`colora task rm NAME --yes` and `colora task add NAME FOLDER` to register them again."
        )

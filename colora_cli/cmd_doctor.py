"""`colora doctor`."""
from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer

from colora_cli import output
from colora_cli.options import Home, Json
from core.errors import IntegrityError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from store.doctor import check, fix  # noqa: F401
    from store.store import Store  # noqa: F401


def doctor(
    fix_: Annotated[bool, typer.Option("--fix", help="Repair what is safe: temp files, orphan files, dead runs.")] = False,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Check the store's index against its files; exit code 1 if errors remain.

    Example: colora doctor --fix
    """
    from store.doctor import check, fix
    from store.store import Store
    store = Store.open(home)
    findings = check(store)
    if fix_:
        findings = fix(store, findings)
    if as_json:
        output.print_json([asdict(f) for f in findings])
    elif findings:
        output.table(None, ["severity", "finding", "path", "state"],
                     [[f.severity, f.what, f.path, "fixed" if f.fixed else ("fixable with --fix" if f.fixable else "")]
                      for f in findings], justify_numbers=False)
    errors = [f for f in findings if f.severity == "error" and not f.fixed]
    cleanups = [f for f in findings if f.severity == "cleanup" and not f.fixed]
    if errors:
        raise IntegrityError(f"{len(errors)} error(s) in the store at {store.root}",
                             hint="`colora doctor --fix` repairs what is safe; retrain or re-import the rest")
    output.note(f"Store at {store.root} is consistent" + (f" ({len(cleanups)} leftover(s) to clean with --fix)" if cleanups else "") + ".")

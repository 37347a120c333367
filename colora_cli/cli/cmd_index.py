"""`colora store migrate`: the index between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Annotated

import typer

from colora.cli import output
from colora.cli.options import Home, command_group

app = command_group("The store's index: copy it between SQLite and PostgreSQL.")


@app.callback()
def group() -> None:  # a group even with one command (Typer would otherwise run `migrate` as `store`)
    pass


@app.command("migrate")
def migrate(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="URL",
            help="postgresql+psycopg://user@host/db, or sqlite (the store folder's own colora.db).",
        ),
    ],
    home: Home = None,
) -> None:
    """Copy the index into an empty database, then verify counts, rows and weight files.

    The weight files stay in the store folder; the old index is left as it was. Example:
    colora store migrate --to postgresql+psycopg://me@db-host/colora   (back: --db URL store migrate --to sqlite)
    """
    from colora.api.stores import migrate_index

    done = migrate_index(home, to)
    output.table(
        f"Copied the index from {done.source} to {done.dest}",
        ["table", "rows"],
        [[name, str(n)] for name, n in done.counts.items()],
    )
    output.note(
        f"Verified: every table's rows hash alike on both sides; {done.files_checked} weight file(s) match "
        f"their sha256. Use the new index with --db / $COLORA_DB_URL"
        + (" unset." if done.dest.endswith("colora.db") else ".")
    )

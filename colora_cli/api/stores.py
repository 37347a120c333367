"""The store's index between engines: SQLite (the default) and PostgreSQL (a team's shared index)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Migrated:
    source: str
    dest: str
    counts: dict[str, int]
    files_checked: int


def migrate_index(home, to: str) -> Migrated:
    """Copy the index of the store at `home` (wherever it is now) to `to`: a PostgreSQL URL, or
    "sqlite" for the store folder's own colora.db. Verified by counts, row hashes and file hashes;
    the source is then marked as moved (kept, but colora no longer uses it)."""
    from colora.core.errors import ConflictError, InvalidInputError
    from colora.store.database import shown
    from colora.store.store import Store
    from colora.store.transfer import copy_index

    source = Store.open(home)
    to_sqlite = to == "sqlite"
    if to_sqlite and not source.url or not to_sqlite and source.url and shown(source.url) == shown(to):
        raise InvalidInputError(
            f"the index is already in {source.index_name}",
            hint="give --to another place: a postgresql+psycopg:// URL, or sqlite",
        )
    from colora.store.paths import DB_NAME

    if to_sqlite and (source.root / DB_NAME).exists():
        raise ConflictError(
            f"{source.root / DB_NAME} exists (the index this store had before it moved?)",
            hint="move it aside, with its -wal and -shm files, and migrate again",
        )
    dest = Store.create(source.root, url="" if to_sqlite else to, bind=False)
    done = copy_index(source, dest)
    dest._bind_folder("adopt")
    return Migrated(source.index_name, dest.index_name, done.counts, done.files_checked)

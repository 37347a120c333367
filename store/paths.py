"""Where the store lives, and keeping every path inside it."""

from __future__ import annotations

import os
from pathlib import Path

from colora.core.errors import InvalidInputError

ENV_HOME = "COLORA_HOME"
ENV_DB_URL = "COLORA_DB_URL"
DB_NAME = "colora.db"


def db_url() -> str | None:
    """The index's database URL when it is not the store's own SQLite file: `--db` (which sets
    $COLORA_DB_URL) or $COLORA_DB_URL, e.g. postgresql+psycopg://user@host/colora."""
    return os.environ.get(ENV_DB_URL) or None


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """--home, else $COLORA_HOME, else the platform's user data dir."""
    if home:
        return Path(home).expanduser().resolve()
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser().resolve()
    from platformdirs import user_data_dir

    return Path(user_data_dir("colora", appauthor=False)).resolve()


def inside(root: Path, relative: str) -> Path:
    """`root / relative`, refusing anything that would land outside root."""
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise InvalidInputError(
            f"path {relative!r} escapes the store (a link inside the store points out of it?)",
            hint="colora makes no links: remove the link, then run `colora doctor`",
        )
    return path

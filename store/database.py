"""Connecting to the index and saying plainly what went wrong with it.

The index is the store's own SQLite file (colora.db), read with plain sqlite3 by the listing and
through SQLAlchemy by the ORM; or, for a team, a PostgreSQL database named by a URL (`--db`,
$COLORA_DB_URL), with the weight files in the store folder every machine mounts.

* A store on a read-only mount (a shared, read-only copy of a zoo) opens read-only: reading
  commands work, writing ones are refused with a clear message. A WAL database on read-only
  media whose -shm file is absent can only be opened as `immutable`; that is the fallback.
* A damaged index (a truncated or overwritten colora.db) is reported as such, with the way
  back: `colora doctor --reindex` rebuilds the index from the weight files.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from colora.core.errors import ColoraError, ConflictError, IntegrityError, InvalidInputError, NotFoundError
from colora.store.paths import DB_NAME

BUSY_TIMEOUT_S = 30


def writable(root: Path) -> bool:
    """Whether this process may write the store's index (False on a read-only mount, even for root)."""
    db = root / DB_NAME
    return os.access(root, os.W_OK) and (not db.exists() or os.access(db, os.W_OK))


def connect(root: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to the store's index; read-only ones fall back to `immutable` where they must."""
    uri = (root / DB_NAME).absolute().as_uri()  # percent-encoded: a '?' or '#' in a folder name is a name
    if not read_only:
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
    try:
        conn = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        return sqlite3.connect(uri + "?immutable=1", uri=True, timeout=BUSY_TIMEOUT_S)


SERVER_SCHEMES = ("postgresql",)
CONNECT_TIMEOUT_S = 5  # a host that never answers is reported, not waited for
SECRET_QUERY_KEYS = ("password", "sslpassword", "passfile", "sslkey")


def parse_url(url: str):
    """A database URL parsed, or InvalidInputError that never quotes it (it may hold a password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidInputError(
            "the database URL is not a URL", hint="give one like postgresql+psycopg://user@host/colora"
        ) from None
    except ValueError:  # SQLAlchemy's int() of the port
        raise InvalidInputError(
            "the database URL's port is not a number", hint="write host:5432, or leave it out"
        ) from None
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise InvalidInputError(f"the database URL's port {parsed.port} is not a TCP port", hint="ports run 1-65535")
    if "@" in (parsed.host or ""):
        # an unencoded "@" in the password: the rest of the password would be read as the host name
        raise InvalidInputError(
            "the database URL has more than one '@' before its host",
            hint="percent-encode an '@' in the user name or password as %40",
        )
    return parsed


def server_engine(url: str):
    """A SQLAlchemy engine for a database server's URL (PostgreSQL through psycopg)."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import NoSuchModuleError

    parsed = parse_url(url)
    if parsed.get_backend_name() not in SERVER_SCHEMES:
        raise InvalidInputError(
            f"colora keeps its index in SQLite (the default) or PostgreSQL, not {parsed.get_backend_name()!r}",
            hint="give a postgresql+psycopg://... URL",
        )
    try:
        return create_engine(
            parsed.set(drivername="postgresql+psycopg") if parsed.drivername == "postgresql" else parsed,
            pool_pre_ping=True,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
        )
    except (ModuleNotFoundError, NoSuchModuleError):
        raise InvalidInputError("a PostgreSQL index needs psycopg", hint='pip install "colora[postgres]"') from None


def shown(url: str) -> str:
    """A database URL as it may be printed: without its password."""
    try:
        parsed = parse_url(url)
        hidden = {k: "***" for k in parsed.query if k.lower() in SECRET_QUERY_KEYS}
        return parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - never echo an unparsable URL: it may hold a password
        return "(the database URL)"


def _secrets(url: str) -> list[str]:
    """Every form in which the URL's password (and secret query values) might be quoted back."""
    from urllib.parse import quote, unquote, urlsplit

    found: list[str] = []
    # the raw text between "user:" and the last "@" of the address, whatever a parser makes of it
    rest = url.partition("://")[2]
    try:
        netloc = urlsplit(url).netloc
    except ValueError:  # e.g. an unbalanced "[" read as an IPv6 host
        netloc = rest.rpartition("@")[0] + "@"
    for userinfo in {netloc.rpartition("@")[0], rest.rpartition("@")[0]}:
        if ":" in userinfo:
            found.append(userinfo.partition(":")[2])
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        found.append(parsed.password or "")
        for key, value in parsed.query.items():
            if key.lower() in SECRET_QUERY_KEYS:
                found.extend([value] if isinstance(value, str) else list(value))
    except Exception:  # noqa: BLE001 - the raw text above is still scrubbed
        pass
    forms = {form for secret in found if secret for form in (secret, unquote(secret), quote(secret, safe=""))}
    return sorted((f for f in forms if len(f) >= 2), key=len, reverse=True)  # longest first: no partial leftovers


def scrub(text: str, url: str | None) -> str:
    """`text` without the URL's password (a server's error message may quote the connection string,
    and colora lower-cases some messages before explaining them, so the match ignores case)."""
    import re

    if not url:
        return text
    for secret in _secrets(url):
        text = re.sub(re.escape(secret), "***", text, flags=re.IGNORECASE)
    return text


def explain(error: BaseException, root: Path) -> ColoraError | None:
    """The store-level meaning of a database error (sqlite3's own, or SQLAlchemy's wrapper of one);
    None for errors this module does not know (they stay as they are)."""
    text = str(getattr(error, "orig", None) or error).lower()
    if "malformed" in text or "not a database" in text or "file is encrypted" in text:
        return IntegrityError(
            f"the store's index {root / DB_NAME} is damaged ({text})",
            hint="rebuild it from the weight files with `colora doctor --reindex` "
            "(the damaged file is kept aside, not deleted)",
        )
    if "no such table" in text or "no such column" in text or "undefinedtable" in text or "undefinedcolumn" in text:
        # emptied (a 0-byte file), or a table dropped by hand: the weight files can rebuild it
        return IntegrityError(
            f"the store's index {root / DB_NAME} is incomplete ({text.strip().splitlines()[0][:120]})",
            hint="rebuild it from the weight files with `colora doctor --reindex` "
            "(the damaged file is kept aside, not deleted)",
        )
    if "permission denied" in text or "insufficientprivilege" in text:
        return ConflictError(
            f"the store's database does not let this role change it ({text.strip().splitlines()[0][:160]})",
            hint="reading commands work with a read-only role; ask for write rights to change the store",
        )
    if "readonly" in text or "read-only" in text:
        return ConflictError(
            f"the store at {root} is read-only; this command would change it",
            hint="copy the store somewhere writable (or mount it read-write) to change it",
        )
    if "locked" in text or "busy" in text:
        return ConflictError(
            f"the store at {root} is busy: another colora has held it for more than {BUSY_TIMEOUT_S} s",
            hint="try again when the other command has finished",
        )
    if "does not exist" in text and "database" in text:
        return NotFoundError(
            f"the store's database does not exist ({text.strip().splitlines()[0][:200]})",
            hint="create it on the server (createdb), then run `colora init`",
        )
    if (
        "connection refused" in text
        or "could not connect" in text
        or "connection failed" in text
        or "authentication failed" in text
        or "could not translate host name" in text
    ):
        return ConflictError(
            f"cannot reach the store's database ({text.strip().splitlines()[0][:200]})",
            hint="check the --db / $COLORA_DB_URL address, that the server runs, and the credentials",
        )
    if "database or disk is full" in text or "no space left" in text or "diskfull" in text:
        return ConflictError(
            f"the disk under the store's index is full ({text.strip().splitlines()[0][:120]})",
            hint="free some space and run the command again; the store is as it was before it",
        )
    if "unable to open database" in text or "disk i/o error" in text:
        return IntegrityError(
            f"cannot open the store's index {root / DB_NAME} ({text})",
            hint="check that the folder is readable and the disk is healthy",
        )
    return None

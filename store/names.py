"""Task and backbone names are slugs: they become folder names inside the store."""

from __future__ import annotations

import re

from colora.core.errors import InvalidInputError

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # the whole name (fullmatch): no trailing newline
RESERVED = {"auto", "all", "none"}


def validate_slug(name: str, what: str = "task") -> str:
    if not isinstance(name, str) or not _SLUG.fullmatch(name):
        raise InvalidInputError(
            f"invalid {what} name {name!r}",
            hint="use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit (e.g. rain-heavy)",
        )
    if name in RESERVED:
        raise InvalidInputError(f"{what} name {name!r} is reserved", hint="choose another name")
    return name

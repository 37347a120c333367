"""Numbers as people read them (pure Python: the CLI and the report both print them)."""

from __future__ import annotations


def human_bytes(n: int | float | None) -> str | None:
    if n is None:
        return None
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return None


def human_count(n: int | None) -> str | None:
    if n is None:
        return None
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)

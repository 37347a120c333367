"""Whether the process that claims a training run still exists.

On this machine the process is probed. A run on another machine (a team store on PostgreSQL)
cannot be probed: it counts as alive while its heartbeat (written at start and about once a
minute while it trains, on the database's clock) is younger than STALE_AFTER_S. A SQLite store
is one machine's: its runs are always probed (a laptop whose host name changes keeps its runs).
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone

STALE_AFTER_S = 15 * 60


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_alive(
    pid: int | None, host: str | None, heartbeat_at: str | None, *, now: str | None = None, shared: bool = True
) -> bool:
    """The process of a run marked running: probed here, judged by its heartbeat (against `now`,
    the database's clock, when given) on another machine of a shared store."""
    if not shared or host is None or host == this_host():
        return pid_alive(pid)
    try:
        beat = as_utc(heartbeat_at) if heartbeat_at else None
        clock = as_utc(now) if now else datetime.now(timezone.utc)
    except (ValueError, TypeError):
        return True  # unreadable: assume alive (a second training is refused, never two at once)
    return beat is not None and abs((clock - beat).total_seconds()) < STALE_AFTER_S


def as_utc(value) -> datetime:
    """A timestamp (ISO text or datetime; naive ones are UTC) as an aware UTC datetime."""
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return stamp.replace(tzinfo=timezone.utc) if stamp.tzinfo is None else stamp.astimezone(timezone.utc)

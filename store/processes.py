"""Whether the process that claims a training run still exists.

On this machine the process is probed. A run on another machine (a team store on PostgreSQL)
cannot be probed: it counts as alive while its heartbeat (written at start and about once a
minute while it trains) is younger than STALE_AFTER_S.
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


def run_alive(pid: int | None, host: str | None, heartbeat_at: str | None) -> bool:
    """The process of a run marked running: probed here, judged by its heartbeat elsewhere."""
    if host is None or host == this_host():
        return pid_alive(pid)
    try:
        beat = datetime.fromisoformat(heartbeat_at) if heartbeat_at else None
    except ValueError:
        beat = None
    return beat is not None and (datetime.now(timezone.utc) - beat).total_seconds() < STALE_AFTER_S

"""One supervisor per run directory: an exclusive ``flock`` held for the whole run.

The kernel drops the lock when its holder dies, however it dies, so a lock is never
stale; ``status`` learns whether a supervisor is alive by trying the lock itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from oomguard.errors import ConfigError
from oomguard.safe_files import open_fd, read_private

LOCK_NAME = "supervisor.lock"


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = open_fd(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(self.path)
            os.close(fd)
            who = f" (pid {holder.get('pid')} on {holder.get('host')})" if holder else ""
            raise ConfigError(
                f"run directory {str(self.path.parent)!r} is in use by another supervisor{who}; "
                "wait for it to finish or use another --run-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
            ).encode(),
        )
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def read_holder(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(read_private(path) or b"{}"))
    except (OSError, ValueError):
        return {}


def supervisor_alive(run_dir: Path) -> dict[str, Any] | None:
    """The holder's pid/host if a supervisor holds the run directory now, else ``None``."""
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # none, or a planted link: no supervisor of ours holds it
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(path) or {"pid": None}
    finally:
        os.close(fd)
    return None

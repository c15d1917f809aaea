"""How a run stops on purpose: SIGTERM, and a full disk.

SIGTERM is what systemd, ``docker stop`` and Kubernetes send. While a run is in progress
in the main thread, it raises :class:`~oomguard.errors.Terminated`, a KeyboardInterrupt:
the supervisor stops on it exactly as on Ctrl-C (what finished is committed, the workers
are stopped, the cgroups removed, the summary written, the journal's session closed).
Later SIGTERMs are ignored: the first is stopping the run, and its cleanup must not be cut
short. The handler that was there before comes back when the run is over.

A full disk (``ENOSPC``, a quota, SQLite's "database or disk is full") stops a run with
everything committed intact; :func:`disk_full` turns whatever error it surfaced as into
one line that names the path and says how to carry on.
"""

from __future__ import annotations

import errno
import signal
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from oomguard.errors import DiskFullError, SinkError, Terminated

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextmanager
def sigterm_stops_the_run() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the block (only where signals can be handled:
    the main thread); elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ignore(signum: int, frame: FrameType | None) -> None:
        pass  # a Python handler, not SIG_IGN: an ignored signal stays ignored across exec

    def terminate(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, ignore)
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def resume_hint(run_dir: Path) -> str:
    return f"oomguard resume {run_dir.resolve()}"


def terminated(run_dir: Path) -> Terminated:
    return Terminated(
        f"stopped by SIGTERM: what finished is committed; carry on with `{resume_hint(run_dir)}`"
    )


def disk_full(err: BaseException, run_dir: Path, journal: Path) -> DiskFullError | None:
    """The one-line error for ``err`` if a full disk is what it comes down to, else None."""
    for cause in _chain(err):
        path: Path | str | None = None
        if isinstance(cause, SinkError) and _is_full(cause.__cause__):
            path = cause.path
        elif isinstance(cause, OSError) and cause.errno in FULL_ERRNOS:
            path = cause.filename
        elif _is_full(cause):
            path = journal
        else:
            continue
        where = f"the device of {path}" if path is not None else "a device the run writes to"
        return DiskFullError(
            f"no space left on {where}: the run stopped and nothing committed is lost; free "
            f"space and run `{resume_hint(run_dir)}`"
        )
    return None


def _is_full(err: BaseException | None) -> bool:
    if isinstance(err, OSError):
        return err.errno in FULL_ERRNOS
    return isinstance(err, sqlite3.OperationalError) and "disk is full" in str(err)


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err``, then what it was raised from or during, depth first, each once."""
    seen: set[int] = set()
    todo = [err]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)

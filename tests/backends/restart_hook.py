"""A restart hook, as a user would write one for a server oomguard did not start.

    python tests/backends/restart_hook.py PORT PIDFILE [server options...]

Stops the server whose pid is in PIDFILE (if any) and waits until it is gone (it holds
the port: a new server started beside it could not listen), starts a fresh one detached,
records its pid, and returns: oomguard then waits for /health.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

SERVER = Path(__file__).parents[2] / "examples" / "model_server" / "server.py"


def main(port: str, pidfile: str, *options: str) -> None:
    path = Path(pidfile)
    if path.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            pidfd = os.pidfd_open(int(path.read_text()))  # not our child: no waitpid
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                select.select([pidfd], [], [], 30)  # readable once it has exited
            finally:
                os.close(pidfd)
    server = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", port, *options],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    path.write_text(str(server.pid))


if __name__ == "__main__":
    main(*sys.argv[1:])

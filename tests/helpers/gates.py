"""Gates: an item (``{"kind": "gate"}`` in tests/engine/workloads.py) that runs until the
test says so, synchronised on FIFOs, never on sleeps.

``Gate.item()`` is the item; ``wait_running(proc)`` returns the pid of the worker running it
once it runs (failing at once if ``proc``, the oomguard process, ended instead);
``open()`` lets it finish.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

WAIT = 60.0  # seconds: a gate that never opens is a failure, not a hung test


class Gate:
    def __init__(self, directory: Path, name: str = "gate", *, once: bool = False) -> None:
        self.ready = directory / f"{name}.ready"
        self.go = directory / f"{name}.go"
        self.marker = directory / f"{name}.passed" if once else None
        os.mkfifo(self.ready)
        os.mkfifo(self.go)

    def item(self) -> dict[str, Any]:
        item = {"kind": "gate", "ready": str(self.ready), "go": str(self.go)}
        if self.marker is not None:
            item["marker"] = str(self.marker)  # only the first attempt waits
        return item

    def wait_running(self, proc: subprocess.Popen[Any] | None = None) -> int:
        """The pid of the worker once it runs the item."""
        fd = os.open(self.ready, os.O_RDONLY | os.O_NONBLOCK)
        try:
            deadline = time.monotonic() + WAIT
            data = b""
            while not data.endswith(b"\n"):
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"oomguard ended ({proc.returncode}) before the gate")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no item reached {self.ready} in {WAIT:.0f} s")
                readable, _, _ = select.select([fd], [], [], 0.2)
                if readable:
                    data += os.read(fd, 64)
            return int(data)
        finally:
            os.close(fd)

    def open(self) -> None:
        """Let the waiting item finish (it is past ``ready``: it opens ``go`` next)."""
        with open(self.go, "w") as go:
            go.write("go\n")

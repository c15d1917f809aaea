"""Self-pipes: a thread (or a signal) makes a selector wake; the waker writes a byte, the
woken side drains them all (the bytes say only "look", never what)."""

from __future__ import annotations

import os


def drain(fd: int) -> None:
    """Read a non-blocking descriptor until nothing is left."""
    try:
        while os.read(fd, 65536):
            pass
    except BlockingIOError:
        pass


class WakePipe:
    """A non-blocking pipe: :meth:`wake` from any thread, :meth:`fileno` in a selector."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def fileno(self) -> int:
        return self.read_fd

    def wake(self) -> None:
        try:
            os.write(self.write_fd, b"!")
        except OSError:
            pass  # full of wake-ups already (the sleeper will come), or closed (it is gone)

    def drain(self) -> None:
        drain(self.read_fd)

    def close(self) -> None:
        # idempotent: closing a number twice could close whatever reused it meanwhile
        fds, self.read_fd, self.write_fd = (self.read_fd, self.write_fd), -1, -1
        for fd in fds:
            if fd < 0:
                continue
            try:
                os.close(fd)
            except OSError:
                pass

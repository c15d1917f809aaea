"""The fork server: workers start in milliseconds, not as a fresh interpreter each time.

A fresh interpreter costs tens of milliseconds and more where ``site`` is busy (the
overhead benchmark prints what it costs on the machine), paid again for every replacement
after an OOM kill. Like multiprocessing's
``forkserver`` start method, oomguard starts one small server per run: a fresh,
single-threaded interpreter (never a fork of the threaded supervisor) that imports only
the worker module and then forks a worker per request. It imports none of the user's
code, so nothing the user's libraries start (threads, GPU contexts) is ever forked.

Started as ``python -m oomguard.engine.fork_server_main FD`` with one end of a SOCK_SEQPACKET
socket pair, in the workers' environment (so ``MALLOC_ARENA_MAX`` and friends, read by
glibc once at start-up, hold for every child). Messages, one JSON object per packet:

    supervisor -> server   b"spawn" [b"\0" + a cgroup.procs path] with two descriptors
                           (the worker's socket, its slot); with a path, the child writes
                           its own pid there first (joins its cgroup: moving a process
                           costs the kernel milliseconds, paid by the child, not the
                           supervisor), before anything else runs
    server -> supervisor   {"ready": pid} once | {"pid": N} per spawn
                           | {"exit": N, "code": C} when a worker ends (it reaps them)

The exit code is Popen's: negative for the signal that ended the worker. The supervisor
sees a worker die through its pidfd (readable for any process, not only children) and
reads its code from here. End of the socket ends the server: the supervisor is gone,
however it died, and every worker goes with the server (each asked the kernel to kill it
when the server dies). Started with ``--die-with PID``, the server itself dies with the
supervisor too. The server adopts what a dead worker left running (a subreaper), and
kills it: nothing an item started outlives its worker.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys

from oomguard.limits.process import become_subreaper, children_of, die_with_parent, kill_trees
from oomguard.wakeup import drain


def send(sock: socket.socket, message: dict[str, int]) -> None:
    sock.send(json.dumps(message).encode())


def join(path: str, conn_fd: int) -> bool:
    """Write our pid into ``path``; on failure tell the supervisor (a fatal message)."""
    try:
        with open(path, "w") as procs:
            procs.write(str(os.getpid()))
        return True
    except OSError as err:
        from multiprocessing.connection import Connection

        Connection(conn_fd).send(("fatal", f"a worker cannot join its cgroup {path}: {err}"))
        return False


def run_child(
    sock: socket.socket,
    selector: selectors.BaseSelector,
    wake: tuple[int, int],
    fds: list[int],
    join_path: str | None,
    server: int,
) -> None:
    """In the forked child: become a worker; never return into the server's loop."""
    code = 1
    try:
        die_with_parent(server)  # first: the server may die any moment, the supervisor too
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        selector.close()
        sock.close()
        for fd in wake:
            os.close(fd)
        if join_path is not None and not join(join_path, fds[0]):
            return
        from oomguard.engine import worker

        code = worker.main([str(fds[0]), str(fds[1])])
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def reap(sock: socket.socket, forked: set[int]) -> None:
    """Report the workers that ended; kill what dead workers left running (adopted here)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        if pid in forked:
            forked.discard(pid)
            send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})
    orphans = [pid for pid in children_of(os.getpid()) if pid not in forked]
    if orphans:
        kill_trees(orphans)  # their zombies come back through SIGCHLD and the loop above


def serve(sock: socket.socket) -> None:
    import ctypes  # noqa: F401  (preloaded: every child has these imported)

    from oomguard.engine import worker  # noqa: F401
    from oomguard.memory import allocator  # noqa: F401  (the worker's malloc_trim lookup)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the supervisor
    become_subreaper()
    me = os.getpid()
    forked: set[int] = set()
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wake-up fd is written
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "request")
    selector.register(wake_read, selectors.EVENT_READ, "child")
    send(sock, {"ready": os.getpid()})
    while True:
        for key, _ in selector.select():
            if key.data == "child":
                drain(wake_read)
                reap(sock, forked)
                continue
            message, fds, _, _ = socket.recv_fds(sock, 8192, 2)
            if not message:
                return  # the supervisor closed its end: the run is over
            _, _, path = message.partition(b"\0")
            pid = os.fork()
            if pid == 0:
                run_child(
                    sock, selector, (wake_read, wake_write), fds, os.fsdecode(path) or None, me
                )
            forked.add(pid)
            for fd in fds:
                os.close(fd)
            send(sock, {"pid": pid})


def main(argv: list[str]) -> int:
    """``FD [--die-with PID]``."""
    if argv[1:2] == ["--die-with"]:
        die_with_parent(int(argv[2]))
    sock = socket.socket(fileno=int(argv[0]))
    try:
        serve(sock)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the supervisor is gone
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # nothing to finalize: the supervisor waits for this exit at the run's end

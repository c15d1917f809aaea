"""The engine inside the user's process: one executor's supervisor, in a thread of its own.

The thread sets the run up (a private temporary run directory unless the user gave one,
the fork server, the job's cgroup), runs the :class:`~oomguard.engine.supervisor.Supervisor`
over the executor's :class:`~oomguard.executor.tasks.TaskSource` until shutdown ends the
source and the last task is settled, and tears it all down: no worker, cgroup or file is
left. Should the engine stop on its own (a failed initializer, cgroups that cannot be
made), the executor is broken: every future not done fails with
:class:`~oomguard.errors.ExecutorBroken`, and so does every later ``submit``.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

from oomguard.engine.artifacts import make_run_dir
from oomguard.engine.config import JobConfig
from oomguard.engine.fork_server import ForkServer, boot, release
from oomguard.engine.handles import worker_env
from oomguard.engine.progress import make_progress
from oomguard.engine.supervisor import Supervisor
from oomguard.errors import ExecutorBroken
from oomguard.executor.tasks import Calls, FutureHooks, FutureSink, TaskSource
from oomguard.executor.trampoline import SPEC
from oomguard.journal.store import Journal
from oomguard.limits.base import Limiter
from oomguard.limits.cgroup import CgroupLimiter, left_by_dead_owner, sweep_stale_groups

# the stdlib executors' logger: a program's logging set up for ProcessPoolExecutor still hears
LOG = logging.getLogger("concurrent.futures")


RUN_DIR_PREFIX = "oomguard-executor-"  # then the owner's pid: a private run directory


def sweep_stale_run_dirs(directory: Path) -> list[Path]:
    """Remove this user's private executor run directories in ``directory`` whose owner is
    dead: one left by an executor whose process was killed (a worker's, by the kernel)."""
    removed: list[Path] = []
    for entry in directory.glob(f"{RUN_DIR_PREFIX}*-*"):
        try:
            info = entry.lstat()
        except OSError:
            continue
        mine = stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
        if mine and left_by_dead_owner(entry, RUN_DIR_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


class EngineThread:
    def __init__(
        self,
        config: JobConfig,
        memory: int,
        limiter: Limiter,
        run_dir: Path | None,
        worker_setup: bytes,
    ) -> None:
        self.config = config
        self.memory = memory
        self.limiter = limiter
        self.run_dir = run_dir  # the user's; None: a private one, removed at the end
        self.worker_setup = worker_setup
        self.calls = Calls(self.capacity)
        self.supervisor: Supervisor | None = None
        self.source = TaskSource(self.calls)
        self.broken: str | None = None  # why the executor cannot run anything, once it cannot
        # booted here, in the caller's thread (the main one, mostly): a server started by
        # the engine's own thread would not die with the process (engine/fork_server.py)
        self.fork_server = boot(worker_env(config)) if config.start_method == "forkserver" else None
        self._ended = False
        # not a daemon: at interpreter exit the tasks submitted still run (executor.py's hook
        # ends the source first), as ProcessPoolExecutor's do
        self.thread = threading.Thread(target=self._main, name="oomguard-executor")

    def start(self) -> None:
        self.thread.start()

    def capacity(self) -> int:
        """How many started tasks the engine may hold: two batches and one task more per
        worker, at the batch size the engine has grown to."""
        supervisor = self.supervisor
        size = supervisor.intake.sizer.size if supervisor is not None else 1
        return self.config.workers * (2 * size + 1)

    def cancel_pending(self) -> None:
        for future in list(self.calls.futures.values()):
            future.cancel()  # only those still pending: a running task finishes

    def end(self) -> None:
        """No more tasks: the run ends once those submitted are settled (idempotent)."""
        if not self._ended:
            self._ended = True
            self.calls.end()

    def _main(self) -> None:
        sweep_stale_run_dirs(Path(tempfile.gettempdir()))
        run_dir = self.run_dir or Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-"))
        try:
            self._run(run_dir)
        except BaseException as err:  # the engine stopped: the executor is broken
            self._break(err)
        finally:
            self.source.stopped.set()
            if self.run_dir is None:
                shutil.rmtree(run_dir, ignore_errors=True)
            self.calls.fail_all(
                ExecutorBroken(self.broken or "the executor stopped before the task ran")
            )

    def _run(self, run_dir: Path) -> None:
        config = self.config
        if self.run_dir is not None:
            make_run_dir(run_dir)
        fork_server = self.fork_server
        journal = Journal.open(run_dir)
        try:
            if isinstance(self.limiter, CgroupLimiter):
                sweep_stale_groups(self.limiter.base)
            supervisor = self.supervisor = Supervisor(
                config,
                self.source,
                FutureSink(self.calls),
                self.limiter,
                run_dir,
                make_progress("quiet"),
                SPEC,
                self.memory,
                journal,
                fork_server=fork_server,
                hooks=FutureHooks(self.calls),
                worker_setup=self.worker_setup,
            )
            supervisor.run()
        finally:
            journal.close()
            self.limiter.close()
            if isinstance(fork_server, ForkServer):
                release(fork_server)

    def _break(self, err: BaseException) -> None:
        self.broken = f"{err}" if str(err) else type(err).__name__
        LOG.critical("oomguard.Executor is broken, no task can run: %s", self.broken)

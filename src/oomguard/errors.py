"""The exception tree of oomguard.

Every error oomguard raises on purpose derives from :class:`OomguardError`. Errors a user
can fix (a bad size, a bad option, a missing file) are :class:`ConfigError`: the CLI
prints their one-line message and exits with code 2, without a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class OomguardError(Exception):
    """Base of every error oomguard raises on purpose."""


class ConfigError(OomguardError, ValueError):
    """A value given by the user is not acceptable; the message names it and what was expected."""


class SizeError(ConfigError):
    """A memory size could not be parsed."""


class CgroupError(OomguardError):
    """A cgroup operation failed; carries the cgroup path."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple[type[CgroupError], tuple[str, str | None]]:
        return (type(self), (str(self), self.path))


class CgroupPermissionError(CgroupError):
    """The cgroup file system cannot be written here (not root, read-only, no controller)."""


class LimiterUnavailable(OomguardError):
    """No way to enforce memory limits was found (see ``oomguard doctor``)."""


class SinkError(OomguardError):
    """The sink could not take results (disk full, permissions): the run stops, resumable."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class ForkServerGone(OomguardError):
    """The fork server died or stopped answering; the engine falls back to spawning."""


class BackendFailed(OomguardError):
    """The backend could not be kept alive within its restart budget."""


class DiskFullError(OomguardError):
    """The disk (or quota) is full: the run stopped, nothing committed is lost, and it
    resumes once there is space. The CLI prints its one line and exits with code 2."""


class Terminated(KeyboardInterrupt):
    """The run was stopped by SIGTERM. A KeyboardInterrupt, so a run stops on it exactly
    as on Ctrl-C (what finished is committed, workers and cgroups go, the summary is
    written); the CLI exits with 143, as a process killed by SIGTERM does."""


class OomguardWarning(UserWarning):
    """Something oomguard does on purpose but a user should know (a clamped option, an
    endpoint without authentication on a public address); the CLI prints one line."""


# ---------------------------------------------------------------- the executor's futures
#
# What a future of :class:`oomguard.Executor` raises when the recovery ladder gave up on its
# task. Each is also a stdlib type, so code written for ProcessPoolExecutor still catches it.


class OomKilled(OomguardError, MemoryError):
    """The task was OOM-killed on every rung of the ladder (retried, then retried alone with
    the whole budget): it needs more than the cap. A MemoryError, so ``except MemoryError``
    still catches it. ``peak_mb``: the most its worker held; ``cap_mb``: the job's cap;
    ``kernel_log``: the kernel's lines on the kill, where they could be read."""

    def __init__(
        self,
        message: str,
        peak_mb: float | None = None,
        cap_mb: float | None = None,
        kernel_log: tuple[str, ...] = (),
        evidence: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.peak_mb = peak_mb
        self.cap_mb = cap_mb
        self.kernel_log = tuple(kernel_log)
        self.evidence = evidence or {}  # the whole record (on a cluster: which node)

    def __reduce__(self) -> tuple[type[OomKilled], tuple[object, ...]]:
        state = (str(self), self.peak_mb, self.cap_mb, self.kernel_log, self.evidence)
        return (type(self), state)


class WorkerCrashed(OomguardError):
    """The task's worker died on each try without an OOM kill (a segfault, ``os._exit``).
    ``signal``: the signal that killed it (None when it exited); ``returncode``: its exit."""

    def __init__(
        self,
        message: str,
        signal: int | None = None,
        returncode: int | None = None,
        evidence: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.signal = signal
        self.returncode = returncode
        self.evidence = evidence or {}  # the whole record (on a cluster: which node)

    def __reduce__(self) -> tuple[type[WorkerCrashed], tuple[object, ...]]:
        return (type(self), (str(self), self.signal, self.returncode, self.evidence))


class TaskTimeout(OomguardError, TimeoutError):
    """The task ran past the executor's ``timeout`` on each try (a TimeoutError)."""


class TaskFailed(OomguardError):
    """The task failed in a way that left no exception object to re-raise (a result that
    could not be pickled back, say); the message holds the remote type and text."""


def _broken_base() -> type[Exception]:
    # imported here, not at the top: concurrent.futures.process costs every command ~8 ms
    from concurrent.futures.process import BrokenProcessPool

    return BrokenProcessPool


class ExecutorBroken(OomguardError, _broken_base()):  # type: ignore[misc]
    """The executor cannot run anything: its workers' initializer failed, or the engine
    stopped (it could not make cgroups, say). Every future not done raises it, and so does
    ``submit``. A ``BrokenProcessPool``, as ProcessPoolExecutor's would be."""

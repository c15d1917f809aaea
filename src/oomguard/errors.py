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


class OomKilled(OomguardError, MemoryError):
    """A task's process was killed for memory (by the kernel at its cgroup's cap, or by
    the watchdog) on every rung of the ladder; ``evidence`` says where and how (the node,
    the worker's pid and signal, the cap, the kernel's report)."""

    def __init__(self, message: str, evidence: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.evidence = evidence or {}

    def __reduce__(self) -> tuple[type[OomKilled], tuple[str, dict[str, Any]]]:
        return (type(self), (str(self), self.evidence))


class WorkerCrashed(OomguardError):
    """A task's process died of something other than memory (a signal, a hard exit) on
    every retry; ``evidence`` says which process and how it ended."""

    def __init__(self, message: str, evidence: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.evidence = evidence or {}

    def __reduce__(self) -> tuple[type[WorkerCrashed], tuple[str, dict[str, Any]]]:
        return (type(self), (str(self), self.evidence))

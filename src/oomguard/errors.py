"""The exception tree of oomguard.

Every error oomguard raises on purpose derives from :class:`OomguardError`. Errors a user
can fix (a bad size, a bad option, a missing file) are :class:`ConfigError`: the CLI
prints their one-line message and exits with code 2, without a traceback.
"""

from __future__ import annotations


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


class ForkServerGone(OomguardError):
    """The fork server died or stopped answering; the engine falls back to spawning."""


class BackendFailed(OomguardError):
    """The backend could not be kept alive within its restart budget."""

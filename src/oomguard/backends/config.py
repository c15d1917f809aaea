"""How a model backend (an inference server the workers call) is started, checked and restarted."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any

from oomguard.errors import ConfigError
from oomguard.sizes import parse_size


@dataclass
class BackendConfig:
    """A backend oomguard starts (``command``), or one it only watches and restarts by a hook.

    ``command`` is an argv list, never a shell string. Health is an HTTP GET of
    ``health_url`` answering ``health_status``, or ``health_command`` exiting 0.
    """

    command: list[str] | None = None
    health_url: str | None = None
    health_status: int = 200
    health_command: list[str] | None = None
    ready_timeout: float = 120.0  # seconds to become healthy after a (re)start
    health_interval: float = 2.0  # seconds between health checks while running
    unhealthy_after: int = 3  # consecutive failed checks that count as "down"
    stop_signal: int = signal.SIGTERM
    grace: float = 10.0  # seconds between stop_signal and SIGKILL
    env: dict[str, str] = field(default_factory=dict)
    memory: int | str | None = None  # a cap for its own cgroup ("4g"), when oomguard starts it
    max_restarts: int = 10  # within restart_window seconds; more is a failure of the run
    restart_window: float = 3600.0
    backoff_initial: float = 0.5  # seconds before the first restart, doubled each time
    backoff_max: float = 30.0
    jitter: float = 0.2  # +- this share of the backoff, so restarts of many jobs spread out
    restart_hook: list[str] | None = None  # for a backend oomguard did not start: argv, no shell
    hook_timeout: float = 300.0

    def __post_init__(self) -> None:
        if isinstance(self.memory, str):
            self.memory = parse_size(self.memory, what="backend memory")
        if isinstance(self.stop_signal, str):
            self.stop_signal = int(getattr(signal, self.stop_signal))

    @property
    def memory_bytes(self) -> int | None:
        return self.memory if isinstance(self.memory, int) else None

    def validate(self) -> None:
        if self.command is None and self.restart_hook is None:
            raise ConfigError(
                "a backend needs a start command, or a restart_hook for one started elsewhere"
            )
        for name in ("command", "health_command", "restart_hook"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, str) or not all(isinstance(a, str) for a in value)
            ):
                raise ConfigError(
                    f"backend {name} {value!r}: expected an argv list of strings, never a shell string"
                )
        if self.health_url is None and self.health_command is None:
            raise ConfigError("a backend needs a health check: health_url or health_command")
        if self.health_url is not None and not self.health_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"backend health_url {self.health_url!r}: expected an http:// or https:// URL"
            )
        for name in (
            "ready_timeout",
            "health_interval",
            "grace",
            "restart_window",
            "backoff_initial",
            "backoff_max",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"backend {name} {getattr(self, name)!r}: expected a number above 0"
                )
        if self.max_restarts < 0 or not 0 <= self.jitter < 1:
            raise ConfigError("backend max_restarts must be >= 0 and jitter in [0, 1)")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackendConfig:
        try:
            config = cls(**data)
        except TypeError as err:
            raise ConfigError(f"invalid backend option: {err}") from err
        config.validate()
        return config

"""What ``cluster=`` may say: a Dask scheduler's address, or ``local:N``. Importable
without ``distributed`` (a job's configuration is checked before anything starts)."""

from __future__ import annotations

from oomguard.errors import ConfigError


def parse_cluster(address: str) -> tuple[str, int | None]:
    """``("local", N)`` for ``local:N``, else ``(address, None)`` for a scheduler's."""
    if address.startswith("local:"):
        count = address.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ConfigError(f"invalid cluster {address!r}: expected local:N with N >= 1")
        return "local", int(count)
    if "://" not in address:
        raise ConfigError(
            f"invalid cluster {address!r}: expected a scheduler address (tcp://host:8786) "
            "or local:N"
        )
    return address, None

"""oomguard on Dask: the node side for plain Dask users, and the cluster driver.

For a plain Dask user::

    client = Client("tcp://scheduler:8786")
    oomguard.dask.install(client, memory="6g")
    with dask.annotate(executor="oomguard"):
        future = client.submit(load_and_parse, path)   # in a capped process on its worker

An OOM kill is then an :class:`oomguard.OomKilled` on that task's future (after a retry,
and a retry alone on its node), with the evidence; the Dask worker and its other tasks
go on. For a whole job on a cluster: ``Job(..., cluster="tcp://...")``
(:mod:`oomguard.dask.driver`).

Needs ``distributed`` (``pip install "oomguard[dask]"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oomguard._lazy import lazy_exports
from oomguard.errors import ConfigError
from oomguard.limits.select_limiter import MODES
from oomguard.sizes import parse_size

# distributed is imported when first needed: a job's configuration checks a cluster
# address (oomguard.dask.address) without it
__getattr__ = lazy_exports(__name__, {"OomguardPlugin": "oomguard.dask.plugin"})
__all__ = ["OomguardPlugin", "install"]

if TYPE_CHECKING:
    from oomguard.dask.plugin import OomguardPlugin


def install(
    client: Any,
    memory: int | str | None = None,
    *,
    workers: int | None = None,
    worker_memory: int | str | None = None,
    limiter: str = "auto",
    crash_retries: int = 2,
) -> OomguardPlugin:
    """Install oomguard on every worker of ``client``'s cluster (and on those that join later).

    ``memory``: each Dask worker's budget for its capped processes (default: 90% of its
    effective memory budget); ``workers``: capped processes per Dask worker (default: its
    thread count); ``worker_memory``: a cap for each one as well; ``limiter``: auto |
    cgroup | watchdog, as for a job. Tasks reach them under
    ``dask.annotate(executor="oomguard")`` (Dask's ``Worker.executors`` hook); leave
    Dask's ``retries`` at 0 for them, so that blame stays with oomguard's ladder.
    """
    if limiter not in MODES:
        raise ConfigError(f"invalid limiter {limiter!r}: expected one of {', '.join(MODES)}")
    if workers is not None and workers < 1:
        raise ConfigError(f"invalid workers {workers}: at least 1")
    from oomguard.dask.plugin import NAME, OomguardPlugin

    plugin = OomguardPlugin(
        parse_size(memory) if memory is not None else None,
        workers,
        worker_memory=parse_size(worker_memory) if worker_memory is not None else None,
        limiter=limiter,
        crash_retries=crash_retries,
    )
    client.register_plugin(plugin, name=NAME)
    return plugin

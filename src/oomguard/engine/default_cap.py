"""The job's default cap leaves room, inside the budget, for what runs outside the cap.

The job's cgroup holds the workers and nothing else. The supervisor (this process: the
reader, the journal, the sink) and the fork server run beside it, in whatever cgroup
oomguard was started in: in a container, under the container's own limit. So the default
cap is the budget's share (``DEFAULT_MEMORY_FRACTION``) less what those two are expected to
hold at their largest: the supervisor's RSS now plus what a run adds to it (measured by
benchmarks/supervisor_memory.py: under 50 MiB in all with JSONL or CSV, under 120 MiB with
Parquet, whose libraries alone are about 45 MiB), and an idle fork server. On a cluster the
driver holds Dask's client too (and, for ``local:N``, its scheduler), and a ``local:N``
cluster's N node processes run on this machine, outside every node's cap. A full job then
leaves the container's OOM killer nothing to find.
"""

from __future__ import annotations

import warnings

from oomguard.engine.config import DEFAULT_MEMORY_FRACTION, MIN_MEMORY
from oomguard.errors import ConfigError, OomguardWarning
from oomguard.memory.own import own_rss
from oomguard.sizes import format_size

MiB = 1024 * 1024
SUPERVISOR_GROWTH = 32 * MiB  # what a supervisor's RSS grows by over a run (JSONL, CSV)
PARQUET_GROWTH = 96 * MiB  # with a Parquet source or sink: pyarrow's libraries, a row group
FORK_SERVER_RSS = 20 * MiB  # an idle fork server: an interpreter and the worker module
# distributed imported, its client, and for local:N the scheduler, in the driver's process
# (28 MiB measured the same way)
DASK_DRIVER_GROWTH = 48 * MiB
# a local:N node: a Dask worker process with the node engine, and its fork server (84 MiB
# at most during a run: benchmarks/cluster.py --part memory, BENCHMARKS.md)
LOCAL_NODE_RSS = 96 * MiB


def supervisor_reserve(
    parquet: bool, current: int | None = None, cluster: str | None = None
) -> int:
    """Bytes to keep beside the job's cap: the supervisor's RSS (``current``, this
    process's now by default) plus its growth over a run, and the fork server's; on a
    ``cluster``, the driver's Dask parts and a ``local:N`` cluster's nodes."""
    now = own_rss() if current is None else current
    reserve = now + (PARQUET_GROWTH if parquet else SUPERVISOR_GROWTH) + FORK_SERVER_RSS
    if cluster is not None:
        from oomguard.dask.address import parse_cluster

        _, local_nodes = parse_cluster(cluster)
        reserve += DASK_DRIVER_GROWTH + (local_nodes or 0) * LOCAL_NODE_RSS
    return reserve


def default_job_cap(budget: int, reserve: int) -> int:
    """The budget's share, less what runs beside the cap (never below the least a job needs)."""
    return max(MIN_MEMORY, int(budget * DEFAULT_MEMORY_FRACTION) - reserve)


def warn_without_room(memory: int, budget: int, reserve: int) -> None:
    """A cap chosen by hand that leaves the supervisor no room inside the budget is the
    user's to choose, but not silently."""
    if memory + reserve > budget:
        warnings.warn(
            f"--memory {format_size(memory)} leaves {format_size(max(0, budget - memory))} of "
            f"the {format_size(budget)} budget for the supervisor and the fork server, which "
            f"run outside the cap and may need {format_size(reserve)}: a full job can push "
            f"the whole process tree past its limit (at most {format_size(budget - reserve)} "
            "leaves them room)",
            OomguardWarning,
            stacklevel=3,
        )


def resolve_memory(
    spec: str | int | None, *, parquet: bool = False, cluster: str | None = None
) -> int:
    """The job's cap in bytes: ``spec`` (a size, or a share of the budget: "60%"), or the
    default cap (room left for the supervisor, more with Parquet at either end); a cap
    that cannot run, or more than the budget, is refused; one without that room warns."""
    from oomguard.memory.budget import effective_budget
    from oomguard.sizes import parse_size

    budget = effective_budget().bytes
    reserve = supervisor_reserve(parquet, cluster=cluster)
    if spec is None:
        return default_job_cap(budget, reserve)
    memory = parse_size(spec, budget=budget, what="memory")
    if memory < MIN_MEMORY:
        raise ConfigError(  # above it, what an idle worker holds is measured (pool.py)
            f"the cap of {format_size(memory)} is below the {format_size(MIN_MEMORY)} a "
            "job needs at the least (an idle worker's interpreter takes tens of MiB)"
        )
    if memory > budget:
        raise ConfigError(
            f"invalid memory {format_size(memory)}: more than the effective budget of "
            f"{format_size(budget)} (see 'oomguard doctor')"
        )
    warn_without_room(memory, budget, reserve)
    return memory

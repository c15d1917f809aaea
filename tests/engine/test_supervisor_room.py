"""The supervisor's memory is counted: the default cap leaves it room inside the budget."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oomguard.engine.arrow_pool import is_parquet, system_arrow_pool
from oomguard.engine.config import DEFAULT_MEMORY_FRACTION, MIN_MEMORY
from oomguard.engine.default_cap import (
    DASK_DRIVER_GROWTH,
    FORK_SERVER_RSS,
    LOCAL_NODE_RSS,
    PARQUET_GROWTH,
    SUPERVISOR_GROWTH,
    default_job_cap,
    supervisor_reserve,
    warn_without_room,
)
from oomguard.errors import OomguardWarning
from oomguard.limits import CgroupLimiter

MiB = 1024 * 1024


def test_the_reserve_is_the_supervisor_now_plus_its_growth_and_the_fork_server() -> None:
    assert supervisor_reserve(False, current=40 * MiB) == 40 * MiB + SUPERVISOR_GROWTH + (
        FORK_SERVER_RSS
    )
    assert supervisor_reserve(True, current=40 * MiB) == 40 * MiB + PARQUET_GROWTH + (
        FORK_SERVER_RSS
    )
    assert supervisor_reserve(False) > 0  # this process's RSS, read from /proc


def test_on_a_cluster_the_reserve_holds_the_drivers_dask_and_a_local_clusters_nodes() -> None:
    alone = supervisor_reserve(False, current=40 * MiB)
    remote = supervisor_reserve(False, current=40 * MiB, cluster="tcp://10.0.0.5:8786")
    assert remote == alone + DASK_DRIVER_GROWTH  # the nodes run elsewhere, under their caps
    local = supervisor_reserve(False, current=40 * MiB, cluster="local:3")
    assert local == remote + 3 * LOCAL_NODE_RSS  # three Dask worker processes on this machine


def test_the_default_cap_is_the_share_less_the_reserve() -> None:
    budget = 1024 * MiB
    reserve = supervisor_reserve(True, current=40 * MiB)
    assert default_job_cap(budget, reserve) == int(budget * DEFAULT_MEMORY_FRACTION) - reserve
    assert default_job_cap(budget, reserve) + reserve <= budget
    assert default_job_cap(64 * MiB, reserve) == MIN_MEMORY  # never below what a job needs


def test_a_cap_by_hand_that_leaves_no_room_warns() -> None:
    budget, reserve = 1024 * MiB, 150 * MiB
    with pytest.warns(OomguardWarning, match="run outside the cap"):
        warn_without_room(1000 * MiB, budget, reserve)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_without_room(800 * MiB, budget, reserve)


def test_the_system_pool_lasts_the_run_and_the_callers_comes_back() -> None:
    before = pa.default_memory_pool().backend_name
    with system_arrow_pool(True):
        assert pa.default_memory_pool().backend_name == "system"
    assert pa.default_memory_pool().backend_name == before
    with system_arrow_pool(False):
        assert pa.default_memory_pool().backend_name == before
    assert is_parquet("out.parquet") and is_parquet(Path("x.PQ")) and not is_parquet("a.jsonl")


IN_CONTAINER = r"""
import sys
sys.stdin.readline()
from oomguard.cli import entry_point
sys.argv = ["oomguard", *sys.argv[1:]]
entry_point()
"""


@pytest.mark.timeout(180)
def test_in_a_capped_container_the_default_cap_leaves_the_supervisor_room(
    cgroup_limiter: CgroupLimiter, tmp_path: Path
) -> None:
    """A Parquet-to-Parquet run started inside a 384 MiB group (a container's limit), with
    the default cap: the job's cap plus the supervisor's largest RSS and the fork server's
    stay inside the group's limit, and the group never reached it."""
    limit = 384 * MiB
    container = cgroup_limiter.create_group("container", limit)
    source = tmp_path / "items.parquet"
    pq.write_table(pa.table({"i": list(range(3000)), "smiles": ["CCO"] * 3000}), source)
    run_dir = tmp_path / "run"
    argv = [
        *("run", "benchmarks.workloads:features", "-i", str(source)),
        *("-o", str(tmp_path / "out.parquet"), "--run-dir", str(run_dir)),
        *("--workers", "2", "--batch-size", "10", "--log-format", "quiet"),
    ]
    child = subprocess.Popen(
        [sys.executable, "-c", IN_CONTAINER, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        container.add_pid(child.pid)
        _, err = child.communicate("go\n", timeout=150)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        # on v2 the run inside made its groups below the container's (its own cgroup):
        # they go first, deepest first, so that the container's own removal can follow
        subgroups = [p for p in Path(container.path).rglob("*") if p.is_dir()]
        for subgroup in sorted(subgroups, key=lambda p: len(p.parts), reverse=True):
            try:
                subgroup.rmdir()
            except OSError:
                pass
    assert child.returncode == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["counts"]["success"] == 3000
    cap = summary["cap_mb"] * MiB
    with open(run_dir / "memory_log.csv") as handle:
        supervisor_peak = max(float(row["supervisor_rss_mb"]) for row in csv.DictReader(handle))
    assert cap <= limit * DEFAULT_MEMORY_FRACTION - PARQUET_GROWTH
    assert cap + supervisor_peak * MiB + FORK_SERVER_RSS <= limit
    group = Path(container.path)
    if (group / "memory.failcnt").exists():  # v1: times the group's usage hit its limit
        assert int((group / "memory.failcnt").read_text()) == 0
    else:
        events = dict(line.split() for line in (group / "memory.events").read_text().splitlines())
        assert events["max"] == "0" and events["oom_kill"] == "0"

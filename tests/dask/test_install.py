"""``oomguard.dask.install()`` for a plain Dask user, on a real cluster: a ``dask
scheduler`` and two ``dask worker`` processes (with their nannies) on 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import dask
import pytest
from distributed import Client

import oomguard.dask
from oomguard.errors import ConfigError, OomKilled, WorkerCrashed
from tests.conftest import require_cgroups
from tests.dask import workloads
from tests.dask.cluster import dask_cluster

pytestmark = pytest.mark.timeout(180)


def _worker_pids(client: Client) -> dict[str, int]:
    return client.run(os.getpid)


@pytest.mark.cgroups
def test_poison_raises_oom_killed_and_the_worker_lives(tmp_path: Path) -> None:
    require_cgroups()
    with dask_cluster(tmp_path) as cluster, Client(cluster.address) as client:
        client.wait_for_workers(2)
        before = _worker_pids(client)
        oomguard.dask.install(client, memory="300m")
        target = sorted(before)[0]
        with dask.annotate(executor="oomguard"):
            poison = client.submit(workloads.hog, 1000, workers=[target], retries=0, pure=False)
            bystander = client.submit(workloads.hog, 50, workers=[target], pure=False)
            elsewhere = client.submit(workloads.pid, workers=[sorted(before)[1]], pure=False)
        with pytest.raises(OomKilled) as info:
            poison.result(timeout=120)
        assert isinstance(info.value, MemoryError)
        evidence = info.value.evidence
        assert evidence["node"] == target
        assert evidence["signal"] == 9 and evidence["oom_kill_count"] >= 1
        assert evidence["node_cap_mb"] == 300
        assert bystander.result(timeout=120) == 50 * 2**20
        # the calls ran in processes of their own, not in the Dask worker
        assert elsewhere.result(timeout=60) not in before.values()
        assert _worker_pids(client) == before  # same workers, same processes: none restarted


@pytest.mark.cgroups
def test_a_task_s_own_errors_and_crashes(tmp_path: Path) -> None:
    require_cgroups()
    with dask_cluster(tmp_path, nodes=1) as cluster, Client(cluster.address) as client:
        client.wait_for_workers(1)
        before = _worker_pids(client)
        oomguard.dask.install(client, memory="300m", workers=1)
        with dask.annotate(executor="oomguard"):
            value = client.submit(workloads.square, 7, pure=False)
            error = client.submit(workloads.fail, "its own", pure=False)
            crash = client.submit(workloads.crash, pure=False)
            lam = client.submit(lambda x: x + 1, 1, pure=False)  # pickled by value
        assert value.result(timeout=60) == 49
        assert lam.result(timeout=60) == 2
        with pytest.raises(ValueError, match="its own"):
            error.result(timeout=60)
        with pytest.raises(WorkerCrashed) as info:
            crash.result(timeout=60)
        assert info.value.evidence["returncode"] == 3
        assert _worker_pids(client) == before


def test_install_refuses_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        oomguard.dask.install(None, memory="lots")
    with pytest.raises(ConfigError, match="limiter"):
        oomguard.dask.install(None, memory="1g", limiter="magic")

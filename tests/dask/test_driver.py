"""A job across a real Dask cluster (``dask scheduler`` and two ``dask worker`` processes
on 127.0.0.1): every survivable item exactly once, the poison quarantined with its node
named, through the loss of a node and of the driver itself; report.html and the
Prometheus metrics per node."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from oomguard import Job
from oomguard.report import write_report
from tests.conftest import require_cgroups
from tests.dask.cluster import DaskCluster, dask_cluster, free_port
from tests.helpers.cli import ROOT, cli_env, oomguard_argv, run_cli
from tests.helpers.gates import Gate
from tests.helpers.metrics import by_node, scrape

pytestmark = [pytest.mark.timeout(240), pytest.mark.cgroups]
WORK = "tests.engine.workloads:work"


def write_items(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def results(run_dir: Path) -> Counter[int]:
    with open(run_dir / "results.jsonl") as lines:
        return Counter(json.loads(line)["input_index"] for line in lines)


def node_of(cluster: DaskCluster, pid: int) -> str:
    """The node whose process tree holds ``pid``."""
    ancestors = {parent.pid for parent in psutil.Process(pid).parents()}
    return next(name for name, proc in cluster.nodes.items() if proc.pid in ancestors)


def driver(items: Path, run_dir: Path, address: str, *extra: str) -> subprocess.Popen[str]:
    argv = oomguard_argv(
        "run", WORK, "--input", str(items), "--run-dir", str(run_dir), "--cluster", address,
        "--workers", "2", "--memory", "400m", "--batch-size", "2", "--log-format", "quiet",
        *extra,
    )  # fmt: skip
    return subprocess.Popen(argv, cwd=ROOT, env=cli_env(), text=True, stderr=subprocess.PIPE)


def table(page: str, heading: str) -> list[list[str]]:
    """The rows of the report's table under ``heading``, each a list of its cells' HTML."""
    body = page.split(f"<h2>{heading}</h2>", 1)[1].split("</table>", 1)[0]
    return [row.split("</tr>", 1)[0].split("<td>")[1:] for row in body.split("<tr>")[2:]]


def test_the_gauntlet_across_two_nodes(tmp_path: Path) -> None:
    require_cgroups()
    items = [{"kind": "ok", "value": i} for i in range(40)]
    items[5] = {"kind": "grow", "mb": 80}
    items[17] = {"kind": "grow", "mb": 1200}  # past any node's budget: the poison
    items[30] = {"kind": "grow", "mb": 120}
    source = write_items(tmp_path / "items.jsonl", items)
    with dask_cluster(tmp_path) as cluster:
        run_dir = tmp_path / "run"
        job = Job(WORK, str(source), run_dir=run_dir, memory="400m", workers=2, batch_size=4)
        job.config.cluster = cluster.address
        job.config.log_format = "quiet"
        result = job.run()
    done = results(run_dir)
    assert set(done) == set(range(40)) - {17} and max(done.values()) == 1  # exactly once
    [poison] = result.quarantined
    assert poison["input_index"] == 17 and poison["status"] == "oom_killed"
    evidence = poison["evidence"]
    summary = json.loads((run_dir / "summary.json").read_text())
    nodes = summary["cluster"]["nodes"]
    assert evidence["node"] in nodes and evidence["died_alone"] is True
    assert evidence["node_cap_mb"] == 400 and evidence["signal"] == 9
    assert len(nodes) == 2 and all(stats["batches"] > 0 for stats in nodes.values())
    assert sorted(stats["name"] for stats in nodes.values()) == ["node0", "node1"]
    assert sum(stats["items_done"] for stats in nodes.values()) == 39
    killer = nodes[evidence["node"]]
    assert killer["oom_kills"] >= 1 and killer["peak_mb"] is not None
    _check_the_report(run_dir, summary, killer["name"])


def test_fast_items_grow_their_batches_on_a_cluster(tmp_path: Path) -> None:
    """The defaults' adaptive batch size holds on a cluster: batches of fast items grow
    from the nodes' reports, as on one machine, and every item is done once."""
    require_cgroups()
    source = write_items(tmp_path / "items.jsonl", [{"kind": "ok", "value": i} for i in range(600)])
    with dask_cluster(tmp_path) as cluster:
        run_dir = tmp_path / "run"
        job = Job(WORK, str(source), run_dir=run_dir, memory="400m", workers=1)
        job.config.cluster = cluster.address
        job.config.log_format = "quiet"
        job.run()
    done = results(run_dir)
    assert set(done) == set(range(600)) and max(done.values()) == 1
    manifest = json.loads((run_dir / "ingest_manifest.json").read_text())
    sizes = [len(a["input_indices"]) for a in manifest if "batch_id" in a]
    grown = [e["batch_size"] for e in manifest if e.get("event") == "batch_size"]
    assert sizes[0] == 10 and max(sizes) > 10 and grown and max(grown) > 10


def _check_the_report(run_dir: Path, summary: dict[str, Any], killer: str) -> None:
    """report.html: a row per node with its figures, and the node of each failed attempt
    (the manifest's) and of the quarantined item, by its Dask name beside its address."""
    nodes = summary["cluster"]["nodes"]
    page = write_report(run_dir).read_text()
    rows = {row[0].split(" ", 1)[0]: row for row in table(page, "Nodes")}
    assert sorted(rows) == ["node0", "node1"]
    keys = ("batches", "items", "items_done", "oom_kills", "batches_lost", "peak_mb")
    for address, stats in nodes.items():
        row = rows[stats["name"]]
        assert address in row[0] and "connected to the end" in row[-1]
        assert [cell.split("</td>")[0] for cell in row[1:7]] == [str(stats[k]) for k in keys]
    assert "<h2>Nodes lost</h2>" not in page
    manifest = json.loads((run_dir / "ingest_manifest.json").read_text())
    failures = [
        a
        for a in manifest
        if "batch_id" in a and (a["status"] != "success" or a.get("items_failed"))
    ]
    rows_failed = table(page, "Failed attempts")
    assert len(rows_failed) == len(failures) > 0
    for row, attempt in zip(rows_failed, failures, strict=True):
        assert row[3].startswith(nodes[attempt["node"]]["name"]) and attempt["node"] in row[3]
    for address, stats in nodes.items():  # each node's kills are its attempts' in the manifest
        kills = [a for a in failures if a["node"] == address and a["status"] == "oom_killed"]
        assert stats["oom_kills"] == len(kills)
    assert sum(stats["oom_kills"] for stats in nodes.values()) == summary["oom_kills"]
    [poison] = table(page, "Quarantined items")
    assert poison[0].startswith("17") and poison[1].startswith(killer)


def test_a_node_killed_mid_run(tmp_path: Path) -> None:
    require_cgroups()
    gate = Gate(tmp_path)
    items = [{"kind": "ok", "value": i} for i in range(30)]
    items[6] = gate.item()
    source = write_items(tmp_path / "items.jsonl", items)
    port = free_port()
    with dask_cluster(tmp_path) as cluster:
        proc = driver(source, tmp_path / "run", cluster.address, "--metrics-port", str(port))
        try:
            node = node_of(cluster, gate.wait_running(proc))
            address = _address_of(cluster, node)
            before = scrape(port)
            cluster.kill_node(node)  # its whole process tree, by SIGKILL
            survivor = node_of(cluster, gate.wait_running(proc))  # sent elsewhere
            assert survivor != node
            after = scrape(port)  # the loss is settled: the gate's batch was sent again
            gate.open()
            _, stderr = proc.communicate(timeout=180)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    done = results(tmp_path / "run")
    assert set(done) == set(range(30)) and max(done.values()) == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    lost = [e for e in summary["events"] if e["event"] in ("batch_lost", "node_lost")]
    assert lost and all(e["node"] == address for e in lost)
    assert any("reason" in e and e["reason"] for e in lost)
    _check_the_metrics(before, after, node, survivor)
    page = write_report(tmp_path / "run").read_text()
    rows = {row[0].split(" ", 1)[0]: row for row in table(page, "Nodes")}
    reason = summary["cluster"]["lost"][address]
    assert reason and reason in rows[node][-1] and "connected to the end" in rows[survivor][-1]
    [gone] = table(page, "Nodes lost")
    assert gone[0].startswith(node) and address in gone[0] and reason in gone[2]
    assert int(gone[1].split("</td>")[0]) == summary["cluster"]["nodes"][address]["batches_lost"]


def _check_the_metrics(before: Any, after: Any, node: str, survivor: str) -> None:
    """Scraped while the gate's batch ran on ``node``, then on ``survivor`` once ``node``
    was killed: the nodes connected, each one's batches in flight and lost, by name."""
    connected = by_node(before, "oomguard_node_connected")  # the other may join later
    assert connected[node] == 1 and before[("oomguard_nodes_connected", ())] == sum(
        connected.values()
    )
    assert by_node(before, "oomguard_node_in_flight")[node] >= 1
    assert by_node(before, "oomguard_node_batches_lost_total")[node] == 0
    assert after[("oomguard_nodes_connected", ())] == 1
    assert by_node(after, "oomguard_node_connected") == {node: 0, survivor: 1}
    assert by_node(after, "oomguard_node_batches_lost_total")[node] >= 1
    assert by_node(after, "oomguard_node_batches_lost_total")[survivor] == 0
    assert by_node(after, "oomguard_node_in_flight")[survivor] >= 1
    done = by_node(after, "oomguard_node_items_total")
    assert sum(done.values()) <= after[("oomguard_items_total", (("status", "success"),))]
    assert set(by_node(after, "oomguard_node_batches_total")) == {node, survivor}


def test_the_driver_killed_then_resumed(tmp_path: Path) -> None:
    require_cgroups()
    gate = Gate(tmp_path, once=True)  # a resumed run's attempt passes at once
    items = [{"kind": "ok", "value": i} for i in range(30)]
    items[12] = gate.item()
    source = write_items(tmp_path / "items.jsonl", items)
    run_dir = tmp_path / "run"
    with dask_cluster(tmp_path) as cluster:
        proc = driver(source, run_dir, cluster.address)
        try:
            gate.wait_running(proc)
        finally:
            proc.kill()  # the driver only: the scheduler and the nodes stay
            proc.communicate(timeout=60)
        resumed = run_cli("resume", str(run_dir), "--log-format", "quiet", timeout=180)
        assert resumed.returncode == 0, resumed.stderr
    done = results(run_dir)
    assert set(done) == set(range(30)) and max(done.values()) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["sessions"] == 2


def _address_of(cluster: DaskCluster, name: str) -> str:
    from distributed import Client

    with Client(cluster.address) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    return next(address for address, info in workers.items() if info.get("name") == name)


def test_bad_cluster_addresses_are_one_line_errors(tmp_path: Path) -> None:
    source = write_items(tmp_path / "items.jsonl", [{"kind": "ok", "value": 1}])
    for address in ("local:0", "scheduler:8786"):
        done = run_cli("run", WORK, "--input", str(source), "--cluster", address)
        assert done.returncode == 2, done.stderr
        assert "invalid cluster" in done.stderr and "Traceback" not in done.stderr
    assert not os.path.exists(tmp_path / "run")


def test_the_scheduler_restarted_mid_run(tmp_path: Path) -> None:
    require_cgroups()
    gate = Gate(tmp_path, once=True)  # the attempt after the restart passes at once
    items = [{"kind": "ok", "value": i} for i in range(30)]
    items[8] = gate.item()
    source = write_items(tmp_path / "items.jsonl", items)
    run_dir = tmp_path / "run"
    with dask_cluster(tmp_path) as cluster:
        proc = driver(source, run_dir, cluster.address)
        try:
            gate.wait_running(proc)
            port = int(cluster.address.rsplit(":", 1)[1])
            cluster.kill_scheduler()  # Dask keeps no state across its scheduler's death
            for name in list(cluster.nodes):  # its workers close without it: as a service
                cluster.nodes.pop(name).wait(timeout=120)  # manager would, start them again
            cluster.start_scheduler(port)  # the driver's client reconnects
            for name in ("node0", "node1"):
                cluster.start_node(name)
            _, stderr = proc.communicate(timeout=180)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    done = results(run_dir)
    assert set(done) == set(range(30)) and max(done.values()) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert any(event["event"] == "scheduler_back" for event in summary["events"])

"""End to end on real cgroups, as a user runs it: the command line, the kernel's kills, a
supervisor killed with SIGKILL and resumed, the peak method doctor names, and the cost
admission learns. All run in the v2 lane too (tests/vm/run-v2-lane)."""

from __future__ import annotations

import collections
import json
import os
import platform
import select
import signal
import subprocess
import sys
from pathlib import Path

from oomguard.journal import Journal
from oomguard.limits import CgroupLimiter, read_oom_score_adj
from tests.engine.conftest import WORK, read_output, write_jsonl
from tests.helpers.cli import ROOT, run_cli

# The per-item cost learned for the items of test_the_learned_item_cost_is_the_items_own,
# measured on cgroup v1 (this repository's CI machine; BENCHMARKS.md, batch peaks): the
# same items must cost the same on every kernel, within 10%.
V1_ITEM_COST_MB = 23.9


def kernel_version() -> tuple[int, int]:
    major, minor = platform.release().split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def test_doctor_names_the_peak_method_of_this_kernel(cgroup_limiter: CgroupLimiter) -> None:
    result = run_cli("doctor", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["enforcement"] == cgroup_limiter.kind
    if cgroup_limiter.version == "v1":
        expected = "v1-reset"
    elif kernel_version() >= (6, 12):
        expected = "v2-reset"
    elif kernel_version() >= (5, 19):
        expected = "v2-lifetime"
    else:
        expected = "v2-none"
    assert facts["cgroup"]["peak_method"] == expected
    assert "memory." in facts["cgroup"]["peak_method_detail"]
    screen = run_cli("doctor")
    assert "Batch peak" in screen.stdout and expected in screen.stdout


def test_the_learned_item_cost_is_the_items_own(cgroup_limiter: CgroupLimiter, run_job) -> None:
    """Two big items first, then small ones: where memory.peak cannot be reset (Linux
    5.19-6.11) read as it is, every small batch would cost what the big ones did."""
    items = [{"kind": "grow", "mb": 96}] * 2 + [{"kind": "grow", "mb": 24}] * 30
    result, lines = run_job(items, workers=2, batch_size=1, memory="512m")
    assert len(lines) == 32
    cost = result.summary["item_cost_mb"]["p50"]
    assert abs(cost - V1_ITEM_COST_MB) <= 0.1 * V1_ITEM_COST_MB, cost


def test_a_poison_run_from_the_command_line(cgroup_limiter: CgroupLimiter, tmp_path: Path) -> None:
    items = [{"kind": "grow", "mb": 8} for _ in range(40)]
    for poison in (11, 29):
        items[poison] = {"kind": "grow", "mb": 4000}
    source = write_jsonl(tmp_path / "items.jsonl", items)
    out = tmp_path / "out.jsonl"
    result = run_cli(
        "run", WORK, "--input", str(source), "--output", str(out), "--memory", "300m",
        "--workers", "2", "--batch-size", "4", "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    counts = collections.Counter(line["input_index"] for line in read_output(out))
    assert set(counts) == set(range(40)) - {11, 29} and set(counts.values()) == {1}
    quarantined = [json.loads(line) for line in (tmp_path / "run/quarantine.jsonl").open()]
    assert sorted((q["input_index"], q["status"]) for q in quarantined) == [
        (11, "oom_killed"),
        (29, "oom_killed"),
    ]
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["enforcement"] == cgroup_limiter.kind
    if summary["dmesg_excerpt"]:  # the kernel's own line, where its log is readable (root)
        assert all(q["evidence"].get("kernel_log") for q in quarantined)


def test_a_supervisor_killed_with_sigkill_resumes_with_every_item_once(
    cgroup_limiter: CgroupLimiter, tmp_path: Path
) -> None:
    fifo = tmp_path / "running"
    os.mkfifo(fifo)
    items = [{"kind": "slow", "seconds": 0.02} for _ in range(60)]
    items[30] = {"kind": "announce", "fifo": str(fifo), "marker": str(tmp_path / "announced")}
    source = write_jsonl(tmp_path / "items.jsonl", items)
    out, run_dir = tmp_path / "out.jsonl", tmp_path / "run"
    command = [
        sys.executable, "-m", "oomguard.cli", "run", WORK, "--input", str(source),
        "--output", str(out), "--memory", "256m", "--workers", "2", "--batch-size", "5",
        "--run-dir", str(run_dir), "--log-format", "quiet",
    ]  # fmt: skip
    # its own session: the supervisor, its fork server and its workers die together
    proc = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    try:
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            ready, _, _ = select.select([reader], [], [], 300)
            assert ready and os.read(reader, 64) == b"running\n", "item 30 never ran"
        finally:
            os.close(reader)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    journal = Journal.open(run_dir)
    try:
        committed = len(journal.committed_set())
    finally:
        journal.close()
    assert committed < 60, "the kill came after the end"
    resumed = run_cli("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    counts = collections.Counter(line["input_index"] for line in read_output(out))
    assert set(counts) == set(range(60)) and set(counts.values()) == {1}


def test_a_job_leaves_its_callers_oom_score_adj_as_it_found_it(
    cgroup_limiter: CgroupLimiter, run_job
) -> None:
    """The supervisor lowers its oom_score_adj for the run (to -1000 where it may: root with
    CAP_SYS_RESOURCE, as in the v2 lane); children inherit it, and the OOM killer never
    picks a process at -1000, so the caller's later children must not be left with it."""
    before = read_oom_score_adj()
    run_job([{"kind": "ok", "value": 1}])
    assert read_oom_score_adj() == before

"""The engine against real failures: kernel OOM kills in real cgroups, segfaults, hangs."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

from oomguard.limits import CgroupLimiter
from tests.engine.conftest import manifest

Runner = object


def indices(lines: list[dict]) -> list[int]:  # type: ignore[type-arg]
    return [line["input_index"] for line in lines]


def exactly_once(lines: list[dict], expected: set[int]) -> None:  # type: ignore[type-arg]
    counts = collections.Counter(indices(lines))
    assert set(counts) == expected
    assert all(n == 1 for n in counts.values()), {i: n for i, n in counts.items() if n > 1}


def test_poison_item_is_quarantined_and_every_other_item_done_once(
    cgroup_limiter: CgroupLimiter, run_job, tmp_path: Path
) -> None:
    items = [{"kind": "grow", "mb": 10} for _ in range(40)]
    items[13] = {"kind": "grow", "mb": 2000}
    result, lines = run_job(items, memory="400m")
    exactly_once(lines, set(range(40)) - {13})
    assert [(q["input_index"], q["status"]) for q in result.quarantined] == [(13, "oom_killed")]
    evidence = result.quarantined[0]["evidence"]
    assert evidence["died_alone"] is True and evidence["signal"] == 9
    assert evidence["peak_mb"] >= 0.9 * 400
    assert result.exit_code == 3
    summary = result.summary
    assert summary["cgroup_events"]["oom_kill"] >= 1
    assert summary["counts"] == {"success": 39, "oom_killed": 1}
    assert summary["peak_cgroup_mb"] <= 400
    assert summary["batch_seconds"]["p99"] >= summary["batch_seconds"]["p50"] > 0
    assert summary["item_cost_mb"]["p99"] >= 0 and 0 < summary["metrics_bytes"] <= 4 * 1024**2
    statuses = [entry["status"] for entry in manifest(result.run_dir)]
    assert "oom_killed" in statuses
    for name in ("memory_log.csv", "summary.json", "ingest_manifest.json", "quarantine.jsonl"):
        path = result.run_dir / name
        assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
    assert (result.run_dir.stat().st_mode & 0o777) == 0o700
    header, *rows = (result.run_dir / "memory_log.csv").read_text().splitlines()
    assert header.startswith("time,elapsed_sec,cgroup_mb,working_set_mb,rss_mb,vms_mb")
    assert rows


def test_the_running_item_is_blamed_even_before_its_batch_reported_anything(
    cgroup_limiter: CgroupLimiter, run_job
) -> None:
    # results travel in groups, so items 0-4 finished unreported when item 5 was killed;
    # the shared slot names item 5, which is quarantined without bisecting the batch
    items = [{"kind": "ok", "value": i} for i in range(10)]
    items[5] = {"kind": "grow", "mb": 2000}
    result, lines = run_job(items, memory="300m", workers=1, batch_size=10)
    exactly_once(lines, set(range(10)) - {5})
    assert [(q["input_index"], q["status"]) for q in result.quarantined] == [(5, "oom_killed")]
    assert result.summary["bisections"] == 0
    killed = [a["input_indices"] for a in manifest(result.run_dir) if a["status"] == "oom_killed"]
    assert killed == [list(range(10))]  # one kill, at the whole budget: no retry needed


def test_bisection_finds_the_one_poison_item_in_a_batch_of_10(
    cgroup_limiter: CgroupLimiter, run_job
) -> None:
    items = [{"kind": "grow", "mb": 5} for _ in range(30)]
    items[4] = {"kind": "grow", "mb": 2000}
    result, lines = run_job(
        items,
        function="tests.engine.workloads:work_batch",
        batched=True,
        memory="400m",
        batch_size=10,  # fixed: the batch that dies first is the one the test names
    )
    exactly_once(lines, set(range(30)) - {4})
    assert [(q["input_index"], q["status"]) for q in result.quarantined] == [(4, "oom_killed")]
    attempts = manifest(result.run_dir)
    failed = [a for a in attempts if a["status"] == "oom_killed"]
    # the first batch died; each halving kept the poison in a smaller batch, down to one item
    sizes = [len(a["input_indices"]) for a in failed]
    assert sizes[0] == 10 and sizes[-1] == 1
    assert sizes == sorted(sizes, reverse=True)
    assert result.summary["bisections"] >= 3


def test_a_bystander_is_retried_without_counting_against_it(
    cgroup_limiter: CgroupLimiter, run_job, tmp_path: Path
) -> None:
    fifo = tmp_path / "handshake.fifo"
    os.mkfifo(fifo)
    items = [
        {"role": "holder", "fifo": str(fifo), "mb": 220},
        {"role": "grower", "fifo": str(fifo), "steps": 16, "step_mb": 10, "step_seconds": 0.1},
    ]
    result, lines = run_job(
        items,
        function="tests.engine.workloads:bystander",
        memory="360m",
        batch_size=1,
        sample_interval=0.05,
    )
    exactly_once(lines, {0, 1})
    assert result.quarantined == []
    attempts = manifest(result.run_dir)
    killed = [a for a in attempts if a["status"] == "oom_killed"]
    assert killed, "the kernel never killed the holder"
    assert killed[0]["input_indices"] == [0]
    assert killed[0].get("bystander") is True
    assert result.summary["bystanders"] >= 1


def test_timeout_kills_the_worker_and_quarantines_after_retries(run_job) -> None:
    items = [{"kind": "ok", "value": i} for i in range(6)]
    items[2] = {"kind": "hang"}
    result, lines = run_job(items, timeout=1.0, crash_retries=1, batch_size=1)
    exactly_once(lines, {0, 1, 3, 4, 5})
    assert [(q["input_index"], q["status"]) for q in result.quarantined] == [(2, "timeout")]
    assert result.quarantined[0]["evidence"]["timeout_sec"] == 1.0
    hung = [a for a in manifest(result.run_dir) if a["input_indices"] == [2]]
    assert [a["status"] for a in hung] == ["timeout", "timeout"]


def test_segfault_is_a_worker_crash(run_job) -> None:
    items = [{"kind": "ok", "value": i} for i in range(10)]
    items[5] = {"kind": "segv"}
    result, lines = run_job(items, crash_retries=1)
    exactly_once(lines, set(range(10)) - {5})
    (entry,) = result.quarantined
    assert entry["input_index"] == 5 and entry["status"] == "worker_crash"
    assert entry["evidence"]["signal"] == 11


def test_os_exit_is_a_worker_crash_with_its_code(run_job) -> None:
    result, lines = run_job([{"kind": "exit"}, {"kind": "ok", "value": 1}], crash_retries=0)
    assert indices(lines) == [1]
    assert result.quarantined[0]["evidence"]["returncode"] == 7


@pytest.mark.parametrize("kind", ["memerr", "cuda"])
def test_memory_error_climbs_the_ladder(run_job, kind: str) -> None:
    items = [{"kind": "ok", "value": i} for i in range(8)]
    items[3] = {"kind": kind}
    result, lines = run_job(items)
    exactly_once(lines, set(range(8)) - {3})
    assert [(q["input_index"], q["status"]) for q in result.quarantined] == [(3, "memory_error")]
    ladder = [a for a in manifest(result.run_dir) if a["input_indices"] == [3]]
    # retried once, then alone, then quarantined
    assert [a["alone"] for a in ladder] == [False, True]
    assert result.summary["alone_runs"] == 1


def test_user_exception_keeps_its_traceback(run_job) -> None:
    items = [{"kind": "ok", "value": i} for i in range(5)]
    items[1] = {"kind": "raise", "value": 41}
    result, lines = run_job(items)
    exactly_once(lines, {0, 2, 3, 4})
    (entry,) = result.quarantined
    assert entry["status"] == "error"
    evidence = entry["evidence"]
    assert evidence["type"] == "ValueError" and evidence["message"] == "bad item 41"
    assert "workloads.py" in evidence["traceback"] and "raise ValueError" in evidence["traceback"]


def test_workers_run_in_their_own_cgroup_first_in_line_for_the_oom_killer(
    cgroup_limiter: CgroupLimiter, run_job
) -> None:
    _, lines = run_job([{"kind": "whoami"}] * 4, batch_size=1)
    assert len(lines) == 4
    for line in lines:
        assert line["result"]["oom_score_adj"] == 1000
        memory_line = next(
            row
            for row in line["result"]["cgroup"].splitlines()
            if ":memory:" in row or row.startswith("0::")
        )
        # .../oomguard-<pid>-<token>-job/w<slot>-<generation>
        assert "oomguard-" in memory_line and "-job/w" in memory_line


def test_rlimit_as_guard_turns_a_huge_allocation_into_memory_error(run_job) -> None:
    items = [{"kind": "grow", "mb": 10}, {"kind": "grow", "mb": 4000}, {"kind": "grow", "mb": 10}]
    result, lines = run_job(items, limiter="watchdog", rlimit_as="1g", memory="8g")
    exactly_once(lines, {0, 2})
    assert [(q["input_index"], q["status"]) for q in result.quarantined] == [(1, "memory_error")]
    assert result.quarantined[0]["evidence"]["type"] == "MemoryError"


def test_watchdog_mode_quarantines_the_poison_too(run_job) -> None:
    items = [{"kind": "grow", "mb": 10} for _ in range(12)]
    items[6] = {"kind": "grow", "mb": 3000}
    result, lines = run_job(items, memory="400m", limiter="watchdog")
    exactly_once(lines, set(range(12)) - {6})
    assert [(q["input_index"], q["status"]) for q in result.quarantined] == [(6, "oom_killed")]
    assert result.quarantined[0]["evidence"]["enforcer"] == "watchdog"
    assert result.summary["enforcement"] == "watchdog"


def test_workers_are_forked_by_the_fork_server_and_spawned_without_it(
    cgroup_limiter: CgroupLimiter, run_job
) -> None:
    items = [{"kind": "whoami"} for _ in range(4)]
    forked, forked_lines = run_job(items, name="forked", batch_size=1)
    spawned, spawned_lines = run_job(items, name="spawned", batch_size=1, start_method="spawn")
    assert forked.succeeded == spawned.succeeded == 4
    for result in (forked, spawned):
        events = [e["event"] for e in result.summary["events"]]
        assert "fork_server_unavailable" not in events
    assert all(
        "oomguard.engine.fork_server_main" in line["result"]["parent"] for line in forked_lines
    )
    assert not any(
        "oomguard.engine.fork_server_main" in line["result"]["parent"] for line in spawned_lines
    )
    for line in forked_lines + spawned_lines:  # either way: first in line, in its own cgroup
        assert line["result"]["oom_score_adj"] == 1000 and "-job/w" in line["result"]["cgroup"]


def test_a_dead_fork_server_falls_back_to_spawning(run_job) -> None:
    items = [{"kind": "ok", "value": i} for i in range(6)]
    items[2] = {"kind": "kill_fork_server"}
    result, lines = run_job(items, batch_size=1, workers=1)
    exactly_once(lines, set(range(6)))
    events = [e for e in result.summary["events"] if e["event"] == "fork_server_unavailable"]
    assert len(events) == 1 and "gone" in events[0]["error"]
    crashed = [a for a in manifest(result.run_dir) if a["status"] == "worker_crash"]
    assert [a["input_indices"] for a in crashed] == [[2]]  # retried, by a spawned worker
    # after the fall-back the worker's parent is the supervisor's interpreter
    assert "oomguard.engine.fork_server_main" not in " ".join(lines[2]["result"]["parent"])


def test_a_batch_retried_alone_has_the_budget_to_itself(
    cgroup_limiter: CgroupLimiter, run_job
) -> None:
    # item 0 dies twice (past its worker's own 150 MiB cap), so its third attempt runs on
    # the "alone" rung; ten small items are waiting, and none may start beside it
    items = [{"kind": "die_twice", "mb": 300, "seconds": 0.3}]
    items += [{"kind": "hold", "mb": 10, "seconds": 0.1} for _ in range(10)]
    result, lines = run_job(items, memory="400m", worker_memory="150m", batch_size=1)
    exactly_once(lines, set(range(11)))
    assert result.quarantined == []
    attempts = manifest(result.run_dir)
    alone = [a for a in attempts if a["alone"]]
    assert [a["input_indices"] for a in alone] == [[0]] and alone[0]["status"] == "success"
    overlapping = [
        a["input_indices"]
        for a in attempts
        if a is not alone[0] and a["start"] < alone[0]["end"] and a["end"] > alone[0]["start"]
    ]
    assert overlapping == []

"""Real cgroups and real OOM kills by the kernel (root and a writable memory controller)."""

import os
import select
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from oomguard.limits import CgroupLimiter, sweep_stale_groups
from oomguard.memory.kernel_log import find_oom_kills, read_kernel_log
from tests.helpers.children import allocator, file_reader, go
from tests.helpers.files import uncached_file

MiB = 1024**2


def test_child_over_the_cap_is_oom_killed_and_reported(cgroup_limiter: CgroupLimiter) -> None:
    job = cgroup_limiter.create_group("job", 96 * MiB)
    with allocator(1024 * MiB) as child:
        job.add_pid(child.pid)
        assert job.pids() == [child.pid]
        go(child)
        events = cgroup_limiter.events.wait(timeout=30)
        child.wait(timeout=30)
    assert child.returncode == -9
    assert len(events) == 1
    event = events[0]
    assert event.group == job.key == job.path
    assert event.oom_kill == 1
    assert event.source in ("eventfd", "inotify")
    reading = job.read()
    assert reading.oom_kill == 1
    assert reading.limit == 96 * MiB
    assert reading.peak is not None and 0.9 * 96 * MiB <= reading.peak <= 96 * MiB
    assert job.pids() == []


def test_the_kill_is_in_the_kernel_log(cgroup_limiter: CgroupLimiter) -> None:
    if read_kernel_log() is None:
        pytest.skip("the kernel log is not readable here")
    job = cgroup_limiter.create_group("logged", 64 * MiB)
    with allocator(1024 * MiB) as child:
        job.add_pid(child.pid)
        go(child)
        child.wait(timeout=30)
    log = read_kernel_log()
    assert log is not None
    kills = [k for k in find_oom_kills(log) if k.pid == child.pid]
    assert kills, "no kernel line for the kill"
    assert kills[-1].task_memcg is not None and kills[-1].task_memcg.endswith(
        Path(job.path or "").name
    )


def test_worker_child_group_attributes_the_kill(cgroup_limiter: CgroupLimiter) -> None:
    """Two workers under one job; the job cap is hit; the kill is counted in the victim's group."""
    job = cgroup_limiter.create_group("job", 160 * MiB)
    quiet = cgroup_limiter.create_group("w-0", None, parent=job)
    greedy = cgroup_limiter.create_group("w-1", None, parent=job)
    with allocator(32 * MiB) as small, allocator(1024 * MiB) as big:
        quiet.add_pid(small.pid)
        greedy.add_pid(big.pid)
        for proc in (small, big):
            os.system(f"echo 1000 > /proc/{proc.pid}/oom_score_adj")
        go(small)
        assert small.stdout is not None and small.stdout.readline().startswith("done")
        go(big)
        seen: list[str] = []
        while greedy.key not in seen:
            seen += [e.group for e in cgroup_limiter.events.wait(timeout=30)]
        big.wait(timeout=30)
        assert small.poll() is None, "the bystander must survive"
    assert big.returncode == -9
    assert greedy.read().oom_kill == 1
    assert quiet.read().oom_kill == 0


def test_worker_own_limit_and_peak_reset(cgroup_limiter: CgroupLimiter) -> None:
    job = cgroup_limiter.create_group("job", 512 * MiB)
    worker = cgroup_limiter.create_group("w-0", 64 * MiB, parent=job)
    assert Path(worker.path or "").parent == Path(job.path or "")
    with allocator(32 * MiB) as child:
        worker.add_pid(child.pid)
        go(child)
        assert child.stdout is not None and child.stdout.readline().startswith("done")
        peak = worker.read().peak
        assert peak is not None and peak >= 32 * MiB
        worker.kill_all()
        child.wait(timeout=30)
        worker.reset_peak()
        after = worker.read().peak
        assert after is not None and after < peak
    assert worker.read().limit == 64 * MiB


def test_page_cache_of_a_file_read_is_charged_but_not_in_the_working_set(
    cgroup_limiter: CgroupLimiter, tmp_path: Path
) -> None:
    """A worker that reads a big file fills its cgroup with page cache: usage grows by the
    file, the working set (usage less inactive file pages) stays at the process's own."""
    big = uncached_file(tmp_path / "big.bin", 160 * MiB)
    job = cgroup_limiter.create_group("job", 1024 * MiB)
    worker = cgroup_limiter.create_group("w-0", None, parent=job)
    with file_reader(str(big)) as child:
        worker.add_pid(child.pid)
        before = job.usage()
        go(child)
        assert child.stdout is not None and child.stdout.readline().split() == [
            "done",
            str(160 * MiB),
        ]
        usage, working = job.usage(), job.working_set()
        reading = job.read()
    assert usage - before >= 128 * MiB  # the file's pages, charged to the job
    assert working <= 64 * MiB  # a Python process's own memory, not the cache
    assert reading.usage - reading.working_set >= 128 * MiB
    assert worker.working_set() <= 64 * MiB


def test_page_cache_alone_never_kills_a_reader_at_the_cap(
    cgroup_limiter: CgroupLimiter, tmp_path: Path
) -> None:
    """Where cache pushes the cgroup to its limit the kernel reclaims it: a reader of a file
    twice the cap finishes, with no OOM kill and a working set well under the cap."""
    big = uncached_file(tmp_path / "big.bin", 160 * MiB)
    job = cgroup_limiter.create_group("job", 80 * MiB)
    with file_reader(str(big)) as child:
        job.add_pid(child.pid)
        go(child)
        assert child.stdout is not None and child.stdout.readline().startswith("done")
        working = job.working_set()
    assert job.read().oom_kill == 0
    assert working <= 64 * MiB


def test_close_kills_and_removes_everything_even_after_errors(
    cgroup_limiter: CgroupLimiter,
) -> None:
    job = cgroup_limiter.create_group("job", 256 * MiB)
    worker = cgroup_limiter.create_group("w-0", None, parent=job)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        worker.add_pid(child.pid)
        with pytest.raises(RuntimeError), cgroup_limiter:
            raise RuntimeError("the job failed")
        assert child.wait(timeout=30) == -9
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdin is not None
        child.stdin.close()
    assert not Path(job.path or "").exists()
    assert not Path(worker.path or "").exists()


def test_stale_groups_of_a_dead_supervisor_are_swept(cgroup_limiter: CgroupLimiter) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not psutil.pid_exists(dead.pid)
    stale = cgroup_limiter.base / f"oomguard-{dead.pid}-abcdef-job"
    (stale / "w-0").mkdir(parents=True)
    live = cgroup_limiter.create_group("live", None)
    removed = sweep_stale_groups(cgroup_limiter.base)
    assert stale in removed
    assert not stale.exists()
    assert Path(live.path or "").exists(), "a live supervisor's group is left alone"


def test_a_held_group_stalls_at_its_ceiling_and_goes_on_when_released(
    cgroup_limiter: CgroupLimiter,
) -> None:
    job = cgroup_limiter.create_group("job", 512 * MiB)
    worker = cgroup_limiter.create_group("w-held", None, parent=job)
    assert worker.can_hold
    with allocator(160 * MiB) as child:
        worker.add_pid(child.pid)
        worker.hold(worker.usage() + 64 * MiB)
        # the kernel signals the group's OOM on this eventfd: with the killer off, a stall
        oom_control = os.open(Path(worker.path or "") / "memory.oom_control", os.O_RDONLY)
        stalled = os.eventfd(0)
        try:
            Path(worker.path or "", "cgroup.event_control").write_text(f"{stalled} {oom_control}")
            go(child)
            ready, _, _ = select.select([stalled], [], [], 30)
        finally:
            os.close(oom_control)
        os.close(stalled)
        assert ready, "the child never reached its ceiling"
        assert worker.stalled()
        assert child.poll() is None  # stalled, not killed
        assert worker.read().oom_kill == 0
        worker.release()
        assert child.stdout is not None
        assert child.stdout.readline().startswith("done")  # it went on where it stopped
    assert not worker.stalled()
    assert worker.read().oom_kill == 0 and worker.read().limit is None

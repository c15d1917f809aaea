"""Real cgroups and real OOM kills by the kernel (root and a writable memory controller).

Every test here runs on cgroup v1 (this machine) and on cgroup v2 (Debian 12's kernel in
the v2 lane, tests/vm/run-v2-lane); the few that exercise a file only v2 has say so.
"""

import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from oomguard.limits import CgroupLimiter, MemoryGroup, sweep_stale_groups
from oomguard.limits.notify import _Inotify
from oomguard.memory.kernel_log import find_oom_kills, read_kernel_log
from oomguard.memory.system import read_system_memory
from tests.conftest import require_version
from tests.helpers.children import allocator, file_reader, go, pulse, pulser, spawn
from tests.helpers.files import uncached_file

MiB = 1024**2
NOTIFIED_BY = {"v1": "eventfd", "v2": "inotify"}  # v1: memory.oom_control; v2: memory.events


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
    assert event.source == NOTIFIED_BY[cgroup_limiter.version]
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


def test_a_batch_peak_after_a_bigger_batch_is_its_own(cgroup_limiter: CgroupLimiter) -> None:
    """Linux 5.19-6.11 cannot reset memory.peak: read as it is, every batch after a big one
    would cost what the big one did (limits/peak.py). Each batch frees what it took before
    the peak is read, as a worker's items do."""
    job = cgroup_limiter.create_group("job", 512 * MiB)
    worker = cgroup_limiter.create_group("w-0", None, parent=job)
    with pulser() as child:
        worker.add_pid(child.pid)
        worker.reset_peak()
        start = worker.usage()
        pulse(child, 96)
        big = worker.peak()
        assert big is not None and big - start >= 96 * MiB
        worker.reset_peak()
        start = worker.usage()
        pulse(child, 24)
        small = worker.peak()
        assert small is not None
        assert 22 * MiB <= small - start <= 28 * MiB, (small - start) / MiB


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


def test_a_group_whose_owner_pid_now_belongs_to_another_process_is_swept(
    cgroup_limiter: CgroupLimiter,
) -> None:
    """Pids wrap: the pid in a dead supervisor's group name may belong to a process that
    started after the group was made. That group is stale all the same."""
    later = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        reused = cgroup_limiter.base / f"oomguard-{later.pid}-abcdef-job"
        reused.mkdir()
        an_hour_ago = psutil.Process(later.pid).create_time() - 3600
        os.utime(reused, (an_hour_ago, an_hour_ago))  # made long before its "owner" started
        assert reused in sweep_stale_groups(cgroup_limiter.base)
        assert not reused.exists()
    finally:
        later.communicate("")


@contextlib.contextmanager
def stall_signal(group: MemoryGroup, version: str) -> Iterator[int]:
    """A descriptor the kernel makes readable as the held group reaches its ceiling: v1, an
    eventfd on memory.oom_control (with the OOM killer off, an OOM is a stall); v2, inotify
    on memory.events (its ``high`` counter counts every throttle)."""
    directory = Path(group.path or "")
    if version == "v1":
        oom_control = os.open(directory / "memory.oom_control", os.O_RDONLY)
        stalled = os.eventfd(0)
        try:
            (directory / "cgroup.event_control").write_text(f"{stalled} {oom_control}")
        finally:
            os.close(oom_control)
        try:
            yield stalled
        finally:
            os.close(stalled)
        return
    inotify = _Inotify()
    try:
        inotify.add_watch(directory / "memory.events")
        yield inotify.fd
    finally:
        inotify.close()


def wait_until_stalled(group: MemoryGroup, signal: int, version: str) -> None:
    """Each wake-up is the kernel's; on v2, until the throttle shows in the group's PSI too."""
    while True:
        ready, _, _ = select.select([signal], [], [], 30)
        assert ready, "the child never reached its ceiling"
        try:
            while os.read(signal, 4096):
                pass
        except BlockingIOError:
            pass
        if not group.stalled():
            continue
        pressure = group.pressure()
        if version == "v1" or (pressure is not None and pressure.some.total_us > 0):
            return


def test_a_held_group_stalls_at_its_ceiling_and_goes_on_when_released(
    cgroup_limiter: CgroupLimiter,
) -> None:
    """The side lane's hold: v1 the limit with the OOM killer off; v2 memory.high, which
    throttles; either way stalled, not killed, and on its way again once released."""
    version = cgroup_limiter.version
    job = cgroup_limiter.create_group("job", 512 * MiB)
    worker = cgroup_limiter.create_group("w-held", None, parent=job)
    assert worker.can_hold
    with allocator(160 * MiB) as child:
        worker.add_pid(child.pid)
        worker.hold(worker.usage() + 64 * MiB)
        assert not worker.stalled()
        with stall_signal(worker, version) as signal:
            if version == "v1":
                os.set_blocking(signal, False)
            go(child)
            wait_until_stalled(worker, signal, version)
        assert worker.stalled()
        assert child.poll() is None  # stalled, not killed
        assert worker.read().oom_kill == 0
        worker.release()
        assert child.stdout is not None
        assert child.stdout.readline().startswith("done")  # it went on where it stopped
    assert not worker.stalled()
    assert worker.read().oom_kill == 0 and worker.read().limit is None


def test_a_capped_group_cannot_dodge_its_limit_by_swapping(cgroup_limiter: CgroupLimiter) -> None:
    """v1: memory.memsw.limit_in_bytes at the limit; v2: memory.swap.max 0. The same child
    in a group allowed to swap survives: the swap was there to be used."""
    if read_system_memory().swap_free < 256 * MiB:
        pytest.skip("no swap here (the v2 lane has a zram swap)")
    capped = cgroup_limiter.create_group("swapless", 64 * MiB)
    with allocator(160 * MiB) as child:
        capped.add_pid(child.pid)
        go(child)
        assert child.wait(timeout=60) == -9
    assert capped.read().oom_kill == 1
    swapping = cgroup_limiter.create_group("swapping", 64 * MiB)
    directory = Path(swapping.path or "")
    if cgroup_limiter.version == "v2":
        (directory / "memory.swap.max").write_text("max")
    else:
        (directory / "memory.memsw.limit_in_bytes").write_text("-1")
    with allocator(160 * MiB) as child:
        swapping.add_pid(child.pid)
        go(child)
        assert child.stdout is not None and child.stdout.readline().startswith("done")
    assert swapping.read().oom_kill == 0


def test_cgroup_kill_takes_the_whole_subtree(cgroup_limiter: CgroupLimiter) -> None:
    """v2's cgroup.kill: one write kills every process below the group, its workers' groups
    included (the job's own cgroup.procs is empty: v2 lets only leaves hold processes)."""
    require_version(cgroup_limiter, "v2")
    job = cgroup_limiter.create_group("job", 256 * MiB)
    members = [cgroup_limiter.create_group(f"w-{n}", None, parent=job) for n in range(2)]
    children = [spawn("print('ready', flush=True); import sys; sys.stdin.read()") for _ in members]
    try:
        for member, child in zip(members, children, strict=True):
            member.add_pid(child.pid)
        assert job.pids() == []
        job.kill_all()
        assert [child.wait(timeout=30) for child in children] == [-9, -9]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()

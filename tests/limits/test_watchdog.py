"""The RSS watchdog, for real: real children over their limits are killed and reported."""

import subprocess
import sys

from oomguard.limits import WatchdogLimiter
from tests.helpers.children import allocator, go

MiB = 1024**2


def test_child_over_its_limit_is_killed_and_reported() -> None:
    with WatchdogLimiter(interval=0.02) as limiter:
        group = limiter.create_group("w-0", 128 * MiB)
        # it will stop at 1 GiB and wait: only the watchdog can end it early
        with allocator(1024 * MiB) as child:
            group.add_pid(child.pid)
            go(child)
            events = limiter.events.wait(timeout=60)
            child.wait(timeout=30)
        assert child.returncode == -9
        assert [(e.group, e.pid, e.source, e.oom_kill) for e in events] == [
            ("w-0", child.pid, "watchdog", 1)
        ]
        assert events[0].usage is not None and events[0].usage > 128 * MiB
        assert group.read().oom_kill == 1


def test_job_limit_kills_the_largest_worker() -> None:
    with WatchdogLimiter(interval=0.02) as limiter:
        job = limiter.create_group("job", 200 * MiB)
        small = limiter.create_group("w-0", None, parent=job)
        big = limiter.create_group("w-1", None, parent=job)
        with allocator(64 * MiB) as quiet, allocator(1024 * MiB) as greedy:
            small.add_pid(quiet.pid)
            big.add_pid(greedy.pid)
            go(quiet)
            assert quiet.stdout is not None and quiet.stdout.readline().startswith("done")
            go(greedy)
            events = limiter.events.wait(timeout=60)
            greedy.wait(timeout=30)
            assert quiet.poll() is None, "the smaller worker is left alone"
        assert events[0].group == "job/w-1"
        assert events[0].pid == greedy.pid
        assert big.read().oom_kill == 1 and small.read().oom_kill == 0


def test_check_once_and_close_kill_members() -> None:
    limiter = WatchdogLimiter(interval=60)  # the thread never wakes: the test drives it
    group = limiter.create_group("w-0", 1024 * MiB)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        group.add_pid(child.pid)
        assert limiter.check_once() == []
        assert group.read().usage > 0
        # RSS is all the watchdog sees, and RSS holds no page cache: working set == usage
        assert group.working_set() == group.read().working_set == group.read().usage
        assert group.pids() == [child.pid]
        limiter.close()
        assert child.wait(timeout=30) == -9
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdin is not None
        child.stdin.close()

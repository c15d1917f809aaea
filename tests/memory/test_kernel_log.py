import os
from pathlib import Path

import pytest

from oomguard.memory.kernel_log import KernelLogTail, find_oom_kills, parse_kernel_log
from tests.conftest import REQUIRE_CGROUPS

# The kernel's own lines from a cgroup v1 OOM kill on this machine, and from a Kubernetes node's.
LOG = """[  582.642424] [   2758]     0  2758    28561    27157    25504     1653         0   262144        0          1000 python3
[  582.642428] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/process_api/x/oomtest,task_memcg=/process_api/x/oomtest/w-0,task=python3,pid=2758,uid=0
[  582.642456] Memory cgroup out of memory: Killed process 2758 (python3) total-vm:114244kB, anon-rss:102016kB, file-rss:6612kB, shmem-rss:0kB, UID:0 pgtables:256kB oom_score_adj:1000
[22484121.108898] Killed process 10331 (python3) total-vm:3226164kB, anon-rss:509576kB, file-rss:20128kB, shmem-rss:44kB
[22484121.208898] Out of memory: Killed process 10332 (python3) total-vm:3226164kB, anon-rss:1024kB, file-rss:20128kB, shmem-rss:44kB
"""


def test_oom_kills_are_found_with_their_cgroups() -> None:
    kills = find_oom_kills(parse_kernel_log(LOG))
    assert [k.pid for k in kills] == [2758, 10332]
    first = kills[0]
    assert first.command == "python3"
    assert first.anon_rss == 102016 * 1024
    assert first.task_memcg == "/process_api/x/oomtest/w-0"
    assert first.oom_memcg == "/process_api/x/oomtest"
    assert len(first.lines) == 2
    assert kills[1].task_memcg is None


def test_a_tail_reads_only_what_the_kernel_logs_after_it_opened() -> None:
    # real /dev/kmsg: root may write a line into the kernel log, as any driver would
    try:
        kmsg = os.open("/dev/kmsg", os.O_WRONLY)
    except OSError as err:
        if REQUIRE_CGROUPS:  # CI runs as root, where this is always possible
            pytest.fail(f"OOMGUARD_REQUIRE_CGROUPS=1 but /dev/kmsg is not writable: {err}")
        pytest.skip(f"/dev/kmsg is not writable here: {err}")
    marker = f"oomguard-test-{os.getpid()}"
    try:
        os.write(kmsg, f"{marker} before\n".encode())
        tail = KernelLogTail()
        os.write(kmsg, f"{marker} after\n".encode())
        lines = tail.read()
        assert lines is not None
        ours = [line.text for line in lines if marker in line.text]
        assert ours == [f"{marker} after"]
        os.write(kmsg, f"{marker} later\n".encode())
        again = tail.read()
        assert again is not None
        assert [line.text for line in again if marker in line.text] == [
            f"{marker} after",
            f"{marker} later",
        ]
        tail.close()
    finally:
        os.close(kmsg)


def test_a_tail_on_a_log_it_cannot_open_reads_none(tmp_path: Path) -> None:
    tail = KernelLogTail(str(tmp_path / "no-such-kmsg"))
    assert tail.read() is None
    tail.close()

"""Per-batch peaks where the kernel cannot reset memory.peak (limits/peak.py).

Linux 5.19-6.11 (memory.peak is the lifetime peak) runs for real in the v2 lane
(test_cgroup_real.py, test_end_to_end_real.py). Here: kernels before 5.19, which have no
memory.peak, against a fixture tree standing in for the cgroup directory (this machine has
no v2 memory controller), with a real child process whose peak RSS the kernel keeps; and
the rules of BatchPeak itself.
"""

import os
from pathlib import Path

import pytest

from oomguard.errors import CgroupError
from oomguard.limits.cgroup_v2 import CgroupV2Group, peak_method_of_kernel
from oomguard.limits.peak import BatchPeak, describe
from tests.helpers.children import pulse, pulser
from tests.memory.test_cgroups import make_v2_tree

MiB = 1024**2


def test_without_memory_peak_a_batch_peak_is_read_from_samples_and_peak_rss(
    tmp_path: Path,
) -> None:
    worker = make_v2_tree(tmp_path)
    (worker / "memory.peak").unlink()  # Linux before 5.19
    assert peak_method_of_kernel(worker) == "v2-none"
    current = worker / "memory.current"  # what the kernel would say; the test plays it
    group = CgroupV2Group("w-0", None, None, worker)
    with pulser() as child:
        (worker / "cgroup.procs").write_text(f"{child.pid}\n")
        pulse(child, 96)  # before the batch: the child's peak RSS is high already
        current.write_text(str(50 * MiB))
        group.reset_peak()
        pulse(child, 24)  # allocated and freed between two reads: no sample sees it
        peak = group.peak()
        assert peak is not None and 72 * MiB <= peak <= 78 * MiB, peak / MiB
        current.write_text(str(90 * MiB))
        assert group.usage() == 90 * MiB  # a read during the batch counts
        current.write_text(str(50 * MiB))
        assert group.peak() == 90 * MiB
        group.reset_peak()  # the next batch starts afresh
        peak = group.peak()
        assert peak is not None and peak < 52 * MiB
    (worker / "cgroup.procs").write_text("")  # the child is gone
    with pytest.raises(CgroupError, match="not empty"):
        group.remove()  # closes its descriptors; the fixture's files are refused, not deleted


def test_the_peak_method_is_read_from_the_mode_of_memory_peak(tmp_path: Path) -> None:
    worker = make_v2_tree(tmp_path)
    os.chmod(worker / "memory.peak", 0o444)  # what Linux 5.19-6.11 make it
    assert peak_method_of_kernel(worker) == "v2-lifetime"
    os.chmod(worker / "memory.peak", 0o644)  # Linux 6.12+: writable, a write resets it
    assert peak_method_of_kernel(worker) == "v2-reset"
    assert "6.12" in describe("v2-reset") and "cannot be reset" in describe("v2-lifetime")


def test_a_lifetime_peak_that_rose_during_the_batch_is_the_batch_peak() -> None:
    batch = BatchPeak()
    batch.reset(usage=10 * MiB, lifetime=100 * MiB, pids=[])
    assert batch.peak(usage=5 * MiB, lifetime=120 * MiB, pids=[]) == 120 * MiB
    # not risen: the highest read of the batch, never more than the lifetime peak
    assert batch.peak(usage=5 * MiB, lifetime=100 * MiB, pids=[]) == 10 * MiB
    batch.note(60 * MiB, batch.generation)
    assert batch.peak(usage=5 * MiB, lifetime=100 * MiB, pids=[]) == 60 * MiB
    batch.note(300 * MiB, batch.generation)
    assert batch.peak(usage=5 * MiB, lifetime=100 * MiB, pids=[]) == 100 * MiB


def test_a_read_begun_before_a_reset_does_not_count_for_the_next_batch() -> None:
    batch = BatchPeak()
    batch.reset(usage=10 * MiB, lifetime=None, pids=[])
    begun = batch.generation  # the monitor thread starts a read of the last batch's usage
    batch.reset(usage=10 * MiB, lifetime=None, pids=[])  # the supervisor starts a batch
    batch.note(300 * MiB, begun)  # the read lands after the reset
    assert batch.peak(usage=10 * MiB, lifetime=None, pids=[]) == 10 * MiB
    assert BatchPeak().peak(usage=7, lifetime=None, pids=[]) == 7  # never reset: usage

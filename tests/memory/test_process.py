import os
import subprocess
import sys

import psutil

from oomguard.memory.process import (
    EMPTY_TREE,
    read_rss,
    read_tree_memory,
    sum_memory,
    tree_processes,
)
from tests.helpers.children import allocator, go

MiB = 1024**2


def test_tree_sums_parent_and_descendants() -> None:
    with allocator(64 * MiB) as child:
        go(child)
        assert child.stdout is not None
        assert child.stdout.readline().startswith("done")
        mine = read_tree_memory(os.getpid())
        theirs = read_tree_memory(child.pid)
        assert child.pid in mine.pids
        assert theirs.rss >= 64 * MiB
        assert mine.rss >= theirs.rss + read_rss(os.getpid())
        assert theirs.vms >= theirs.rss


def test_detail_reads_uss_and_pss() -> None:
    tree = read_tree_memory(os.getpid(), detail=True)
    assert tree.uss is not None and tree.pss is not None
    assert 0 < tree.uss <= tree.rss


def test_vanished_process_is_not_an_error() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    handle = psutil.Process(proc.pid)
    proc.wait()  # reaped: the pid no longer exists
    assert read_tree_memory(proc.pid) == EMPTY_TREE
    assert read_rss(proc.pid) == 0
    # a process that vanishes between listing and reading is skipped, not raised
    summed = sum_memory([psutil.Process(os.getpid()), handle], detail=True)
    assert summed.pids == (os.getpid(),)
    assert tree_processes(proc.pid) == []

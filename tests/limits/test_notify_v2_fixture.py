"""cgroup v2 code paths against a fixture tree standing in for a v2 mount (this machine
has no v2 memory controller). Notification uses real inotify on the fixture files."""

import os
import select
import subprocess
from pathlib import Path

import pytest

from oomguard.errors import CgroupError, CgroupPermissionError
from oomguard.limits.cgroup import CgroupV2Group, enable_memory_controller
from oomguard.limits.notify import CgroupEventSource
from tests.memory.test_cgroups import MiB, make_v2_tree, v2_stat

EVENTS = "low 0\nhigh 3\nmax 12\noom {oom}\noom_kill {kill}\noom_group_kill 0\n"


def test_inotify_on_memory_events_reports_a_new_kill(tmp_path: Path) -> None:
    worker = make_v2_tree(tmp_path)
    source = CgroupEventSource("v2")
    try:
        source.watch(str(worker), worker)
        assert source.drain() == []
        (worker / "memory.events").write_text(EVENTS.format(oom=3, kill=2))  # the kernel's update
        events = source.wait(timeout=10)
        assert [(e.group, e.oom_kill, e.source) for e in events] == [(str(worker), 2, "inotify")]
        # a change that is not a kill is no event
        (worker / "memory.events").write_text(EVENTS.format(oom=4, kill=2))
        assert source.wait(timeout=0.2) == []
    finally:
        source.close()


def test_v2_group_writes_the_documented_files(tmp_path: Path) -> None:
    worker = make_v2_tree(tmp_path)
    (worker / "cgroup.procs").write_text("")
    (worker / "cgroup.kill").write_text("")
    group = CgroupV2Group("w-0", None, None, worker)
    group.set_limit(512 * 1024**2)
    group.set_high(400 * 1024**2)
    group.set_oom_group(True)
    assert (worker / "memory.max").read_text() == str(512 * 1024**2)
    assert (worker / "memory.high").read_text() == str(400 * 1024**2)
    assert (worker / "memory.oom.group").read_text() == "1"
    reading = group.read()
    assert reading.limit == 512 * 1024**2 and reading.oom_kill == 1
    group.set_limit(None)
    assert (worker / "memory.max").read_text() == "max"
    group.kill_all(timeout=1)
    assert (worker / "cgroup.kill").read_text() == "1"
    group.reset_peak()  # a plain file takes the write, as memory.peak does on Linux 6.12+
    assert (worker / "memory.peak").read_text().startswith("reset")
    # a real cgroup directory has no removable files; the fixture's are refused, not deleted
    with pytest.raises(CgroupError, match="not empty"):
        group.remove()


def test_enable_memory_controller(tmp_path: Path) -> None:
    (tmp_path / "cgroup.subtree_control").write_text("cpu\n")
    enable_memory_controller(tmp_path)
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory"


def test_enable_memory_controller_without_permission(tmp_path: Path) -> None:
    """A read-only subtree_control: a read-only tmpfs as root (root ignores mode bits), 0444 otherwise."""
    target = tmp_path / "cg"
    target.mkdir()
    mounted = False
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)], check=True)
        mounted = True
    try:
        control = target / "cgroup.subtree_control"
        control.write_text("")
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)
        else:
            os.chmod(control, 0o444)
        with pytest.raises(CgroupPermissionError, match="cannot enable the memory controller"):
            enable_memory_controller(target)
    finally:
        if mounted:
            subprocess.run(["umount", str(target)], check=True)


def test_a_wake_up_without_a_kill_schedules_a_rescan_instead_of_blocking(tmp_path: Path) -> None:
    # v1 signals as an OOM starts and the kill follows: drain() must not sleep the
    # supervisor's loop waiting for it; it asks to be called again (settle_timeout)
    worker = make_v2_tree(tmp_path)
    source = CgroupEventSource("v2")
    try:
        source.watch(str(worker), worker)
        assert source.settle_timeout() is None
        (worker / "memory.events").write_text(EVENTS.format(oom=3, kill=1))  # not a new kill
        ready, _, _ = select.select([source], [], [], 10)
        assert ready  # the wake-up
        assert source.drain() == []
        assert source.settle_timeout() is not None  # a re-scan is due soon
        (worker / "memory.events").write_text(EVENTS.format(oom=3, kill=2))  # the kill lands
        events = source.wait(timeout=10)
        assert [e.oom_kill for e in events] == [2]
        assert source.settle_timeout() is None
    finally:
        source.close()


def test_v2_hold_is_memory_high(tmp_path: Path) -> None:
    """v2 cannot switch the OOM killer off: a hold is memory.high (the throttle)."""
    worker = make_v2_tree(tmp_path)
    group = CgroupV2Group("w-0", None, None, worker)
    assert group.can_hold
    group.hold(300 * 1024**2)
    assert (worker / "memory.high").read_text() == str(300 * 1024**2)
    (worker / "memory.current").write_text(str(300 * 1024**2))
    assert group.stalled()
    group.release()
    assert (worker / "memory.high").read_text() == "max"
    assert not group.stalled()


def test_v2_working_set_is_current_less_inactive_file(tmp_path: Path) -> None:
    """memory.current less memory.stat's inactive_file, through descriptors kept open: each
    call reads the files afresh (the fixture is rewritten as the kernel would update it)."""
    worker = make_v2_tree(tmp_path)  # 100 MiB charged, 60 MiB of it inactive file cache
    group = CgroupV2Group("w-0", None, None, worker)
    try:
        assert group.working_set() == 40 * MiB
        assert group.read().working_set == 40 * MiB and group.read().usage == 100 * MiB
        (worker / "memory.stat").write_text(v2_stat(inactive_file=10 * MiB))
        assert group.working_set() == 90 * MiB
        (worker / "memory.current").write_text(str(200 * MiB))
        assert group.working_set() == 190 * MiB
    finally:
        group._close_fds()

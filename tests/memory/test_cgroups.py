"""cgroup detection and reading.

The v2 cases run against fixture trees in the kernel's documented formats
(Documentation/admin-guide/cgroup-v2.rst): a stand-in, named as such, because this machine
has no cgroup v2 memory controller. v1 is read for real where present.
"""

from pathlib import Path

import pytest

from oomguard.memory.cgroups import (
    CgroupSetup,
    detect_setup,
    enclosing_limits,
    parse_mountinfo,
    parse_proc_cgroup,
    read_cgroup_memory,
    resolve_setup,
    stat_value,
)

HYBRID_CGROUP = """9:name=systemd:/
4:memory:/process_api/abc
1:cpu:/
0::/
"""
HYBRID_MOUNTINFO = """31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2_CGROUP = "0::/user.slice/user-1000.slice/session-3.scope\n"
V2_MOUNTINFO = "25 21 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
# a container without a cgroup namespace: the mount root is the container's own cgroup
DOCKER_V1_CGROUP = "5:memory:/docker/0123abcd\n"
DOCKER_V1_MOUNTINFO = (
    "400 390 0:40 /docker/0123abcd /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
)


def test_parse_proc_cgroup() -> None:
    v1, v2 = parse_proc_cgroup(HYBRID_CGROUP)
    assert v1["memory"] == "/process_api/abc"
    assert v2 == "/"


def test_hybrid_layout_finds_memory_on_v1_not_at_the_root() -> None:
    setup = resolve_setup(HYBRID_CGROUP, HYBRID_MOUNTINFO, unified_controllers="")
    assert setup.layout == "hybrid"
    assert setup.memory_version == "v1"
    assert setup.memory_dir == Path("/sys/fs/cgroup/memory/process_api/abc")
    assert setup.unified_dir == Path("/sys/fs/cgroup/unified")


def test_v2_layout() -> None:
    setup = resolve_setup(V2_CGROUP, V2_MOUNTINFO, unified_controllers="cpu io memory pids")
    assert setup.layout == "v2"
    assert setup.memory_version == "v2"
    assert setup.memory_dir == Path("/sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope")


def test_v2_without_memory_controller_says_so() -> None:
    setup = resolve_setup(V2_CGROUP, V2_MOUNTINFO, unified_controllers="cpu io")
    assert setup.memory_version is None
    assert any("memory controller" in note for note in setup.notes)


def test_mount_root_is_honoured_and_read_only_seen() -> None:
    setup = resolve_setup(DOCKER_V1_CGROUP, DOCKER_V1_MOUNTINFO, None)
    assert setup.memory_dir == Path("/sys/fs/cgroup/memory")
    assert setup.read_only


def test_no_cgroups() -> None:
    setup = resolve_setup("", "22 1 0:5 / /proc rw - proc proc rw\n", None)
    assert setup.layout == "none" and setup.memory_dir is None


def test_parse_mountinfo_controllers() -> None:
    mounts = parse_mountinfo(HYBRID_MOUNTINFO)
    assert {m.version for m in mounts} == {"v1", "v2"}
    memory = next(m for m in mounts if "memory" in m.controllers)
    assert memory.mountpoint == Path("/sys/fs/cgroup/memory")


def make_v2_tree(root: Path) -> Path:
    """A fixture tree standing in for a cgroup v2 mount: root -> job (1 GiB) -> worker."""
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    job = root / "job"
    worker = job / "worker"
    worker.mkdir(parents=True)
    (job / "memory.max").write_text(f"{1024**3}\n")
    (worker / "memory.max").write_text("max\n")
    (worker / "memory.current").write_text("104857600\n")
    (worker / "memory.high").write_text("max\n")
    (worker / "memory.peak").write_text("209715200\n")
    (worker / "memory.events").write_text(
        "low 0\nhigh 3\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n"
    )
    (worker / "memory.stat").write_text(v2_stat(inactive_file=60 * MiB))
    return worker


MiB = 1024**2


def v2_stat(inactive_file: int) -> str:
    """A v2 memory.stat in the kernel's format (Linux 6.x, abridged): 100 MiB charged, of
    which ``inactive_file`` is inactive page cache."""
    return (
        "anon 31457280\nfile 73400320\nkernel 2097152\nkernel_stack 65536\n"
        "pagetables 131072\nsec_pagetables 0\npercpu 0\nsock 0\nvmalloc 0\nshmem 0\n"
        "file_mapped 0\nfile_dirty 0\nfile_writeback 0\nswapcached 0\nanon_thp 0\n"
        f"inactive_anon 31457280\nactive_anon 0\ninactive_file {inactive_file}\n"
        f"active_file {max(0, 73400320 - inactive_file)}\nunevictable 0\nslab_reclaimable 0\n"
        "workingset_refault_anon 0\nworkingset_refault_file 12\npgfault 4242\n"
    )


def test_read_v2_files(tmp_path: Path) -> None:
    worker = make_v2_tree(tmp_path)
    memory = read_cgroup_memory(worker, "v2")
    assert memory.usage == 100 * 1024**2
    assert memory.limit is None
    assert memory.peak == 200 * 1024**2
    assert memory.events["oom"] == 2
    assert memory.oom_kill == 1
    assert memory.events["oom_group_kill"] == 0
    assert memory.inactive_file == 60 * MiB
    assert memory.working_set == 40 * MiB  # charged less the inactive page cache


def test_stat_value_finds_whole_names_at_line_starts() -> None:
    v1 = b"cache 10\ninactive_file 3\nactive_file 7\ntotal_inactive_file 30\ntotal_rss 1\n"
    assert stat_value(v1, b"total_inactive_file") == 30
    assert stat_value(v1, b"inactive_file") == 3  # not the total's line
    assert stat_value(b"inactive_file 5\nactive_file 1", b"inactive_file") == 5  # first line
    assert stat_value(b"active_file 1\ninactive_file 9", b"inactive_file") == 9  # no newline
    assert stat_value(b"anon 1\n", b"inactive_file") == 0


def test_working_set_is_never_negative(tmp_path: Path) -> None:
    # the two files are read a moment apart: cache counted after usage fell is no memory
    worker = make_v2_tree(tmp_path)
    (worker / "memory.stat").write_text(v2_stat(inactive_file=150 * MiB))
    assert read_cgroup_memory(worker, "v2").working_set == 0


def test_v2_enclosing_limits_walk_to_the_mount(tmp_path: Path) -> None:
    worker = make_v2_tree(tmp_path)
    setup = CgroupSetup("v2", "v2", worker, tmp_path)
    assert enclosing_limits(setup) == [(tmp_path / "job", 1024**3)]


def test_v1_files_of_our_own_cgroup() -> None:
    setup = detect_setup()
    if setup.memory_version != "v1" or setup.memory_dir is None:
        pytest.skip(f"this machine's memory controller is not on cgroup v1 ({setup.layout})")
    memory = read_cgroup_memory(setup.memory_dir, "v1")
    assert memory.usage > 0
    assert (
        "oom_kill" in memory.events and "under_oom" in memory.events and "failcnt" in memory.events
    )
    assert memory.peak is not None and memory.peak >= memory.usage


def test_reading_a_removed_cgroup_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        read_cgroup_memory(tmp_path / "gone", "v2")
    with pytest.raises(OSError):
        read_cgroup_memory(tmp_path / "gone", "v1")

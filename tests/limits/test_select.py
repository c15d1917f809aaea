"""Choosing the enforcer: cgroups where writable, the watchdog otherwise, with the reason."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oomguard.errors import CgroupPermissionError, ConfigError
from oomguard.limits import CgroupLimiter, WatchdogLimiter, open_limiter, probe_cgroup_access
from oomguard.limits.process import can_lower_oom_score_adj, read_oom_score_adj
from oomguard.memory.cgroups import CgroupSetup


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody may create in: a read-only tmpfs as root, mode 0555 otherwise."""
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(target)], check=False
        )
        if mounted.returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs here")
        try:
            yield target
        finally:
            subprocess.run(["umount", str(target)], check=True)
    else:
        target.chmod(0o555)
        try:
            yield target
        finally:
            target.chmod(0o755)


def test_read_only_cgroup_path_falls_back_to_the_watchdog(read_only_dir: Path) -> None:
    setup = CgroupSetup("v1", "v1", read_only_dir, read_only_dir)
    access = probe_cgroup_access(setup)
    assert not access.writable
    assert str(read_only_dir) in access.reason
    assert "read-only" in access.reason or "permission" in access.reason
    with open_limiter("auto", setup=setup) as limiter:
        assert isinstance(limiter, WatchdogLimiter)
        assert access.reason in limiter.reason
    with pytest.raises(CgroupPermissionError, match="cgroups cannot be used"):
        open_limiter("cgroup", setup=setup)


def test_read_only_mount_flag_is_respected(tmp_path: Path) -> None:
    access = probe_cgroup_access(CgroupSetup("v1", "v1", tmp_path, tmp_path, read_only=True))
    assert not access.writable and "read-only" in access.reason


def test_a_directory_that_is_not_a_cgroup_is_refused(tmp_path: Path) -> None:
    access = probe_cgroup_access(CgroupSetup("v1", "v1", tmp_path, tmp_path))
    assert not access.writable and "not a memory cgroup" in access.reason
    assert list(tmp_path.iterdir()) == []


def test_no_memory_controller() -> None:
    setup = CgroupSetup("v2", None, None, None, notes=("the memory controller is not enabled",))
    with open_limiter(setup=setup) as limiter:
        assert limiter.kind == "watchdog"
        assert "not enabled" in limiter.reason


def test_auto_uses_cgroups_here(cgroup_limiter: CgroupLimiter) -> None:
    with open_limiter("auto") as limiter:
        assert isinstance(limiter, CgroupLimiter)
        assert limiter.kind == cgroup_limiter.kind


def test_bad_mode() -> None:
    with pytest.raises(ConfigError, match="'sometimes'"):
        open_limiter("sometimes")  # type: ignore[arg-type]


PROTECT = r"""
from oomguard.limits import protect_supervisor, set_oom_score_adj, read_oom_score_adj
value = protect_supervisor()
import subprocess, sys
child = subprocess.run([sys.executable, "-c",
    "from oomguard.limits import set_oom_score_adj, read_oom_score_adj;"
    "set_oom_score_adj(1000); print(read_oom_score_adj())"], capture_output=True, text=True)
print(value, child.stdout.strip())
"""


def test_supervisor_protected_workers_first_in_line() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROTECT], capture_output=True, text=True, check=True, timeout=60
    )
    supervisor, worker = (int(v) for v in out.stdout.split())
    if can_lower_oom_score_adj():
        assert supervisor == -1000
    else:  # without CAP_SYS_RESOURCE (root in a container, here) it keeps what it had
        assert supervisor == read_oom_score_adj()
    assert worker == 1000

"""Shared fixtures: real cgroups (or a clear skip/failure), and the leak check.

Tests that need root and a writable cgroup memory controller skip elsewhere with the
reason; with ``OOMGUARD_REQUIRE_CGROUPS=1`` (set by ``.ci/run``) they fail instead, so CI
can never pass by skipping them. Each such test is marked ``cgroups``; the v2 lane
(tests/vm/run-v2-lane, ``OOMGUARD_LANE=v2``) runs them all on a cgroup v2 kernel.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from oomguard.engine.forking import close_idle
from oomguard.limits import CgroupLimiter, probe_cgroup_access
from oomguard.limits.cgroup import GROUP_PREFIX, group_base
from oomguard.memory.cgroups import detect_setup

REQUIRE_CGROUPS = os.environ.get("OOMGUARD_REQUIRE_CGROUPS") == "1"
LANE = os.environ.get("OOMGUARD_LANE")  # "v2" inside the v2 lane's VM (tests/vm/lane.py)


def require_cgroups() -> CgroupLimiter:
    """A v1/v2 cgroup limiter, or skip (fail under OOMGUARD_REQUIRE_CGROUPS=1) saying why."""
    access = probe_cgroup_access()
    if not access.writable or access.version is None or access.base is None:
        message = f"needs a writable cgroup memory controller: {access.reason}"
        if REQUIRE_CGROUPS:
            pytest.fail(f"OOMGUARD_REQUIRE_CGROUPS=1 but {message}")
        pytest.skip(message)
    return CgroupLimiter(access.version, access.base)


def require_version(limiter: CgroupLimiter, version: str) -> None:
    """Skip unless ``limiter`` is cgroup ``version`` (the v2 lane runs the v2 ones); inside
    the lane a test of its version never skips."""
    if limiter.version == version:
        return
    message = f"cgroup {version} only ({limiter.kind} here): tests/vm/run-v2-lane runs it"
    if version == LANE:
        pytest.fail(f"in the {LANE} lane but {message}")
    pytest.skip(message)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that takes real cgroups is marked ``cgroups``: the v2 lane
    (tests/vm/run-v2-lane) runs exactly those on a cgroup v2 kernel."""
    for item in items:
        if "cgroup_limiter" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cgroups)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In the v2 lane every real-cgroup test runs: a skip there is a failure, with its reason."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if LANE and report.skipped and item.get_closest_marker("cgroups") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in the {LANE} lane, where every cgroups test must run: {reason}"


@pytest.fixture
def cgroup_limiter() -> Iterator[CgroupLimiter]:
    limiter = require_cgroups()
    try:
        yield limiter
    finally:
        limiter.close()


def _our_cgroups() -> set[str]:
    setup = detect_setup()
    if setup.memory_dir is None:
        return set()
    base = group_base(setup.memory_dir)
    try:
        return {p.name for p in base.iterdir() if p.name.startswith(GROUP_PREFIX)}
    except OSError:
        return set()


def _temp_entries() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if not name.startswith("pytest-of-")}


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """After the whole suite: no cgroup, child process or temp entry the tests made remains."""
    cgroups_before = _our_cgroups()
    temp_before = _temp_entries()
    yield
    close_idle()  # the fork server kept for the next job (engine/forking.py) is ours to close
    me = psutil.Process()
    children = [p for p in me.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    leftover_cgroups = _our_cgroups() - cgroups_before
    leftover_temp = {
        name for name in _temp_entries() - temp_before if Path(tempfile.gettempdir(), name).exists()
    }
    problems = []
    if children:
        problems.append(f"child processes still running: {[(p.pid, p.name()) for p in children]}")
    if leftover_cgroups:
        problems.append(f"cgroups left behind: {sorted(leftover_cgroups)}")
    if leftover_temp:
        problems.append(
            f"temporary files left behind in {tempfile.gettempdir()}: {sorted(leftover_temp)}"
        )
    assert not problems, "; ".join(problems)

"""Shared fixtures: real cgroups (or a clear skip/failure), and the leak check.

Tests that need root and a writable cgroup memory controller skip elsewhere with the
reason; with ``OOMGUARD_REQUIRE_CGROUPS=1`` (set by ``.ci/run``) they fail instead, so CI
can never pass by skipping them. Each such test is marked ``cgroups``; the v2 lane
(tests/vm/run-v2-lane, ``OOMGUARD_LANE=v2``) runs them all on a cgroup v2 kernel.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from oomguard.engine.fork_server import close_idle
from oomguard.limits import CgroupLimiter, probe_cgroup_access
from oomguard.limits.cgroup import GROUP_PREFIX, group_base
from oomguard.memory.cgroups import detect_setup

REQUIRE_CGROUPS = os.environ.get("OOMGUARD_REQUIRE_CGROUPS") == "1"
LANE = os.environ.get("OOMGUARD_LANE")  # "v2" inside the v2 lane's VM (tests/vm/lane.py)

# a relative PYTHONPATH (PYTHONPATH=src) would send a child started in another directory
# (a fork server, a worker, a command run elsewhere) to other code, or to none
if os.environ.get("PYTHONPATH"):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        str(Path(part).resolve()) for part in os.environ["PYTHONPATH"].split(os.pathsep) if part
    )


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


@functools.cache
def _group_base() -> Path | None:
    """Where this process's jobs make their groups (it stays put for the whole suite)."""
    setup = detect_setup()
    return None if setup.memory_dir is None else group_base(setup.memory_dir)


def _our_cgroups() -> set[str]:
    base = _group_base()
    if base is None:
        return set()
    try:
        return {p.name for p in base.iterdir() if p.name.startswith(GROUP_PREFIX)}
    except OSError:
        return set()


def _described(process: psutil.Process) -> tuple[int, str]:
    try:
        return process.pid, " ".join(process.cmdline())[:200] or process.name()
    except psutil.Error:
        return process.pid, "?"


_made_during: dict[str, str] = {}  # a cgroup's name -> the test during which it appeared


@pytest.fixture(autouse=True)
def _note_new_cgroups(request: pytest.FixtureRequest) -> Iterator[None]:
    """Which test a cgroup appeared during, for the leak check's message."""
    before = _our_cgroups()
    yield
    for name in _our_cgroups() - before:
        _made_during.setdefault(name, request.node.nodeid)


def _escaped(private: Path, tree: list[psutil.Process]) -> list[tuple[int, str]]:
    """Processes a test started that left this process's tree (a daemon, an orphan whose
    parent died) and still run: found by the private TMPDIR each inherited."""
    mine = {p.pid for p in tree} | {os.getpid()}
    found = []
    for process in psutil.process_iter():
        if process.pid in mine:
            continue
        try:
            if process.environ().get("TMPDIR") == str(private) and _running(process):
                found.append(_described(process))
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole suite: no cgroup, child process or temp entry the tests made remains.

    Temporary files are looked for in a directory of the session's own (TMPDIR, for this
    process and every child it starts): the machine's /tmp is shared, and an entry another
    process makes there meanwhile (a package install, an editor) is not the suite's."""
    tmp_path_factory.getbasetemp()  # pytest's own tmp_path directories stay where they were
    private = Path(tempfile.mkdtemp(prefix="oomguard-tests-"))
    os.chmod(private, 0o711)  # others may pass through (a test's unprivileged user), not list
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(private)
    cgroups_before = _our_cgroups()
    try:
        yield
        close_idle()  # the fork server kept for the next job (engine/fork_server.py) is ours to close
        me = psutil.Process()
        tree = me.children(recursive=True)
        children = [p for p in tree if _running(p)]
        escaped = _escaped(private, tree)
        leftover_cgroups = _our_cgroups() - cgroups_before
        leftover_temp = sorted(os.listdir(private))
    finally:
        if saved[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]
        shutil.rmtree(private, ignore_errors=True)
    problems = []
    if children:
        problems.append(f"child processes still running: {[_described(p) for p in children]}")
    if escaped:
        problems.append(f"processes the tests started, out of this tree and running: {escaped}")
    if leftover_cgroups:
        named = [
            f"{name} (appeared during {_made_during.get(name, '?')})" for name in leftover_cgroups
        ]
        problems.append(f"cgroups left behind: {sorted(named)}")
    if leftover_temp:
        problems.append(f"temporary files left behind: {leftover_temp}")
    assert not problems, "; ".join(problems)


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False  # it ended while the list was read

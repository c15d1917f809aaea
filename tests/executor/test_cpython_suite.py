"""CPython's own executor tests, run against oomguard.Executor.

The tests are CPython 3.11's ``Lib/test/test_concurrent_futures.py``, which this Python may
not ship (pyenv's and Debian's ``python3.11`` leave it out; Debian's
``libpython3.11-testsuite`` package has it, and ``.ci/run`` unpacks it). It is found at
``$OOMGUARD_CPYTHON_TESTS`` (a directory holding it), in the cache ``.ci/run`` fills, or
where Debian installs it. Without it the module skips, saying how to get it; under
``CI=true`` it fails instead, so CI never passes by skipping it.

Its executor mixins run with ``oomguard.Executor`` plugged in: ``ProcessPoolExecutorTest``
(``ExecutorTest`` and the process-pool tests), ``WaitTests``, ``AsCompletedTests``,
``ExecutorShutdownTest`` and the initializer mixins. The tests that assert the opposite of
oomguard's semantics or read private attributes are in :data:`NOT_APPLICABLE`, each with
its reason; every other one must pass.
"""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.util
import os
import sys
import unittest
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from oomguard import Executor

SUITE_FILE = "test_concurrent_futures.py"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "oomguard"
PLACES = (
    os.environ.get("OOMGUARD_CPYTHON_TESTS"),
    str(CACHE / "cpython-3.11-tests" / "usr" / "lib" / "python3.11" / "test"),
    "/usr/lib/python3.11/test",
)
HOW = (
    "apt-get download libpython3.11-testsuite && dpkg-deb -x libpython3.11-testsuite_*.deb "
    "DIR; then OOMGUARD_CPYTHON_TESTS=DIR/usr/lib/python3.11/test (.ci/run does this)"
)

# The suite's tests that do not apply, and why. Everything else in the mixins must pass.
NOT_APPLICABLE = {
    "test_killed_child": "asserts the pool is broken after a killed child (BrokenProcessPool) "
    "and reads _processes; oomguard re-runs the task instead (test_executor_real.py)",
    "test_saturation": "counts executor._processes (private): oomguard starts max_workers "
    "workers at once, each in its cgroup",
    "test_idle_process_reuse_one": "counts executor._processes (private)",
    "test_idle_process_reuse_multiple": "counts executor._processes (private)",
    "test_max_tasks_per_child": "counts executor._processes (private); "
    "test_executor_real.py::test_max_tasks_per_child tests the recycling",
    "test_max_tasks_per_child_defaults_to_spawn_context": "reads executor._mp_context "
    "(private); oomguard's workers come from its own fork server, mp_context is ignored",
    "test_interpreter_shutdown": "its child script imports the executor by name from "
    "concurrent.futures; test_executor_real.py::test_interpreter_exit_runs_submitted_tasks "
    "is the same test with oomguard.Executor",
    "test_submit_after_interpreter_shutdown": "its child script imports the executor by name "
    "from concurrent.futures; test_executor_real.py::test_submit_at_interpreter_exit",
    "test_hang_gh83386": "its child script imports the executor by name from "
    "concurrent.futures (the stdlib skips it for ProcessPoolExecutor)",
}


def find_suite() -> Path | None:
    for place in PLACES:
        if place and (Path(place) / SUITE_FILE).is_file():
            return Path(place)
    return None


def load_suite() -> ModuleType | None:
    """The suite as the top-level module ``test_concurrent_futures`` (its directory on
    sys.path, so workers unpickle its functions by that name), or None."""
    place = find_suite()
    if place is None:
        return None
    if str(place) not in sys.path:
        sys.path.append(str(place))  # after the stdlib: its own `test` package stays first
    return importlib.import_module("test_concurrent_futures")


suite = load_suite()
if suite is None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but CPython's {SUITE_FILE} is not found: {HOW}")
    pytest.skip(f"CPython's {SUITE_FILE} is not here: {HOW}", allow_module_level=True)


class OomguardMixin(suite.ExecutorMixin):  # type: ignore[name-defined,misc]
    """The suite's process-pool mixin, with oomguard's executor."""

    executor_type = Executor
    ctx = "forkserver"

    def get_context(self) -> multiprocessing.context.BaseContext:
        return multiprocessing.get_context(self.ctx)


class OomguardNoContextMixin(suite.ExecutorMixin):  # type: ignore[name-defined,misc]
    """Without ``ctx``: the failing initializer's log is then looked for in this process
    (oomguard logs the worker's traceback here), not in a multiprocessing queue, which
    cannot be pickled into an initializer's arguments."""

    executor_type = Executor


def _adapted(name: str, *bases: type) -> type:
    """A test case of the suite's mixins with oomguard's, NOT_APPLICABLE ones skipped."""
    namespace: dict[str, object] = {}
    for attribute, reason in NOT_APPLICABLE.items():
        for base in bases:
            method = getattr(base, attribute, None)
            if callable(method):
                namespace[attribute] = unittest.skip(f"not applicable: {reason}")(method)
                break
    return type(name, (*bases, suite.BaseTestCase), namespace)  # type: ignore[union-attr]


TestProcessPoolExecutor = _adapted(
    "TestProcessPoolExecutor", suite.ProcessPoolExecutorTest, OomguardMixin
)
TestWait = _adapted("TestWait", suite.WaitTests, OomguardMixin)
TestAsCompleted = _adapted("TestAsCompleted", suite.AsCompletedTests, OomguardMixin)
TestExecutorShutdown = _adapted("TestExecutorShutdown", suite.ExecutorShutdownTest, OomguardMixin)
TestInitializer = _adapted("TestInitializer", suite.InitializerMixin, OomguardMixin)
TestFailingInitializer = _adapted(
    "TestFailingInitializer", suite.FailingInitializerMixin, OomguardNoContextMixin
)


@pytest.fixture(autouse=True, scope="module")
def multiprocessing_cleaned_up() -> Iterator[None]:
    """The suite's own module cleanup (its setUpModule's): multiprocessing's fork server,
    resource tracker and temporary directory, which its tests start (a Manager, say)."""
    yield
    multiprocessing.util._cleanup_tests()  # type: ignore[attr-defined]

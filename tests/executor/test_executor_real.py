"""oomguard.Executor on real processes and real cgroups: OOM kills, crashes, cancellation,
worker recycling, initializers, pickling, shutdown. CPython's own tests of the
executor's ordinary behaviour run in test_cpython_suite.py."""

from __future__ import annotations

import itertools
import json
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import as_completed
from concurrent.futures.process import _RemoteTraceback
from pathlib import Path

import psutil
import pytest

from oomguard import Executor, ExecutorBroken, OomKilled, TaskTimeout, WorkerCrashed
from oomguard.engine.fork_server import close_idle
from oomguard.limits import CgroupLimiter
from tests.conftest import _group_base, _our_cgroups
from tests.executor import tasks
from tests.helpers.gates import Gate

ROOT = Path(__file__).resolve().parents[2]
CAP_MB = 320
POISON_MB = 700  # more than the whole cap: OOM-killed on every rung, alone too


def gauntlet() -> list[tuple[int, int]]:
    """(index, MiB): mostly small, some near a third of the cap, two poison items."""
    sizes = [8, 24, 60, 16, 90, 8, POISON_MB, 40, 100, 12, 30, POISON_MB, 70, 8, 20, 50]
    return list(enumerate(sizes))


def test_gauntlet_through_as_completed(tmp_path: Path, cgroup_limiter: CgroupLimiter) -> None:
    """Every survivable result once, each poison future an OomKilled with its evidence, the
    job's peak under its cap."""
    items = gauntlet()
    with Executor(max_workers=2, memory=f"{CAP_MB}m", run_dir=tmp_path / "run") as pool:
        futures = {pool.submit(tasks.allocate, i, mb): i for i, mb in items}
        results, killed = [], []
        for future in as_completed(futures):
            try:
                results.append(future.result())
            except OomKilled as err:
                killed.append((futures[future], err))
    survivable = sorted(i for i, mb in items if mb != POISON_MB)
    assert sorted(results) == survivable  # each once
    assert sorted(i for i, _ in killed) == [i for i, mb in items if mb == POISON_MB]
    for _, err in killed:
        assert isinstance(err, MemoryError)
        assert err.cap_mb is not None and err.cap_mb <= CAP_MB
        assert err.peak_mb is None or err.peak_mb > CAP_MB / 2
        assert pickle.loads(pickle.dumps(err)).kernel_log == err.kernel_log
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["peak_cgroup_mb"] <= CAP_MB


def test_gauntlet_through_map(cgroup_limiter: CgroupLimiter) -> None:
    """map yields results in order up to the first poison item, which raises OomKilled
    there, as a task's own exception would."""
    items = gauntlet()
    first_poison = next(i for i, mb in items if mb == POISON_MB)
    seen = []
    with Executor(max_workers=2, memory=f"{CAP_MB}m") as pool:
        results = pool.map(tasks.allocate, *zip(*items, strict=True))
        with pytest.raises(OomKilled):
            for result in results:
                seen.append(result)
        survivable = [i for i, mb in items if mb != POISON_MB]
        assert list(pool.map(tasks.allocate, survivable, [8] * len(survivable))) == survivable
    assert seen == list(range(first_poison))


def test_segfault_raises_worker_crashed_and_the_rest_complete() -> None:
    with Executor(max_workers=2, crash_retries=1) as pool:
        crash = pool.submit(tasks.segfault)
        others = [pool.submit(tasks.square, n) for n in range(20)]
        with pytest.raises(WorkerCrashed) as caught:
            crash.result()
        assert [f.result() for f in others] == [n * n for n in range(20)]
    assert caught.value.signal == 11


def test_timeout_raises_task_timeout(tmp_path: Path) -> None:
    gate = Gate(tmp_path)  # never opened: the task runs until its timeout
    with Executor(max_workers=1, timeout=1.0, crash_retries=0) as pool:
        stuck = pool.submit(tasks.wait_at, gate.item())
        with pytest.raises(TaskTimeout) as caught:
            stuck.result()
        assert pool.submit(tasks.square, 3).result() == 9
    assert isinstance(caught.value, TimeoutError)


def test_own_exception_with_remote_traceback() -> None:
    with Executor(max_workers=1) as pool, pytest.raises(RuntimeError, match="kaboom") as caught:
        pool.submit(tasks.fail, "kaboom").result()
    cause = caught.value.__cause__
    assert isinstance(cause, _RemoteTraceback)
    assert "raise RuntimeError(message)" in cause.tb


def test_cancel_futures_at_shutdown(tmp_path: Path) -> None:
    """Tasks the engine has not taken are cancelled; those it has run to the end."""
    gates = [Gate(tmp_path, f"g{n}") for n in range(2)]
    pool = Executor(max_workers=2)
    running = [pool.submit(tasks.wait_at, gate.item(), n) for n, gate in enumerate(gates)]
    for gate in gates:
        gate.wait_running()
    queued = [pool.submit(tasks.square, n) for n in range(50)]
    pool.shutdown(wait=False, cancel_futures=True)
    for gate in gates:
        gate.open()
    pool.shutdown(wait=True)
    assert [f.result() for f in running] == [0, 1]
    cancelled = [f for f in queued if f.cancelled()]
    assert len(cancelled) >= 50 - 2 * 3  # the engine holds 3 tasks per worker at the most
    assert all(f.done() and f.exception() is None for f in queued if not f.cancelled())
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(tasks.square, 1)


def test_max_tasks_per_child() -> None:
    with Executor(max_workers=1, max_tasks_per_child=2) as pool:
        pids = [pool.submit(os.getpid).result() for _ in range(6)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5]


def test_initializer() -> None:
    with Executor(max_workers=2, initializer=tasks.init, initargs=("yes",)) as pool:
        assert [pool.submit(tasks.initialized).result() for _ in range(4)] == ["yes"] * 4


def test_initializer_failure_breaks_the_executor(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        pool = Executor(max_workers=2, initializer=tasks.init_fails)
        future = pool.submit(tasks.square, 2)
        with pytest.raises(ExecutorBroken, match="error in initializer"):
            future.result()
        with pytest.raises(ExecutorBroken):
            pool.submit(tasks.square, 2)
        pool.shutdown()
    assert any("ValueError: error in initializer" in r.getMessage() for r in caplog.records)


def test_unpicklable_call_and_result() -> None:
    with Executor(max_workers=1) as pool:
        with pytest.raises(pickle.PicklingError, match=r"lambda.*top level of a module"):
            pool.submit(lambda: 1).result()
        with pytest.raises(pickle.PicklingError, match=r"tests\.executor\.tasks\.square"):
            pool.submit(tasks.square, threading.Lock()).result()
        with pytest.raises(TypeError, match="cannot be pickled"):
            pool.submit(tasks.a_lock).result()
        assert pool.submit(tasks.square, 5).result() == 25


def test_pressure_reaches_the_task() -> None:
    with Executor(max_workers=1) as pool:
        assert pool.submit(tasks.pressure).result() == "normal"


def test_map_reads_a_bounded_window() -> None:
    """Mapping over an endless generator takes a window of it, not the whole."""
    taken = itertools.count()

    def endless() -> itertools.count[int]:
        for n in itertools.count():
            next(taken)
            yield n

    with Executor(max_workers=2) as pool:
        results = pool.map(tasks.square, endless(), chunksize=4, buffersize=8)
        assert [next(results) for _ in range(100)] == [n * n for n in range(100)]
        results.close()  # cancels the chunks read ahead
    assert next(taken) <= 100 + 8 * 4 + 4


def test_shutdown_with_tasks_in_flight_leaves_nothing(tmp_path: Path) -> None:
    before_children = {p.pid for p in psutil.Process().children(recursive=True)}
    before_cgroups = _our_cgroups()
    before_temp = set(os.listdir(tempfile.gettempdir()))
    gates = [Gate(tmp_path, f"g{n}") for n in range(2)]
    pool = Executor(max_workers=2)
    running = [pool.submit(tasks.wait_at, gate.item(), n) for n, gate in enumerate(gates)]
    for gate in gates:
        gate.wait_running()
    pool.shutdown(wait=False)
    for gate in gates:
        gate.open()
    pool.shutdown(wait=True)
    assert [f.result() for f in running] == [0, 1]
    close_idle()  # the fork server kept for the next executor or job
    children = {p.pid for p in psutil.Process().children(recursive=True) if p.is_running()}
    assert children - before_children == set()
    assert _our_cgroups() - before_cgroups == set()
    assert set(os.listdir(tempfile.gettempdir())) - before_temp == set()


def _python(script: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_interpreter_exit_runs_submitted_tasks() -> None:
    """CPython's test_interpreter_shutdown, with oomguard.Executor: a program that never
    shuts its executor down still runs what it submitted, and leaves cleanly."""
    done = _python(
        "from oomguard import Executor\n"
        "from tests.executor.tasks import sleep_and_print\n"
        "t = Executor(2)\n"
        "t.submit(sleep_and_print, 0.5, 'apple')\n"
    )
    assert done.stdout.strip() == "apple"
    assert done.stderr == ""


def test_submit_at_interpreter_exit() -> None:
    """CPython's test_submit_after_interpreter_shutdown, with oomguard.Executor."""
    done = _python(
        "import atexit\n"
        "from oomguard import Executor\n"
        "@atexit.register\n"
        "def run_last():\n"
        "    try:\n"
        "        t.submit(id, None)\n"
        "    except RuntimeError:\n"
        "        print('runtime-error')\n"
        "        raise\n"
        "t = Executor(2)\n"
        "t.submit(id, 42).result()\n"
    )
    assert "RuntimeError: cannot schedule new futures" in done.stderr
    assert done.stdout.strip() == "runtime-error"


def _nested_report(report: Path) -> list[dict[str, list[str]]]:
    return [json.loads(line) for line in report.read_text().splitlines()]


def test_an_executor_a_task_left_running_ends_with_its_worker(tmp_path: Path) -> None:
    """joblib's backend keeps its executor between calls, in a worker too: the worker's end
    shuts it down, so its run directory and groups go before the worker's own group."""
    report = tmp_path / "nested.jsonl"
    with Executor(max_workers=1) as outer:
        assert outer.submit(tasks.start_nested_executor, str(report), False).result() == 49
    close_idle()
    [where] = _nested_report(report)
    assert where["run_dirs"] and (where["groups"] or _group_base() is None)  # None: no cgroups
    assert [p for p in where["run_dirs"] + where["groups"] if Path(p).exists()] == []


def test_a_killed_worker_takes_the_groups_of_its_tasks_executor_along(
    tmp_path: Path, cgroup_limiter: CgroupLimiter
) -> None:
    """A worker killed with an executor running inside: its group goes with the nested
    groups below it, and the next executor sweeps the run directory the dead one left."""
    report = tmp_path / "nested.jsonl"
    with Executor(max_workers=1, crash_retries=0) as outer, pytest.raises(WorkerCrashed):
        outer.submit(tasks.start_nested_executor, str(report), True).result()
    [where] = _nested_report(report)
    assert where["groups"] and [p for p in where["groups"] if Path(p).exists()] == []
    assert all(Path(p).exists() for p in where["run_dirs"])  # its owner died with the worker
    with Executor(max_workers=1) as sweeper:
        assert sweeper.submit(tasks.square, 3).result() == 9
    close_idle()
    assert [p for p in where["run_dirs"] if Path(p).exists()] == []

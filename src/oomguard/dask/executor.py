"""The node's ``concurrent.futures.Executor``: what ``install()`` puts in each Dask
worker's ``Worker.executors`` as ``"oomguard"``.

Dask runs a task under ``dask.annotate(executor="oomguard")`` by calling this executor's
``submit`` with its own task runner; the call is pickled to one of the node's capped
workers (:mod:`oomguard.dask.node`), so an OOM kill takes that worker, never the Dask
worker. The ladder for a call, as the engine's for a batch (engine/recovery.py):

    killed for memory        -> retried as it is
    killed for memory again  -> retried alone (the node's other calls drain and wait)
    killed for memory alone  -> OomKilled, with the evidence, on the task's future
    any other death          -> retried ``crash_retries`` times, then WorkerCrashed
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import cloudpickle

from oomguard.classify import Status
from oomguard.dask.calls import FUNCTION
from oomguard.dask.node import NodeEngine, NodeResult
from oomguard.errors import OomKilled, TaskFailed, WorkerCrashed
from oomguard.sizes import mib

CALL_SPEC: dict[str, Any] = {
    "function": FUNCTION,
    "batched": False,
    "encode_json": False,
    "trim": True,
    "rlimit_as": None,
}


class NodeExecutor(Executor):
    """Runs each call in a capped worker of ``engine``, ``engine.workers`` at a time."""

    def __init__(self, engine: NodeEngine, *, crash_retries: int = 2) -> None:
        self.engine = engine
        self.crash_retries = crash_retries
        self.spec = {**CALL_SPEC, "sys_path": list(sys.path)}
        self._threads = ThreadPoolExecutor(engine.workers, thread_name_prefix="oomguard-call")
        self._ids = itertools.count(1)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        payload = cloudpickle.dumps((fn, args, kwargs))
        return self._threads.submit(self._call, payload)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._threads.shutdown(wait=wait, cancel_futures=cancel_futures)

    def _call(self, payload: bytes) -> Any:
        memory_deaths = crashes = 0
        alone = False
        attempt = 0
        while True:
            attempt += 1
            result = self.engine.run(
                self.spec, next(self._ids), [(0, payload)], alone=alone, attempt=attempt
            )
            if result.status == Status.SUCCESS:
                return unwrap(result)
            if result.status == Status.OOM_KILLED:
                if alone:
                    raise oom_killed(result, attempt)
                memory_deaths += 1
                alone = memory_deaths >= 2
            else:
                crashes += 1
                if crashes > self.crash_retries:
                    raise crashed(result, attempt)


def unwrap(result: NodeResult) -> Any:
    """The call's value, or its own exception raised again."""
    if result.item_failures:  # the worker could not even return the outcome (not picklable)
        failure = result.item_failures[0]
        raise TaskFailed(f"{failure.error.get('type')}: {failure.error.get('message')}")
    ok, value = cloudpickle.loads(result.results[0].values[0])  # type: ignore[index]
    if not ok:
        raise value
    return value


def oom_killed(result: NodeResult, attempts: int) -> OomKilled:
    evidence = result.evidence
    cap = evidence.get("node_cap_mb")
    message = (
        f"killed for memory on node {result.node} (pid {result.worker_pid}, cap {cap} MiB), "
        f"{attempts} attempts, the last alone"
    )
    peak = mib(result.peak) if result.peak is not None else None
    kernel = tuple(evidence.get("kernel_log", ()))
    return OomKilled(message, peak, cap, kernel, evidence=evidence)


def crashed(result: NodeResult, attempts: int) -> WorkerCrashed:
    evidence = result.evidence
    code = evidence.get("returncode")
    message = (
        f"the task's process died on node {result.node} (pid {result.worker_pid}, exit code "
        f"{code}), {attempts} attempts"
    )
    return WorkerCrashed(message, evidence.get("signal"), code, evidence=evidence)

"""``oomguard.Executor``: a ``concurrent.futures`` executor that survives OOM kills.

    from oomguard import Executor            # was: from concurrent.futures import ProcessPoolExecutor

    with Executor(max_workers=4, memory="6g") as pool:
        for result in pool.map(process, items):
            ...

The contract, where it differs from ProcessPoolExecutor's:

- **It never breaks.** A worker the kernel kills costs only the task it was running, and
  only once the recovery ladder gives up on it: the task is retried, then retried alone
  with the whole budget, and then its future raises :class:`~oomguard.errors.OomKilled`
  (a ``MemoryError``, with the evidence: peak, cap, the kernel's log lines). Tasks running
  beside it are re-run transparently; every other future completes. A worker that dies
  otherwise (a segfault) is retried too, then :class:`~oomguard.errors.WorkerCrashed`;
  a task over ``timeout`` seconds, then :class:`~oomguard.errors.TaskTimeout` (a
  ``TimeoutError``). The function's own exception is re-raised with the worker's traceback
  as ``__cause__``, as the stdlib does, and never retried.
- **Admission by memory**: tasks go to workers while their predicted memory (learned from
  the tasks before) fits under the cap, so big tasks that coincide queue instead of
  killing each other; ``worker_context().pressure`` tells a task how tight memory is.
- **map reads ahead a bounded window** (``buffersize`` chunks, default
  :data:`DEFAULT_BUFFER_PER_WORKER` per worker), never its whole input: a 10,000,000-item
  generator holds a window's worth of items. The calls past the window are submitted as
  the results are consumed.
- A future is PENDING (cancellable) until its task is sent to a worker.
- Broken only when no task can run at all: the initializer failed (logged at CRITICAL on
  the ``concurrent.futures`` logger, with the worker's traceback) or the engine could not
  start; then every future not done and every later ``submit`` raise
  :class:`~oomguard.errors.ExecutorBroken` (a ``BrokenProcessPool``).
- ``mp_context`` is accepted and ignored: workers are forked by oomguard's own fork server
  (``start_method="spawn"`` for fresh interpreters), each in a cgroup of its own.

Calls, arguments and results travel by pickle, with the stdlib's rules: a lambda or a
function defined inside another fails its future with a ``PicklingError`` naming it.
``run_dir``: keep the run's journal, memory log and summary there (none otherwise).
``**job_options``: any :class:`~oomguard.engine.config.JobConfig` knob (``worker_memory``,
``limiter``, ``target``, ``crash_retries``...).
"""

from __future__ import annotations

import collections
import itertools
import os
import pickle
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor as StdExecutor
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from oomguard.engine.config import JobConfig, fit_workers, normalise
from oomguard.engine.default_cap import resolve_memory
from oomguard.errors import ConfigError, ExecutorBroken
from oomguard.executor.engine_thread import EngineThread
from oomguard.executor.trampoline import SPEC
from oomguard.journal.store import Journal
from oomguard.limits.select_limiter import open_limiter

# map's read-ahead: chunks per worker submitted ahead. Results come back a batch at a
# time and map hands them out in order, so the window must outlast a batch on each worker:
# with 16, batches of 0.1 s drained it and map ran at 0.6 of ProcessPoolExecutor's speed
DEFAULT_BUFFER_PER_WORKER = 64
# short tasks share a batch up to this long while more are queued: the most a task's result
# waits behind its batch's others. 0.1 s lets 20 ms tasks (chunks of 20 calls of 1 ms) pair
# up four to a batch; at 0.02 s each was its own batch, and the engine's cost per batch
# left such chunks at 0.88-0.92 of ProcessPoolExecutor (BENCHMARKS.md, "oomguard.Executor")
EXECUTOR_BATCH_SECONDS = 0.1
EXECUTOR_MAX_BATCH = 256  # and at most this many tasks
_live: weakref.WeakSet[EngineThread] = weakref.WeakSet()
_interpreter_ending = False


def _at_exit() -> None:
    """At interpreter exit every executor's source ends: the tasks submitted run to the
    end, then the engine threads (not daemons) finish and the interpreter exits."""
    global _interpreter_ending  # noqa: PLW0603 - one flag for the process, as the stdlib's
    _interpreter_ending = True
    for engine in list(_live):
        engine.end()


threading._register_atexit(_at_exit)  # type: ignore[attr-defined]  # before threads are joined


def shutdown_all(timeout: float) -> None:
    """Shut down every executor of this process, cancelling the tasks not started, and wait
    up to ``timeout`` seconds for them: an oomguard worker calls it as it ends, so that an
    executor its items started takes its own workers, groups and directory along."""
    deadline = time.monotonic() + timeout
    engines = list(_live)
    for engine in engines:
        engine.cancel_pending()
        engine.end()
    for engine in engines:
        engine.thread.join(max(0.0, deadline - time.monotonic()))


class Executor(StdExecutor):
    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        memory: str | int | None = None,
        timeout: float | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        **job_options: Any,
    ) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None and max_tasks_per_child < 1:
            raise ValueError("max_tasks_per_child must be >= 1")
        config = executor_config(max_workers, max_tasks_per_child, timeout, job_options)
        self._max_workers = config.workers
        memory_bytes = resolve_memory(memory)
        directory = _own_run_dir(run_dir)
        setup = pickle.dumps(_worker_setup(initializer, initargs))
        limiter = open_limiter(config.limiter)  # type: ignore[arg-type]
        self._engine = EngineThread(config, memory_bytes, limiter, directory, setup)
        self._lock = threading.Lock()
        self._shutdown = False
        _live.add(self._engine)
        weakref.finalize(self, self._engine.end)  # an executor dropped unclosed shuts down
        self._engine.start()

    @property
    def _broken(self) -> str | bool:
        """Why no task can run (ProcessPoolExecutor's name for it), or False."""
        return self._engine.broken or False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._submit(fn, (fn, args, kwargs))

    def _submit(
        self, fn: Callable[..., Any], task: tuple[Any, ...], kind: str | None = None
    ) -> Future[Any]:
        """``kind``: what admission learns the task's cost as (default: ``fn``'s name)."""
        future: Future[Any] = Future()
        try:
            payload: bytes | None = pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:
            payload = None
            future.set_exception(pickling_error(fn, err))
        with self._lock:
            if self._engine.broken:
                raise ExecutorBroken(self._engine.broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _interpreter_ending:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            if payload is not None:
                self._engine.calls.add(future, payload, kind or function_name(fn))
        return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        """Like ``Executor.map``, reading ahead at most ``buffersize`` chunks of
        ``chunksize`` calls (a chunk is one task: it fails or is OOM-killed whole)."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0.")
        window = buffersize or DEFAULT_BUFFER_PER_WORKER * self._max_workers
        end_time = None if timeout is None else timeout + time.monotonic()
        chunks = _chunks(zip(*iterables, strict=False), chunksize)
        ahead = collections.deque(
            self._submit(fn, (fn, chunk)) for chunk in itertools.islice(chunks, window)
        )
        return self._results(fn, chunks, ahead, end_time)

    def _results(
        self,
        fn: Callable[..., Any],
        chunks: Iterator[list[tuple[Any, ...]]],
        ahead: collections.deque[Future[Any]],
        end_time: float | None,
    ) -> Iterator[Any]:
        try:
            while ahead:
                future = ahead.popleft()
                chunk = next(chunks, None)
                if chunk is not None:
                    ahead.append(self._submit(fn, (fn, chunk)))
                wait = None if end_time is None else end_time - time.monotonic()
                results = _result_or_cancel(future, wait)
                del future
                results.reverse()
                while results:
                    yield results.pop()  # popped: no reference kept to what was yielded
        finally:
            for future in ahead:
                future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                self._engine.cancel_pending()
            self._engine.end()
        if wait:
            self._engine.thread.join()


def executor_config(
    max_workers: int | None,
    max_tasks_per_child: int | None,
    timeout: float | None,
    options: dict[str, Any],
) -> JobConfig:
    """The engine's configuration for an executor: a task per batch, no JSON, quiet."""
    options = normalise(options)
    for name in ("function", "batched", "memory", "workers"):
        if name in options:
            raise ConfigError(f"invalid executor option {name!r}: the executor sets it")
    # A task per batch; tasks so short that a batch of them takes under half of
    # batch_seconds share batches while more are queued (the engine's cost per batch is
    # paid per batch), never waiting for more (max_wait_ms 0). A timeout or a task count per
    # worker is per task: one task per batch then.
    per_task = timeout is not None or max_tasks_per_child is not None
    values: dict[str, Any] = {
        "batch_size": 1,
        "adaptive_batch": not per_task,
        "max_batch_size": EXECUTOR_MAX_BATCH,
        "batch_seconds": EXECUTOR_BATCH_SECONDS,
        "max_wait_ms": 0,
        "log_format": "quiet",
        "trim": False,  # malloc_trim after each batch would cost more than a short task
        **options,
    }
    values.update(timeout=timeout, max_batches_per_worker=max_tasks_per_child)
    if per_task:
        values.update(batch_size=1, adaptive_batch=False)
    if max_workers is not None:
        values["workers"] = max_workers
    try:
        config = JobConfig(function=SPEC, **values)
    except TypeError as err:
        raise ConfigError(f"invalid executor option: {err}") from err
    config.validate()
    return fit_workers(config, None)


def _own_run_dir(run_dir: str | os.PathLike[str] | None) -> Path | None:
    if run_dir is None:
        return None
    path = Path(run_dir).resolve()
    if Journal.exists(path):
        raise ConfigError(
            f"run_dir {str(path)!r} holds an earlier run's journal: an executor's run "
            "directory is its own; give a new one"
        )
    return path


def _worker_setup(
    initializer: Callable[..., object] | None, initargs: tuple[Any, ...]
) -> tuple[Callable[..., None], tuple[Any, ...]]:
    """What each worker runs before its first task (trampoline.prepare_worker): the user's
    process's multiprocessing authkey, its ``__main__`` as multiprocessing's spawn loads
    it, then the initializer."""
    from oomguard.executor.trampoline import prepare_worker

    main: dict[str, str] = {}
    module = sys.modules.get("__main__")
    name = getattr(getattr(module, "__spec__", None), "name", None)
    path = getattr(module, "__file__", None)
    if name is not None:
        main["name"] = name
    elif path:
        main["path"] = os.path.abspath(path)
    init = None
    if initializer is not None:
        init = pickle.dumps((initializer, tuple(initargs)), protocol=pickle.HIGHEST_PROTOCOL)
    import multiprocessing

    authkey = bytes(multiprocessing.current_process().authkey)
    return prepare_worker, (main, authkey, init)


def function_name(fn: Callable[..., Any]) -> str:
    """``module.qualname`` (a bound method's, a partial's function's)."""
    target = getattr(fn, "func", fn)  # functools.partial
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None)
    return f"{module}.{qualname}" if module else qualname


def pickling_error(fn: Callable[..., Any], err: Exception) -> pickle.PicklingError:
    """The error of a call that cannot be pickled, naming the function."""
    name = function_name(fn)
    hint = ""
    if "<lambda>" in name or "<locals>" in name:
        hint = (
            ": a lambda or a function defined inside another cannot be pickled; define it "
            "at the top level of a module"
        )
    error = pickle.PicklingError(f"cannot send the call to {name} to a worker: {err}{hint}")
    error.__cause__ = err
    return error


def _chunks(calls: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(itertools.islice(calls, size)):
        yield chunk


def _result_or_cancel(future: Future[Any], timeout: float | None) -> Any:
    try:
        try:
            return future.result(timeout)
        finally:
            future.cancel()
    finally:
        del future  # no cycle through the exception's traceback

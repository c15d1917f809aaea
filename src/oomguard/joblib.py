"""A joblib backend on :class:`oomguard.Executor`: ``Parallel`` under a memory cap.

    import oomguard.joblib  # registers the "oomguard" backend
    from joblib import Parallel, delayed, parallel_config

    with parallel_config(backend="oomguard", memory="6g"):
        results = Parallel(n_jobs=4)(delayed(f)(x) for x in xs)

Every keyword ``parallel_config`` does not know itself (``memory``, ``worker_memory``,
``timeout``, ``max_tasks_per_child``, any Job option) goes to the executor. A call the
kernel OOM-kills is retried, then retried alone with the whole budget, and then raises
:class:`~oomguard.errors.OomKilled` out of ``Parallel`` as any task's exception does
(joblib's own error semantics: the first error stops the call, ``return_as="generator"``
yields what came before it); the calls running beside it are re-run, never lost.

Calls travel as joblib's own processes send them, by cloudpickle (so a function defined in
``__main__`` or a lambda works, as with loky). The executor is kept between ``Parallel``
calls with the same options (as loky's reusable executor is) and shut down at exit.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import threading
import warnings
from concurrent.futures import Future
from typing import Any, ClassVar

from joblib import register_parallel_backend
from joblib._parallel_backends import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
)
from joblib.parallel import cpu_count

from oomguard.executor import Executor

try:  # joblib before 1.5 vendors it; later ones leave it to loky's dependency
    from joblib.externals import cloudpickle
except ImportError:
    import cloudpickle

NAME = "oomguard"


def run_cloudpickled(payload: bytes) -> Any:
    """The worker's side: a joblib batch of calls, unpickled and run."""
    return pickle.loads(payload)()  # noqa: S301 - the user's own calls, from its process


class _Reusable:
    """One executor for every Parallel call with the same options, replaced when they change."""

    lock = threading.Lock()
    executor: Executor | None = None
    key: tuple[Any, ...] | None = None
    retired: ClassVar[list[Executor]] = []  # replaced or dropped, perhaps still ending their tasks

    @classmethod
    def get(cls, n_jobs: int, options: dict[str, Any]) -> Executor:
        # the process is part of the key: a child forked from this one (joblib's
        # multiprocessing backend) inherits the object, not the engine thread behind it
        key = (os.getpid(), n_jobs, sorted((k, repr(v)) for k, v in options.items()))
        with cls.lock:
            if cls.executor is None or cls.key != key or cls.executor._broken:
                if cls.executor is not None and cls.key is not None and cls.key[0] == key[0]:
                    cls.executor.shutdown(wait=False, cancel_futures=True)
                    cls.retired.append(cls.executor)
                cls.executor = Executor(max_workers=n_jobs, **options)
                cls.key = key
            return cls.executor

    @classmethod
    def shutdown(cls, wait: bool) -> None:
        with cls.lock:
            executor, cls.executor, cls.key = cls.executor, None, None
            retired, cls.retired = cls.retired, []
        for each in [*retired, *([executor] if executor is not None else [])]:
            each.shutdown(wait=wait)

    @classmethod
    def drop(cls, executor: Executor) -> None:
        with cls.lock:
            if cls.executor is executor:
                cls.executor, cls.key = None, None
            cls.retired.append(executor)
        executor.shutdown(wait=False, cancel_futures=True)


class OomguardBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's ParallelBackendBase over an oomguard Executor (as its LokyBackend is over
    loky's executor)."""

    supports_retrieve_callback = True
    supports_inner_max_num_threads = True
    default_n_jobs = -1

    def __init__(self, nesting_level: int | None = None, **options: Any) -> None:
        inner = options.pop("inner_max_num_threads", None)
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner)
        self.options = options  # the executor's: memory, timeout, any Job option
        self._workers: Executor | None = None  # joblib's name for a backend's pool
        self._futures: set[Future[Any]] = set()
        self._configured: tuple[int, dict[str, Any]] = (1, options)

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(int(cpu_count()) + 1 + n_jobs, 1)
        return int(n_jobs)

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        initializer: Any = None,
        initargs: tuple[Any, ...] = (),
        **memmapping: Any,
    ) -> int:
        """``initializer``/``initargs``: run once in each worker (Parallel's own options);
        ``memmapping``: joblib's options for its loky backend's shared arrays
        (``max_nbytes``, ``mmap_mode``, ``temp_folder``): arrays travel by pickle here."""
        if mp.current_process().daemon:
            # a daemonic process (a multiprocessing pool's worker) may have no children,
            # and is killed without an exit: as loky's backend does, run the calls here
            warnings.warn(
                "oomguard-backed parallel loops cannot run in a daemonic process "
                "(a multiprocessing worker): running them sequentially",
                stacklevel=3,
            )
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        n_jobs = self.effective_n_jobs(n_jobs)
        options = dict(self.options)
        if initializer is not None:
            options.update(initializer=initializer, initargs=tuple(initargs))
        self._configured = (n_jobs, options)
        self._workers = _Reusable.get(n_jobs, options)
        self.parallel = parallel
        return n_jobs

    def submit(self, func: Any, callback: Any = None) -> Future[Any]:
        assert self._workers is not None, "configure() comes first"
        task: tuple[Any, ...] = (run_cloudpickled, (cloudpickle.dumps(func),), {})
        future = self._workers._submit(run_cloudpickled, task, kind=_kind(func))
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future: Future[Any]) -> Any:
        return future.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """The call failed: what has not started is cancelled, the executor is let go (what
        runs in it ends on its own: oomguard kills no task that is not at fault) and, with
        ``ensure_ready``, a new one takes its place, as loky's backend restarts its pool."""
        for future in list(self._futures):
            future.cancel()
        if self._workers is not None:
            _Reusable.drop(self._workers)
            self._workers = None
        if ensure_ready:
            self._workers = _Reusable.get(*self._configured)

    def terminate(self) -> None:
        self._workers = None  # kept for the next Parallel call (shut down at exit)
        self.reset_batch_stats()


def shutdown(wait: bool = True) -> None:
    """Shut the kept executor down now (else at exit), as loky's
    ``get_reusable_executor().shutdown()`` does; the next Parallel call starts another."""
    _Reusable.shutdown(wait)


def _kind(func: Any) -> str:
    """What admission learns a joblib batch's cost as: its first call's function."""
    from oomguard.executor.core import function_name

    calls = getattr(func, "items", None)  # joblib's BatchedCalls: [(function, args, kwargs)]
    if calls:
        return function_name(calls[0][0])
    return function_name(func)


register_parallel_backend(NAME, OomguardBackend)

"""The executor's parent side of the engine: its source, its sink and its hooks.

::

    submit ─► Calls (index → future; a queue) ─► TaskSource: a task starts running as
                                                 the engine takes it, while it has room
                                                 (the rest stay PENDING: cancellable)
              engine: reader ─► Intake ─► Dispatch ─► workers
              FutureSink.write(): results resolve futures (a Raised re-raises)
              quarantined():      the ladder gave up: OomKilled, WorkerCrashed, TaskTimeout

Futures are resolved in the engine's thread, as ProcessPoolExecutor resolves its own in
its manager thread (done-callbacks run there).
"""

from __future__ import annotations

import builtins
import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures.process import _RemoteTraceback
from typing import Any

from oomguard.classify import Status
from oomguard.engine.items import Item
from oomguard.engine.sinks import Prepared, Results
from oomguard.errors import OomKilled, TaskFailed, TaskTimeout, WorkerCrashed
from oomguard.executor.trampoline import Raised

POLL = 0.2  # seconds the reader waits on the queue before it looks whether the run ended


class Calls:
    """Every future not resolved yet, by its task's index (the engine's input index), and
    the hand-off of tasks to the engine.

    A task starts running (its future RUNNING, no longer cancellable) when the engine takes
    it, and the engine holds at most ``capacity()`` started tasks that are not settled
    (enough for a batch in flight and one ready per worker): the rest wait here, PENDING,
    so ``cancel()`` and ``shutdown(cancel_futures=True)`` still stop them. While there is
    room and nothing waits, ``submit`` starts its task itself, in the caller's thread, as
    ProcessPoolExecutor's call queue does.
    """

    def __init__(self, capacity: Callable[[], int]) -> None:
        self.futures: dict[int, Future[Any]] = {}
        self.queue: queue.SimpleQueue[tuple[int, bytes, bool, str] | None] = queue.SimpleQueue()
        self.capacity = capacity
        self._indices = itertools.count()
        self._room = threading.Condition()
        self._started = 0  # started and not settled
        self._waiting = 0  # in the queue, not started

    def add(self, future: Future[Any], payload: bytes, kind: str) -> None:
        """A task; ``kind``: its function's name (admission learns a cost per kind)."""
        index = next(self._indices)
        self.futures[index] = future
        with self._room:
            started = self._waiting == 0 and self._started < self.capacity()
            if started:
                future.set_running_or_notify_cancel()  # new: it cannot be cancelled yet
                self._started += 1
            else:
                self._waiting += 1
        self.queue.put((index, payload, started, kind))

    def start(self, future: Future[Any], stopped: threading.Event) -> bool:
        """Wait for room in the engine, then start ``future``'s task; False when it was
        cancelled meanwhile (its waiters hear of it now)."""
        with self._room:
            self._waiting -= 1
            while self._started >= self.capacity() and not stopped.is_set():
                self._room.wait(POLL)
            if not future.set_running_or_notify_cancel():
                return False
            self._started += 1
            return True

    def settled(self, count: int) -> None:
        """``count`` started tasks are done: room for as many more."""
        with self._room:
            self._started -= count
            self._room.notify()

    def end(self) -> None:
        """No task comes after this (shutdown): the source ends once it has read the rest."""
        self.queue.put(None)

    def fail_all(self, error: BaseException) -> None:
        """Every future not done fails with ``error`` (the engine stopped)."""
        while self.futures:
            _, future = self.futures.popitem()
            if future.running() or future.set_running_or_notify_cancel():
                future.set_exception(error)


class TaskSource:
    """The engine's source: submitted tasks, in order, until :meth:`Calls.end`."""

    description = "executor tasks"

    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.stopped = threading.Event()  # the run ended without an end (it failed)

    def __iter__(self) -> Iterator[Item]:
        calls = self.calls
        while not self.stopped.is_set():
            try:
                entry = calls.queue.get(timeout=POLL)
            except queue.Empty:
                continue
            if entry is None:
                return
            index, payload, started, kind = entry
            future = calls.futures.get(index)
            if future is None:
                continue
            if not (started or calls.start(future, self.stopped)):
                calls.futures.pop(index, None)  # cancelled while it waited: it never runs
                continue
            yield Item(index, payload, len(payload), kind=kind)

    def count(self) -> int | None:
        return None  # open-ended until shutdown


class FutureSink:
    """The engine's sink: each result resolves its future (values by pickle, no JSON)."""

    wants_json = False

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def write(self, results: list[Results]) -> None:
        pop = self.calls.futures.pop
        self.calls.settled(sum(map(len, results)))
        for group in results:
            assert group.values is not None
            for index, value in zip(group.indices, group.values, strict=True):
                future = pop(index, None)
                if future is None:
                    continue
                if type(value) is Raised:
                    future.set_exception(with_remote_traceback(value.exception, value.traceback))
                else:
                    future.set_result(value)
                del future, value  # no reference kept to a result (map's callers rely on it)

    def prepare(self, final: bool) -> Prepared | None:
        return None  # futures are the output: nothing to make durable

    def commit(self, prepared: Prepared) -> None:
        pass

    def recover(self, tokens: list[str]) -> None:
        pass

    def close(self) -> None:
        pass


class FutureHooks:
    """The engine's hooks (engine/hooks.py): a quarantined task's future fails with the
    ladder's evidence."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def quarantined(self, item: Item, status: Status, evidence: dict[str, Any]) -> None:
        self.calls.settled(1)
        future = self.calls.futures.pop(item.index, None)
        if future is not None:
            future.set_exception(exception_for(status, evidence))


def with_remote_traceback(exc: BaseException, text: str) -> BaseException:
    """``exc`` with the worker's traceback as its cause, as ProcessPoolExecutor raises it."""
    # typeshed has it take a traceback object; it takes the text
    exc.__cause__ = _RemoteTraceback(f'\n"""\n{text}"""')  # type: ignore[arg-type]
    return exc


def exception_for(status: Status, evidence: dict[str, Any]) -> BaseException:
    """What a future raises for a task the ladder gave up on."""
    peak, cap = evidence.get("peak_mb"), evidence.get("job_cap_mb")
    if status is Status.OOM_KILLED:
        lines = tuple(evidence.get("kernel_log") or ())
        where = f"at {peak} MiB of a {cap} MiB cap" if peak is not None else f"(cap {cap} MiB)"
        message = f"the task was OOM-killed {where}, also when it ran alone"
        return OomKilled(message, peak, cap, lines)
    if status is Status.MEMORY_ERROR:
        said = evidence.get("message", "")
        error = OomKilled(f"the task raised MemoryError, also when it ran alone: {said}")
        return with_remote_traceback(error, str(evidence.get("traceback", "")))
    if status is Status.TIMEOUT:
        return TaskTimeout(f"the task ran past its timeout of {evidence.get('timeout_sec')} s")
    if status is Status.WORKER_CRASH:
        signal, code = evidence.get("signal"), evidence.get("returncode")
        how = f"killed by signal {signal}" if signal else f"exited with code {code}"
        return WorkerCrashed(f"the task's worker {how}, on each try", signal, code)
    return _remote_error(evidence)


def _remote_error(evidence: dict[str, Any]) -> BaseException:
    """An error the worker reported as text (a result that could not be pickled back): the
    builtin exception of that name where there is one, else TaskFailed."""
    name, message = str(evidence.get("type", "")), str(evidence.get("message", evidence))
    kind = getattr(builtins, name, None)
    error: BaseException
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            error = kind(message)
        except Exception:
            error = TaskFailed(f"{name}: {message}")
    else:
        error = TaskFailed(f"{name}: {message}" if name else message)
    return with_remote_traceback(error, str(evidence.get("traceback", "")))

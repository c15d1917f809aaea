"""The executor's parent side of the engine: its source, its sink and its hooks.

::

    submit ─► Calls (index → future) ─► TaskSource (a queue; ends at shutdown)
                                            │ the engine's reader thread
                                            ▼
              engine: Intake ─► Dispatch ─► sending(): futures start running (cancelled
                                            │          ones are dropped, never run)
                                            ▼
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
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures.process import _RemoteTraceback
from typing import Any

from oomguard.classify import Status
from oomguard.engine.items import Batch, Item
from oomguard.engine.sinks import Prepared, Results
from oomguard.errors import OomKilled, TaskFailed, TaskTimeout, WorkerCrashed
from oomguard.executor.trampoline import Raised

POLL = 0.2  # seconds the reader waits on the queue before it looks whether the run ended


class Calls:
    """Every future not resolved yet, by its task's index (the engine's input index)."""

    def __init__(self) -> None:
        self.futures: dict[int, Future[Any]] = {}
        self._indices = itertools.count()
        self.queue: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()

    def add(self, future: Future[Any], payload: bytes) -> None:
        index = next(self._indices)
        self.futures[index] = future
        self.queue.put((index, payload))

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
            index, payload = entry
            future = calls.futures.get(index)
            if future is None or future.cancelled():
                if future is not None:  # waiters on it hear of the cancellation now
                    future.set_running_or_notify_cancel()
                    calls.futures.pop(index, None)
                continue
            yield Item(index, payload, len(payload))

    def count(self) -> int | None:
        return None  # open-ended until shutdown


class FutureSink:
    """The engine's sink: each result resolves its future (values by pickle, no JSON)."""

    wants_json = False

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def write(self, results: list[Results]) -> None:
        pop = self.calls.futures.pop
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
    """The engine's hooks (engine/hooks.py): futures start running as their batch goes;
    a quarantined task's future fails with the ladder's evidence."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def sending(self, batch: Batch) -> Batch | None:
        futures = self.calls.futures
        kept = []
        for item in batch.items:
            future = futures.get(item.index)
            if future is None:
                continue
            if future.running() or future.set_running_or_notify_cancel():
                kept.append(item)
            else:
                futures.pop(item.index, None)  # cancelled while it waited: it never runs
        if len(kept) == len(batch.items):
            return batch
        return batch.only(kept) if kept else None

    def quarantined(self, item: Item, status: Status, evidence: dict[str, Any]) -> None:
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

"""The worker process: runs batches, reports results in groups, decides nothing.

Forked by the fork server (or started as ``python -m oomguard.engine.worker FD SLOT_FD``)
with one end of a socket pair and a 16-byte shared memory slot. It first waits for
``init``, which the supervisor sends only after moving it into its cgroup, so everything
the user's code allocates is charged to that cgroup. The messages are in
:mod:`oomguard.engine.protocol`.

Results travel in groups: whatever finished in the last ``REPORT_INTERVAL`` (0.5) seconds,
and the rest with ``done``, so a batch of fast items costs the supervisor one or two
messages, not one per item. Which item is running is not a message at all: before each item
the worker writes ``(batch_id, index)`` into the shared slot. When the worker dies the
supervisor reads the slot: that item is the one to blame; items that finished but were not
reported yet are simply run again. This module imports little: every millisecond of
start-up is paid again for each replacement worker.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import mmap
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from multiprocessing.connection import Connection
from typing import Any

from oomguard.classify import Status, classify_exception
from oomguard.engine import protocol
from oomguard.engine.context import Pressure, WorkerContext, set_context
from oomguard.engine.protocol import (
    AFTER_ITEMS,
    SLOT,
    SLOT_SIZE,
    Group,
    ItemFailure,
    WireItems,
    first_index,
    item_values,
    pairs,
)
from oomguard.limits.process import (
    WORKER_OOM_SCORE_ADJ,
    apply_rlimit_as,
    become_subreaper,
    die_with_parent,
    kill_descendants,
    set_oom_score_adj,
)
from oomguard.memory.own import own_rss


def resolve_function(spec: str) -> Callable[..., Any]:
    """``package.module:qualname``, or ``file:/path/script.py:qualname`` for a script's own."""
    if spec.startswith("file:"):
        path, _, qualname = spec[len("file:") :].rpartition(":")
        module_spec = importlib.util.spec_from_file_location("__oomguard_main__", path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules["__oomguard_main__"] = module
        module_spec.loader.exec_module(module)
    else:
        module_name, _, qualname = spec.partition(":")
        module = importlib.import_module(module_name)
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    return target  # type: ignore[no-any-return]


def malloc_trimmer() -> Callable[[int], int] | None:
    """glibc's malloc_trim, to give freed heap back to the OS after a batch; None under jemalloc.

    Looked up among the symbols already loaded (libc is), not through
    ctypes.util.find_library, which runs ``ldconfig``: tens of milliseconds per worker.
    """
    import ctypes

    from oomguard.memory.allocator import jemalloc_loaded

    if jemalloc_loaded():
        return None
    try:
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None
    return trim if callable(trim) else None


def error_payload(exc: BaseException) -> dict[str, str]:
    import traceback  # only when an item fails: not a cost of every worker's start

    return {
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "traceback": "".join(traceback.format_exception(exc))[-8000:],
    }


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# json's own C encoder, made once with json.dumps's defaults (ensure_ascii=False) but
# allow_nan=False: NaN and Infinity are no JSON (``jq`` and most parsers refuse a file that
# holds them), so a result holding one is its item's error, never a line of the output.
# JSONEncoder.encode builds a new encoder for every call, which costs more than encoding a
# small result. It keeps the containers it is inside of in _MARKERS (circular references
# are a ValueError); an error leaves them there, so they are cleared after one.
_MARKERS: dict[int, Any] = {}
_encode_c = (
    c_make_encoder(_MARKERS, _not_json, encode_basestring, None, ": ", ", ", False, False, False)
    if c_make_encoder is not None  # None where Python was built without _json
    else None
)
_encode_py = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
NOT_FINITE = "Out of range float values are not JSON compliant"  # json's own message


def encode_value(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False)``, without a new encoder per call."""
    kind = type(value)
    if kind is str:
        return encode_basestring(value)
    if kind is int:
        return int.__repr__(value)  # what json writes for an int, without the encoder's call
    if value is None:
        return "null"
    if _encode_c is None:
        return _encode_py(value)
    try:
        return "".join(_encode_c(value, 0))
    except BaseException:
        _MARKERS.clear()
        raise


def encode_line(index: int, value: Any) -> str:
    """A result's JSONL line (the sink adds the newline): what
    ``json.dumps({"input_index": index, "result": value}, ensure_ascii=False)`` makes,
    without a dict to build and walk per item."""
    return f'{{"input_index": {index}, "result": {encode_value(value)}}}'


_ERROR = str(Status.ERROR)
# seconds between result groups within a batch: each group wakes the supervisor, which
# competes with the workers for the cores; a worker's death loses at most this much work
REPORT_INTERVAL = 0.5
REPORT_MAX_ITEMS = 1000  # and at most this many results held back
# seconds a worker that was asked to stop gives the executors its items started, inside
# the supervisor's grace for a stopping worker (pool.STOP_GRACE)
NESTED_SHUTDOWN = 4.0


def not_json(index: int, exc: Exception) -> TypeError:
    """The error of an item whose result cannot be a JSONL line, in words."""
    if str(exc).startswith(NOT_FINITE):
        return TypeError(
            f"result of item {index} holds NaN or Infinity, which JSON cannot hold (an output "
            "with them is no JSON): return None or a string for such values"
        )
    return TypeError(f"result of item {index} is not JSON-serializable: {exc}")


def picklable(group: Group) -> Group:
    """The group, each value that cannot be pickled turned into its item's error."""
    indices, results, failures = group
    if isinstance(results, str):
        return group  # text and error payloads (strings) always pickle
    kept: list[int] = []
    values: list[Any] = []
    for index, value in zip(indices, results, strict=True):
        try:
            pickle.dumps(value)
        except (TypeError, AttributeError, ValueError, pickle.PicklingError) as exc:
            detail = error_payload(TypeError(f"result of item {index} cannot be pickled: {exc}"))
            failures.append(ItemFailure(index, _ERROR, detail))
        else:
            kept.append(index)
            values.append(value)
    return kept, values, failures


class WorkerLoop:
    def __init__(self, conn: Connection, spec: dict[str, Any], slot: mmap.mmap) -> None:
        self.conn = conn
        self.slot = slot
        self.function = resolve_function(spec["function"])
        self.batched: bool = spec["batched"]
        self.encode_json: bool = spec["encode_json"]
        self.trim = malloc_trimmer() if spec.get("trim") else None
        # results since the last report, in the order the items ran: successes as
        # (index, value), encoded at the report; failures apart
        self.held: list[tuple[int, Any]] = []
        self.failed: list[ItemFailure] = []
        self.report_at = 0.0

    def _group(self) -> Group:
        """The held results as one group: successes JSON-encoded here, off the supervisor.

        A whole group at once, in one tight loop: encoding each item right after it ran
        costs several times more (the encoder's code and data are cold by then)."""
        held, self.held = self.held, []
        failures, self.failed = self.failed, []
        indices: list[int] = []
        values: list[Any] = []
        lines: list[str] = []
        keep, encode_json = indices.append, self.encode_json
        for index, value in held:
            if not encode_json:
                values.append(value)
            else:
                try:
                    lines.append(encode_line(index, value))
                except (TypeError, ValueError) as exc:
                    failures.append(ItemFailure(index, _ERROR, error_payload(not_json(index, exc))))
                    continue
            keep(index)
        if encode_json:
            return indices, "".join(f"{line}\n" for line in lines), failures
        return indices, values, failures

    def report(self, batch_id: int, stats: dict[str, Any] | None = None) -> None:
        """Send the held results (with ``stats``: the batch's ``done``)."""
        group = self._group()
        self.report_at = time.monotonic() + REPORT_INTERVAL
        try:
            self.conn.send(protocol.results_message(batch_id, group, stats))
        except (TypeError, AttributeError, ValueError, pickle.PicklingError):
            # a result that cannot be pickled (nothing was sent): that item becomes an error
            self.conn.send(protocol.results_message(batch_id, picklable(group), stats))

    def run_items(self, batch_id: int, items: WireItems) -> None:
        mark, slot, function = SLOT.pack_into, self.slot, self.function
        for index, value in pairs(items):
            mark(slot, 0, batch_id, index)
            try:
                result = function(value)
            except Exception as exc:  # user code: every exception is a classified result
                self.failed.append(
                    ItemFailure(index, str(classify_exception(exc)), error_payload(exc))
                )
            else:
                self.held.append((index, result))
            if (
                len(self.held) + len(self.failed) >= REPORT_MAX_ITEMS
                or time.monotonic() >= self.report_at
            ):
                self.report(batch_id)

    def run_batch(self, batch_id: int, items: WireItems) -> None:
        first = first_index(items)
        SLOT.pack_into(self.slot, 0, batch_id, AFTER_ITEMS if first is None else first)
        values = item_values(items)
        try:
            results = self.function(values)
            results = list(results)
        except Exception as exc:
            status = str(classify_exception(exc))
            self.conn.send((protocol.BATCH_ERROR, batch_id, status, error_payload(exc)))
            return
        if len(results) != len(values):
            problem = ValueError(
                f"the batched function returned {len(results)} results for {len(values)} items"
            )
            self.conn.send((protocol.BATCH_ERROR, batch_id, _ERROR, error_payload(problem)))
            return
        self.held.extend(
            (index, result) for (index, _), result in zip(pairs(items), results, strict=True)
        )

    def serve(self) -> None:
        while True:
            message = self.conn.recv()
            if message[0] == protocol.STOP:
                return
            _, batch_id, items, extra = message
            set_context(
                WorkerContext(
                    Pressure(*extra["pressure"]), batch_id=batch_id, attempt=extra["attempt"]
                )
            )
            self.report_at = time.monotonic() + REPORT_INTERVAL
            if self.batched:
                self.run_batch(batch_id, items)
            else:
                self.run_items(batch_id, items)
            SLOT.pack_into(self.slot, 0, batch_id, AFTER_ITEMS)
            trimmed = self.trim is not None and bool(self.trim(0))
            self.report(batch_id, {protocol.RSS_AFTER: own_rss(), protocol.TRIMMED: trimmed})


def main(argv: list[str]) -> int:
    """``FD SLOT_FD [PARENT]``: PARENT, the supervisor's pid, when it spawned this worker
    itself (a forked worker asks to die with its fork server before this runs)."""
    # Ctrl-C belongs to the supervisor, which stops workers itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if len(argv) > 2:
        die_with_parent(int(argv[2]))  # a supervisor killed by SIGKILL takes its workers along
    # what an item starts stays in this worker's tree, detached or not, so it can be killed
    become_subreaper()
    try:
        return run_worker(argv)
    finally:
        end_nested_executors()
        kill_descendants()  # nothing an item started outlives its worker


def end_nested_executors() -> None:
    """An ``oomguard.Executor`` an item started (joblib's backend keeps one between calls)
    shuts down before its worker ends: killed instead, it would leave its groups inside the
    worker's and its temporary run directory behind."""
    executors = sys.modules.get("oomguard.executor.core")
    if executors is not None:
        executors.shutdown_all(NESTED_SHUTDOWN)


def run_setup(setup: bytes | None) -> None:
    """An embedding's setup, run once before the worker says ready: a pickled
    ``(callable, args)`` (the executor's initializer, engine/hooks.py)."""
    if setup is not None:
        function, args = pickle.loads(setup)  # noqa: S301 - from the supervisor, over its own socket
        function(*args)


def run_worker(argv: list[str]) -> int:
    conn = Connection(int(argv[0]))
    slot_fd = int(argv[1])
    slot = mmap.mmap(slot_fd, SLOT_SIZE)
    os.close(slot_fd)
    set_oom_score_adj(WORKER_OOM_SCORE_ADJ)
    try:
        kind, spec = conn.recv()
    except EOFError:
        return 0
    assert kind == protocol.INIT
    sys.path[:0] = [p for p in spec["sys_path"] if p not in sys.path]
    if spec.get("rlimit_as"):
        apply_rlimit_as(spec["rlimit_as"])  # the coarse guard where no cgroup can be written
    try:
        run_setup(spec.get("setup"))
    except BaseException as exc:
        import traceback

        text = "".join(traceback.format_exception(exc))[-8000:]
        conn.send((protocol.FATAL, f"the workers' initializer failed:\n{text}"))
        return 1
    try:
        loop = WorkerLoop(conn, spec, slot)
    except BaseException as exc:
        conn.send(
            (protocol.FATAL, f"cannot load {spec['function']!r}: {type(exc).__name__}: {exc}")
        )
        return 1
    conn.send((protocol.READY,))
    try:
        loop.serve()
    except EOFError:
        pass  # the supervisor is gone: nothing left to do
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The worker process: runs batches, reports every item as it finishes, decides nothing.

Started by the supervisor as ``python -m oomguard.engine.worker FD`` with one end of a
socket pair. It first waits for ``init``, which the supervisor sends only after moving
it into its cgroup, so everything the user's code allocates is charged to that cgroup.

Protocol (pickled tuples over a multiprocessing Connection):

    supervisor -> worker   ("init", spec) | ("batch", batch_id, [(index, value), ...], extra)
                           | ("stop",)    extra: {"pressure": (level, reason), "attempt": n}
    worker -> supervisor   ("ready", pid) | ("fatal", message)
                           ("item", batch_id, index, status, value, line, error)
                           ("done", batch_id, stats)

With a per-item function each item is reported the moment it finishes, so when the
worker dies the supervisor knows exactly which item was running (the first unreported
one) and keeps the results of those before it. This module imports little: every
millisecond of start-up is paid again for each replacement worker.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import resource
import signal
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from oomguard.engine.classify import Status, classify_exception
from oomguard.engine.context import Pressure, WorkerContext, set_context
from oomguard.limits.process import WORKER_OOM_SCORE_ADJ, apply_rlimit_as, set_oom_score_adj
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
    """glibc's malloc_trim, to give freed heap back to the OS after a batch; None under jemalloc."""
    import ctypes
    import ctypes.util

    from oomguard.memory.allocator import jemalloc_loaded

    if jemalloc_loaded():
        return None
    name = ctypes.util.find_library("c")
    if not name:
        return None
    libc = ctypes.CDLL(name)
    trim = getattr(libc, "malloc_trim", None)
    return trim if callable(trim) else None


def error_payload(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "traceback": "".join(traceback.format_exception(exc))[-8000:],
    }


class WorkerLoop:
    def __init__(self, conn: Connection, spec: dict[str, Any]) -> None:
        self.conn = conn
        self.function = resolve_function(spec["function"])
        self.batched: bool = spec["batched"]
        self.encode_json: bool = spec["encode_json"]
        self.trim = malloc_trimmer() if spec.get("trim") else None

    def send_item(
        self, batch_id: int, index: int, status: Status, value: Any, error: dict[str, str] | None
    ) -> None:
        line = None
        if status is Status.SUCCESS and self.encode_json:
            try:
                line = json.dumps({"input_index": index, "result": value}, ensure_ascii=False)
            except (TypeError, ValueError) as exc:
                status, error = (
                    Status.ERROR,
                    error_payload(
                        TypeError(f"result of item {index} is not JSON-serializable: {exc}")
                    ),
                )
            value = None  # the line carries it
        try:
            self.conn.send(("item", batch_id, index, str(status), value, line, error))
        except (TypeError, AttributeError, ValueError) as exc:  # pickling failed; nothing was sent
            if status is not Status.SUCCESS:
                raise
            detail = error_payload(TypeError(f"result of item {index} cannot be pickled: {exc}"))
            self.conn.send(("item", batch_id, index, str(Status.ERROR), None, None, detail))

    def run_items(self, batch_id: int, items: list[tuple[int, Any]]) -> None:
        for index, value in items:
            try:
                result = self.function(value)
            except Exception as exc:  # user code: every exception is a classified result
                self.send_item(batch_id, index, classify_exception(exc), None, error_payload(exc))
                continue
            self.send_item(batch_id, index, Status.SUCCESS, result, None)

    def run_batch(self, batch_id: int, items: list[tuple[int, Any]]) -> None:
        try:
            results = self.function([value for _, value in items])
            results = list(results)
        except Exception as exc:
            self.conn.send(
                ("batch_error", batch_id, str(classify_exception(exc)), error_payload(exc))
            )
            return
        if len(results) != len(items):
            problem = ValueError(
                f"the batched function returned {len(results)} results for {len(items)} items"
            )
            self.conn.send(("batch_error", batch_id, str(Status.ERROR), error_payload(problem)))
            return
        for (index, _), result in zip(items, results, strict=True):
            self.send_item(batch_id, index, Status.SUCCESS, result, None)

    def serve(self) -> None:
        while True:
            message = self.conn.recv()
            if message[0] == "stop":
                return
            _, batch_id, items, extra = message
            set_context(
                WorkerContext(
                    Pressure(*extra["pressure"]), batch_id=batch_id, attempt=extra["attempt"]
                )
            )
            rss_before = own_rss()
            if self.batched:
                self.run_batch(batch_id, items)
            else:
                self.run_items(batch_id, items)
            trimmed = self.trim is not None and bool(self.trim(0))
            stats = {
                "rss_before": rss_before,
                "rss_after": own_rss(),
                "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "trimmed": trimmed,
            }
            self.conn.send(("done", batch_id, stats))


def main(argv: list[str]) -> int:
    # Ctrl-C belongs to the supervisor, which stops workers itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(argv[0]))
    set_oom_score_adj(WORKER_OOM_SCORE_ADJ)
    try:
        kind, spec = conn.recv()
    except EOFError:
        return 0
    assert kind == "init"
    sys.path[:0] = [p for p in spec["sys_path"] if p not in sys.path]
    if spec.get("rlimit_as"):
        apply_rlimit_as(spec["rlimit_as"])  # the coarse guard where no cgroup can be written
    try:
        loop = WorkerLoop(conn, spec)
    except BaseException as exc:
        conn.send(("fatal", f"cannot load {spec['function']!r}: {type(exc).__name__}: {exc}"))
        return 1
    conn.send(("ready", os.getpid()))
    try:
        loop.serve()
    except EOFError:
        pass  # the supervisor is gone: nothing left to do
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

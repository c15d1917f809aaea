"""Functions the executor tests submit (importable in workers as ``tests.executor.tasks``)."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from oomguard import worker_context
from tests.engine.workloads import gate

MiB = 1024 * 1024
STATE = {"initialized": "no"}


def square(x: int) -> int:
    return x * x


def allocate(index: int, mb: int) -> int:
    """Hold ``mb`` MiB, every page touched, then return ``index`` (the gauntlet's item)."""
    block = bytearray(mb * MiB)
    block[::4096] = b"\x01" * len(block[::4096])
    return index


def allocate_noting(index: int, mb: int, directory: str) -> int:
    """``allocate``, then a file named ``index`` in ``directory``: the call finished."""
    allocate(index, mb)
    (Path(directory) / str(index)).touch()
    return index


def wait_at(gate_item: dict[str, Any], value: Any = None) -> Any:
    """Run until the test opens the gate (tests/helpers/gates.py), then return ``value``."""
    gate(gate_item)
    return value


def fail(message: str) -> None:
    raise RuntimeError(message)


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def a_lock() -> Any:
    return threading.Lock()  # a result that cannot be pickled


def init(value: str) -> None:
    STATE["initialized"] = value


def init_fails() -> None:
    raise ValueError("error in initializer")


def initialized() -> str:
    return STATE["initialized"]


def pressure() -> str:
    return worker_context().pressure.level


def sleep_and_print(seconds: float, text: str) -> None:
    time.sleep(seconds)
    print(text, flush=True)


NESTED: list[Any] = []  # executors started by tasks, kept running as joblib's backend keeps its


def start_nested_executor(report: str, die: bool) -> int:
    """Start an executor in this worker and leave it running; append where it lives (its
    private run directory, the groups below this worker's) to ``report``; die by SIGKILL
    if ``die``, as a worker the kernel kills."""
    from oomguard import Executor
    from oomguard.limits.cgroup import group_base
    from oomguard.memory.cgroups import detect_setup

    nested = Executor(max_workers=1)
    NESTED.append(nested)
    value = nested.submit(square, 7).result()
    prefix = f"oomguard-executor-{os.getpid()}-"
    own = detect_setup().memory_dir  # on v2, the leaf this worker moved into for the executor
    base = None if own is None else group_base(own)
    where = {
        "run_dirs": [str(p) for p in Path(tempfile.gettempdir()).glob(prefix + "*")],
        "groups": [] if base is None else [str(p) for p in base.rglob("*") if p.is_dir()],
    }
    with open(report, "a") as handle:
        handle.write(json.dumps(where) + "\n")
    if die:
        os.kill(os.getpid(), signal.SIGKILL)
    return value

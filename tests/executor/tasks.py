"""Functions the executor tests submit (importable in workers as ``tests.executor.tasks``)."""

from __future__ import annotations

import os
import signal
import threading
import time
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

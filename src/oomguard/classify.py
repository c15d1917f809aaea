"""What a failure was: the statuses, and the one table of "this means out of memory" texts.

The same table serves the engine (an exception raised in a worker) and the supervision of
model backends (an error body from a server), so one pattern added here is known to both;
it lives below both packages, which import it.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Status(StrEnum):
    """How a batch attempt (or an item) ended."""

    SUCCESS = "success"
    ERROR = "error"  # an exception in user code
    TIMEOUT = "timeout"  # over the per-batch timeout; the worker was killed
    OOM_KILLED = "oom_killed"  # killed by the kernel (cgroup OOM) or the watchdog
    MEMORY_ERROR = "memory_error"  # MemoryError or an out-of-memory message, raised in user code
    WORKER_CRASH = "worker_crash"  # any other death: segfault, os._exit, a signal
    BACKEND_FAILURE = "backend_failure"  # the model backend died; not the item's fault
    # stopped by the supervisor and requeued, no fault of its own: the smaller of two
    # runaways that crowd each other, or a side-lane batch stalled at its ceiling
    PREEMPTED = "preempted"


MEMORY_STATUSES = frozenset({Status.OOM_KILLED, Status.MEMORY_ERROR})

# Texts that mean "out of memory" whatever raised them. Extend with add_memory_pattern().
MEMORY_ERROR_PATTERNS: list[re.Pattern[str]] = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\bout of memory\b",
        r"\bCUDA out of memory\b",
        r"\bCUBLAS_STATUS_ALLOC_FAILED\b",
        r"\bCUDNN_STATUS_ALLOC_FAILED\b",
        r"\ballocation failed\b",
        r"\bfailed to allocate\b",
        r"\bcannot allocate memory\b",
        r"\bstd::bad_alloc\b",
        r"\bENOMEM\b",
        r"\bOOM\b",
    )
]


def add_memory_pattern(pattern: str) -> None:
    """Teach the classifier one more out-of-memory text (a regular expression)."""
    MEMORY_ERROR_PATTERNS.append(re.compile(pattern, re.IGNORECASE))


def mentions_out_of_memory(text: str) -> bool:
    return any(pattern.search(text) for pattern in MEMORY_ERROR_PATTERNS)


def classify_text(error: dict[str, str]) -> Status:
    """The status of an error as the worker reported it (``type`` and ``message``)."""
    text = f"{error.get('type', '')}: {error.get('message', '')}"
    if error.get("type") == "MemoryError" or mentions_out_of_memory(text):
        return Status.MEMORY_ERROR
    return Status.ERROR


def classify_exception(exc: BaseException) -> Status:
    """``memory_error`` for MemoryError or an out-of-memory message, else ``error``."""
    if isinstance(exc, MemoryError):
        return Status.MEMORY_ERROR
    if mentions_out_of_memory(f"{type(exc).__name__}: {exc}"):
        return Status.MEMORY_ERROR
    return Status.ERROR

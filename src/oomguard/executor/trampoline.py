"""The worker's side of :class:`oomguard.Executor`: the engine's function for every task.

Each item's value is a pickled call, made in the user's process at ``submit``:
``(fn, args, kwargs)`` for one call, ``(fn, [args, ...])`` for a chunk of ``map``'s calls.
:func:`call` unpickles and runs it; what the function raises comes back as
:class:`Raised` (the exception and its traceback's text), so the future re-raises the
function's own exception, as ProcessPoolExecutor does. A ``MemoryError`` is not caught: it
goes up the engine's recovery ladder (retried, then alone) like an OOM kill.

:func:`prepare_worker` runs once per worker before it takes work (engine/hooks.py's
``worker_setup``): it loads the user's ``__main__`` as multiprocessing's spawn does, so
functions defined in a script unpickle here, then runs the executor's initializer.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any

SPEC = "oomguard.executor.trampoline:call"  # the engine's function spec for every executor


class Raised:
    """A call that raised: the exception (picklable) and the traceback as text."""

    __slots__ = ("exception", "traceback")

    def __init__(self, exception: BaseException, traceback_text: str) -> None:
        self.exception = exception
        self.traceback = traceback_text

    def __reduce__(self) -> tuple[type[Raised], tuple[BaseException, str]]:
        return (Raised, (self.exception, self.traceback))


def raised(exc: BaseException) -> Raised:
    """``exc`` ready to travel back: an exception that cannot be pickled becomes a
    TaskFailed naming its type and message."""
    text = "".join(traceback.format_exception(exc))
    try:
        pickle.dumps(exc)
    except Exception as err:
        from oomguard.errors import TaskFailed

        exc = TaskFailed(
            f"{type(exc).__name__}: {exc} (the exception could not be pickled back: {err})"
        )
    return Raised(exc, text)


def call(payload: bytes) -> Any:
    """Run one pickled call, or a chunk of them (a list of results back)."""
    try:
        task = pickle.loads(payload)  # noqa: S301 - the user's own call, from its process
        if len(task) == 2:
            fn, chunk = task
            return [fn(*args) for args in chunk]
        fn, args, kwargs = task
        return fn(*args, **kwargs)
    except MemoryError:
        raise  # the ladder's: retried, retried alone, then the future's OomKilled
    except BaseException as exc:  # the task's own, re-raised by its future
        return raised(exc)


def prepare_worker(main: dict[str, str], initializer: bytes | None) -> None:
    """Load the user's ``__main__`` (``main``: its module name or script path), then run
    the pickled ``(initializer, initargs)``."""
    from multiprocessing import spawn

    if "name" in main:
        spawn._fixup_main_from_name(main["name"])  # type: ignore[attr-defined]
    elif "path" in main:
        spawn._fixup_main_from_path(main["path"])  # type: ignore[attr-defined]
    if initializer is not None:
        function, args = pickle.loads(initializer)  # noqa: S301 - the user's initializer
        function(*args)

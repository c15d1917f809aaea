"""What a node's worker runs for a plain Dask task: one call, shipped and returned pickled.

Imported in every worker process that runs calls: cloudpickle (a dependency of
``distributed``) carries functions defined in ``__main__`` or a notebook, as Dask does.
"""

from __future__ import annotations

from typing import Any

import cloudpickle

FUNCTION = "oomguard.dask.calls:call"


def call(payload: bytes) -> bytes:
    """``payload``: ``(fn, args, kwargs)``; returns ``(True, value)`` or ``(False, exc)``,
    so the caller's own exception reaches the future as it was raised."""
    fn, args, kwargs = cloudpickle.loads(payload)
    outcome: tuple[bool, Any]
    try:
        outcome = (True, fn(*args, **kwargs))
    except Exception as exc:
        outcome = (False, exc)
    return bytes(cloudpickle.dumps(outcome))

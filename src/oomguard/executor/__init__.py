"""A drop-in ``concurrent.futures`` executor over the engine (see :mod:`.core`)."""

from oomguard.executor.core import Executor

__all__ = ["Executor"]

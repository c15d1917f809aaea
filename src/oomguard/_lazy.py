"""Lazy re-exports for package ``__init__`` modules.

Workers import :mod:`oomguard.engine.worker` on every start; if each package ``__init__``
imported its whole subtree eagerly, every replacement worker would pay for psutil, the
supervisor and friends. Names are imported on first use instead; type checkers see the
real imports under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a submodule) on first use."""

    def __getattr__(name: str) -> Any:
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name), name)
        importlib.import_module(package).__dict__[name] = value
        return value

    return __getattr__

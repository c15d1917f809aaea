"""The function a job runs, as a worker finds it: ``module:qualname`` (or ``file:PATH:name``
for a script's own function)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oomguard.errors import ConfigError


def function_spec(function: str | Callable[..., Any], import_path: str | None = None) -> str:
    """``module:qualname`` for a worker to import; refuses what a worker could not import
    (from ``import_path``, which workers put first on their ``sys.path``)."""
    if isinstance(function, str):
        module, sep, name = function.partition(":")
        if not sep or not module or not name:
            raise ConfigError(f"invalid function {function!r}: expected 'package.module:function'")
        import importlib.util

        added = import_path is not None and import_path not in sys.path
        if added:
            sys.path.insert(0, str(import_path))
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError) as err:
            raise ConfigError(f"function {function!r}: cannot import {module!r}: {err}") from err
        finally:
            if added:
                sys.path.remove(str(import_path))
        if found is None:
            raise ConfigError(f"function {function!r}: no module named {module!r}")
        return function
    if not callable(function):
        raise ConfigError(
            f"invalid function {function!r}: expected a callable or 'module:function'"
        )
    module_name = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", "")
    if not module_name or "<" in qualname:
        raise ConfigError(
            f"function {qualname or function!r} cannot be imported by a worker (a lambda or a "
            "function defined inside another): define it at the top level of a module"
        )
    if module_name == "__main__":
        main_file = getattr(sys.modules["__main__"], "__file__", None)
        if not main_file:
            raise ConfigError(
                f"function {qualname!r} lives in an interactive session; put it in a module"
            )
        return f"file:{Path(main_file).resolve()}:{qualname}"
    return f"{module_name}:{qualname}"

"""joblib's own tests of Parallel (``joblib/test/test_parallel.py``, shipped inside the
joblib package), run with the "oomguard" backend registered beside joblib's.

The module is joblib's own source with one change: "oomguard" joins its process backends
(``PROCESS_BACKENDS``), so every test parametrized over backends runs with it too; it is
loaded under its own name, ``joblib.test.test_parallel``, so workers unpickle its functions
from the real module. Only the parametrizations with the oomguard backend are collected
here (conftest.py). The few that do not pass are in :data:`EXPECTED_FAILURES` with the
reason each; ``strict``: one that starts passing fails until it is taken off the list.
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

joblib_tests = pytest.importorskip("joblib.test")
import joblib  # noqa: E402

import oomguard.joblib  # noqa: E402 - registers the backend

BACKENDS_LINE = 'PROCESS_BACKENDS = ["multiprocessing", "loky"]'

# joblib tests (the start of their ids) -> why they do not pass with oomguard
_FRESH = (
    "runs a fresh Python (a subprocess, a loky worker) that never imported oomguard.joblib: "
    "joblib's registry of backends is per process"
)
_MEMMAP = "asserts that arrays reach workers memory-mapped: oomguard sends them by pickle"
EXPECTED_FAILURES: dict[str, str] = {
    "test_nested_loop[loky-oomguard]": _FRESH,
    "test_nested_loop[back_compat_backend-oomguard]": _FRESH,
    "test_nested_backend_in_sequential[parallel_config-oomguard-None]": _FRESH,
    "test_nested_backend_in_sequential[parallel_backend-oomguard-None]": _FRESH,
    "test_backend_nesting_level[parallel_config-oomguard-loky]": _FRESH,
    "test_backend_nesting_level[parallel_backend-oomguard-loky]": _FRESH,
    "test_parallel_with_interactively_defined_functions[": _FRESH,
    "test_parallel_with_unpicklable_functions_in_args[": _FRESH,
    "test_auto_memmap_on_arrays_from_generator[": _MEMMAP,
    "test_memmapping_leaks[": _MEMMAP,
}


def load_joblib_suite() -> types.ModuleType:
    source = Path(joblib_tests.__file__).parent / "test_parallel.py"
    text = source.read_text()
    if BACKENDS_LINE not in text:
        pytest.fail(f"joblib {joblib.__version__}: {source} no longer has {BACKENDS_LINE!r}")
    module = types.ModuleType("joblib.test.test_parallel")
    module.__file__ = str(source)
    module.__package__ = "joblib.test"
    sys.modules[module.__name__] = module
    patched = text.replace(BACKENDS_LINE, BACKENDS_LINE.replace('"loky"]', '"loky", "oomguard"]'))
    exec(compile(patched, str(source), "exec"), module.__dict__)
    return module


_suite = load_joblib_suite()
for _name, _value in vars(_suite).items():
    if not _name.startswith("__"):
        globals().setdefault(_name, _value)


@pytest.fixture(autouse=True, scope="module")
def multiprocessing_cleaned_up() -> Iterator[None]:
    """What joblib's tests leave for the interpreter's exit (a Manager per initializer test,
    multiprocessing's fork server, their temporary directories), gone with the module."""
    yield
    oomguard.joblib.shutdown()
    gc.collect()  # a Manager no test holds any more shuts its process down
    for child in multiprocessing.active_children():  # those a test still holds
        child.terminate()
        child.join(timeout=10)
    multiprocessing.util._cleanup_tests()  # type: ignore[attr-defined]
    # joblib's own memmapping starts loky's resource tracker, a process kept for the
    # interpreter's life: stopped here, with the tests that started it
    from joblib.externals.loky.backend import resource_tracker

    resource_tracker._resource_tracker._stop()

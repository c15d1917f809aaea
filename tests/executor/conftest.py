"""Collection for joblib's own tests (test_joblib_suite.py): only the parametrizations that
run the "oomguard" backend, the known failures marked with their reasons."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="module")
def joblib_executor_shut_down() -> Iterator[None]:
    """The executor the joblib backend keeps between Parallel calls goes with each module."""
    yield
    import sys

    backend = sys.modules.get("oomguard.joblib")
    if backend is not None:
        backend.shutdown()


def _runs_oomguard(item: pytest.Item) -> bool:
    from oomguard.joblib import OomguardBackend

    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return False
    values = callspec.params.values()
    return any(v == "oomguard" or isinstance(v, OomguardBackend) for v in values)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        if not item.nodeid.startswith("tests/executor/test_joblib_suite.py"):
            kept.append(item)
            continue
        if not _runs_oomguard(item):
            dropped.append(item)
            continue
        from tests.executor.test_joblib_suite import EXPECTED_FAILURES

        reason = next((r for k, r in EXPECTED_FAILURES.items() if item.name.startswith(k)), None)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_configure(config: pytest.Config) -> None:
    for mark in ("thread_unsafe", "no_cover"):  # joblib's own marks, on its tests
        config.addinivalue_line("markers", f"{mark}: joblib's own mark (test_joblib_suite.py)")

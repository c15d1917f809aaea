"""The public API is what ``__all__`` lists, and every name there resolves."""

import importlib

import pytest

import oomguard


@pytest.mark.parametrize(
    "package", ["oomguard", "oomguard.engine", "oomguard.limits", "oomguard.memory"]
)
def test_every_export_resolves(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        oomguard.no_such_thing  # noqa: B018


def test_job_is_top_level() -> None:
    from oomguard import Job, RunResult

    assert Job.__module__ == "oomguard.engine.job"
    assert RunResult.__name__ == "RunResult"

"""The public face of the engine: :class:`Job` and its :class:`RunResult`.

from oomguard import Job
result = Job("mypkg.ingest:process", source="items.jsonl", sink="out.jsonl",
             memory="6g", workers=8).run()
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oomguard.engine.artifacts import make_run_dir
from oomguard.engine.config import DEFAULT_MEMORY_FRACTION, JobConfig
from oomguard.engine.progress import make_progress
from oomguard.engine.sinks import open_sink
from oomguard.engine.sources import open_source
from oomguard.engine.supervisor import Supervisor
from oomguard.errors import ConfigError
from oomguard.limits.cgroup import sweep_stale_groups
from oomguard.limits.select_limiter import open_limiter
from oomguard.memory.budget import effective_budget
from oomguard.sizes import format_size, parse_size

EXIT_OK = 0
EXIT_QUARANTINED = 3
QUARANTINE_IN_RESULT = 1000  # the rest stay in quarantine.jsonl


@dataclass
class RunResult:
    """What a finished run did. Everything here is also in ``run_dir/summary.json``."""

    run_dir: Path
    counts: dict[str, int]
    quarantined: list[dict[str, Any]]
    peak_rss_mb: float | None
    peak_cgroup_mb: float
    duration_sec: float
    summary: dict[str, Any] = field(repr=False)

    @property
    def succeeded(self) -> int:
        return self.counts.get("success", 0)

    @property
    def exit_code(self) -> int:
        """0: every item done; 3: finished with quarantined items."""
        return EXIT_QUARANTINED if self.quarantined else EXIT_OK


def function_spec(function: str | Callable[..., Any]) -> str:
    """``module:qualname`` for a worker to import; refuses what a worker could not import."""
    if isinstance(function, str):
        module, sep, name = function.partition(":")
        if not sep or not module or not name:
            raise ConfigError(f"invalid function {function!r}: expected 'package.module:function'")
        import importlib.util

        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError) as err:
            raise ConfigError(f"function {function!r}: cannot import {module!r}: {err}") from err
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
        import sys

        main_file = getattr(sys.modules["__main__"], "__file__", None)
        if not main_file:
            raise ConfigError(
                f"function {qualname!r} lives in an interactive session; put it in a module"
            )
        return f"file:{Path(main_file).resolve()}:{qualname}"
    return f"{module_name}:{qualname}"


class Job:
    """A batch job: a function over a source, results to a sink, under a memory cap."""

    def __init__(
        self,
        function: str | Callable[..., Any],
        source: Any,
        sink: Any = None,
        *,
        run_dir: str | Path | None = None,
        memory: str | int | None = None,
        **options: Any,
    ) -> None:
        self.function_spec = function_spec(function)
        self.source_spec = source
        self.sink_spec = sink
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
        self.memory_spec = memory
        try:
            self.config = JobConfig(function=self.function_spec, **options)
        except TypeError as err:
            raise ConfigError(f"invalid job option: {err}") from err
        self.config.validate()

    def resolve_memory(self) -> int:
        budget = effective_budget().bytes
        if self.memory_spec is None:
            return int(budget * DEFAULT_MEMORY_FRACTION)
        memory = parse_size(self.memory_spec, budget=budget, what="memory")
        if memory > budget:
            raise ConfigError(
                f"invalid memory {format_size(memory)}: more than the effective budget of "
                f"{format_size(budget)} (see 'oomguard doctor')"
            )
        return memory

    def run(self) -> RunResult:
        """Run to the end. Configuration errors raise :class:`ConfigError` before any work."""
        memory = self.resolve_memory()
        source = open_source(self.source_spec)
        make_run_dir(self.run_dir)
        sink_spec = self.sink_spec if self.sink_spec is not None else self.run_dir / "results.jsonl"
        sink = open_sink(sink_spec, self.config.parquet_buffer_bytes)
        limiter = open_limiter(self.config.limiter)  # type: ignore[arg-type]
        if hasattr(limiter, "base"):
            sweep_stale_groups(limiter.base)
        progress = make_progress(self.config.log_format)
        try:
            supervisor = Supervisor(
                self.config,
                source,
                sink,
                limiter,
                self.run_dir,
                progress,
                self.function_spec,
                memory,
            )
            summary = supervisor.run()
        finally:
            limiter.close()
        return load_result(self.run_dir, summary)


def default_run_dir() -> Path:
    return Path("oomguard-runs") / time.strftime("%Y%m%d-%H%M%S")


def load_result(run_dir: Path, summary: dict[str, Any]) -> RunResult:
    quarantined: list[dict[str, Any]] = []
    path = run_dir / "quarantine.jsonl"
    if path.exists():
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if len(quarantined) >= QUARANTINE_IN_RESULT:
                    break
                quarantined.append(json.loads(line))
    return RunResult(
        run_dir=run_dir,
        counts=summary["counts"],
        quarantined=quarantined,
        peak_rss_mb=summary["peak_rss_mb"],
        peak_cgroup_mb=summary["peak_cgroup_mb"],
        duration_sec=summary["duration_sec"],
        summary=summary,
    )

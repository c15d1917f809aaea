"""Every policy number of a job, in one place, with its default and why.

:class:`JobConfig` is what the Python API (:class:`oomguard.Job`), the CLI flags and the
``--config oomguard.toml`` file all fill in; the same keys in each.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from oomguard.errors import ConfigError
from oomguard.limits.select_limiter import MODES
from oomguard.sizes import parse_size

DEFAULT_MEMORY_FRACTION = 0.90  # the job's cap, of the effective budget: the machine keeps 10%
LOG_FORMATS = ("auto", "rich", "plain", "json", "quiet")
START_METHODS = ("forkserver", "spawn")


@dataclass
class JobConfig:
    function: str
    batched: bool = False
    memory: int | None = None  # bytes for the whole job; None: 90% of the effective budget
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    batch_size: int = (
        10  # items per batch (the PDF ingestion's flush size); with adaptive_batch, the first size
    )
    adaptive_batch: bool = False  # let batch size follow memory and time (engine/batch_size.py)
    min_batch_size: int = 1  # adaptive bounds
    max_batch_size: int = 1000
    batch_seconds: float = 0.5  # adaptive: the batch duration aimed at
    max_bytes: int = 5_000_000  # bytes per batch, by item size (the PDF ingestion's)
    max_wait_ms: int = 5000  # a partial batch waits at most this long for more items
    timeout: float | None = None  # seconds per batch attempt; None: no limit
    crash_retries: int = 2  # timeout / worker_crash retries before bisecting
    error_retries: int = 0  # exceptions in user code are not retried by default
    alone_fraction: float = 0.90  # a worker dying at >= this share of the budget died "alone"
    worker_memory: int | None = None  # optional cap per worker, inside the job's cap
    rlimit_as: int | None = (
        None  # optional RLIMIT_AS per worker: allocations past it raise MemoryError
    )
    sample_interval: float = 0.2  # memory_log.csv sampling period, seconds
    ordered: bool = False  # write results in input order
    limiter: str = "auto"  # auto | cgroup | watchdog
    log_format: str = "auto"  # auto | rich | plain | json | quiet
    parquet_buffer_bytes: int = 8 * 1024 * 1024  # the Parquet sink's buffer bound
    commit_interval: float = 0.25  # seconds between journal checkpoints (grouped commits)
    metrics_port: int | None = None  # serve Prometheus metrics on this port (off by default)
    metrics_addr: str = "127.0.0.1"  # and this address: loopback unless told otherwise
    backend: Any = None  # a BackendConfig (or its dict) for a model server the workers call
    # admission (engine/admission.py holds the policy; these are its knobs)
    admission: bool = True  # dispatch by predicted memory; False: every idle worker gets work
    target: float = 0.80  # predicted in-flight memory stays under this share of the job's cap
    high_water: float = 0.85  # real usage at this share pauses intake until back under target
    psi_threshold: float = 40.0  # or PSI memory "some avg10" (%) at this level pauses intake
    max_in_flight: int | None = None  # an upper cap on batches in flight [default: workers]
    side_lane: bool = False  # beside a runaway batch, idle cores run batches held at a ceiling
    # worker hygiene
    max_batches_per_worker: int | None = None  # recycle a worker after this many batches
    recycle_rss_growth: int = (
        256 * 1024 * 1024
    )  # or when its RSS grew this much over its first batch
    malloc_arena_max: int | None = (
        2  # MALLOC_ARENA_MAX for workers: fewer arenas, less fragmentation
    )
    malloc_trim_threshold: int | None = 128 * 1024  # MALLOC_TRIM_THRESHOLD_ for workers
    trim: bool = True  # malloc_trim(0) after each batch (glibc; skipped under jemalloc)
    # group semantics (model handlers in Kubernetes): an OOM kill of one worker restarts them all
    group: bool = False
    # how workers start: forked by a clean fork server (fast) or as fresh interpreters
    start_method: str = "forkserver"

    def validate(self) -> None:
        def positive(name: str, value: float | None, allow_none: bool = False) -> None:
            if value is None and allow_none:
                return
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"invalid {name} {value!r}: expected a number above 0")

        if not isinstance(self.function, str) or ":" not in self.function:
            raise ConfigError(
                f"invalid function {self.function!r}: expected 'package.module:function'"
            )
        for name in (
            "workers",
            "batch_size",
            "min_batch_size",
            "max_batch_size",
            "batch_seconds",
            "max_bytes",
            "max_wait_ms",
            "sample_interval",
        ):
            positive(name, getattr(self, name))
        if self.adaptive_batch and not self.min_batch_size <= self.max_batch_size:
            raise ConfigError(
                f"invalid min_batch_size {self.min_batch_size!r} / max_batch_size "
                f"{self.max_batch_size!r}: expected min_batch_size <= max_batch_size"
            )
        positive("timeout", self.timeout, allow_none=True)
        positive("memory", self.memory, allow_none=True)
        positive("worker_memory", self.worker_memory, allow_none=True)
        positive("rlimit_as", self.rlimit_as, allow_none=True)
        for name in ("crash_retries", "error_retries"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"invalid {name} {value!r}: expected a whole number >= 0")
        if not 0.0 < self.target <= self.high_water <= 1.0:
            raise ConfigError(
                f"invalid target {self.target!r} / high_water {self.high_water!r}: expected 0 < target <= high_water <= 1"
            )
        positive("max_in_flight", self.max_in_flight, allow_none=True)
        positive("max_batches_per_worker", self.max_batches_per_worker, allow_none=True)
        if not 0.0 < self.alone_fraction <= 1.0:
            raise ConfigError(f"invalid alone_fraction {self.alone_fraction!r}: expected (0, 1]")
        if self.start_method not in START_METHODS:
            raise ConfigError(
                f"invalid start_method {self.start_method!r}: expected one of "
                + ", ".join(START_METHODS)
            )
        if self.limiter not in MODES:
            raise ConfigError(
                f"invalid limiter {self.limiter!r}: expected one of {', '.join(MODES)}"
            )
        if isinstance(self.backend, dict):
            from oomguard.backends.config import BackendConfig

            self.backend = BackendConfig.from_dict(self.backend)
        elif self.backend is not None:
            self.backend.validate()
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(
                f"invalid log_format {self.log_format!r}: expected one of {', '.join(LOG_FORMATS)}"
            )


SIZE_KEYS = (
    "memory",
    "max_bytes",
    "worker_memory",
    "parquet_buffer_bytes",
    "rlimit_as",
    "recycle_rss_growth",
    "malloc_trim_threshold",
)
CONFIG_KEYS = {f.name for f in fields(JobConfig)} | {"source", "sink", "input", "output", "run_dir"}


def normalise(values: dict[str, Any], budget: Any = None) -> dict[str, Any]:
    """Sizes as text become bytes; ``input``/``output`` are the CLI's names for source/sink."""
    out = dict(values)
    for key in SIZE_KEYS:
        if isinstance(out.get(key), str):
            out[key] = parse_size(out[key], budget=budget, what=key)
    return out


def load_toml(path: Path) -> dict[str, Any]:
    """Read ``oomguard.toml`` (top level or a ``[job]`` table) with the same keys as the API."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"config file {str(path)!r} does not exist") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from err
    table = data.get("job", data)
    unknown = sorted(set(table) - CONFIG_KEYS - {"job"})
    if unknown:
        raise ConfigError(
            f"config file {str(path)!r}: unknown key {unknown[0]!r}; expected one of "
            + ", ".join(sorted(CONFIG_KEYS))
        )
    return {k: v for k, v in table.items() if k != "job"}

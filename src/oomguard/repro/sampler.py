"""memory_log.csv of a reproduced command: its process tree and its cgroup, every interval."""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path
from typing import Any

from oomguard.engine.artifacts import open_private
from oomguard.limits.base import MemoryGroup
from oomguard.memory.gpu import read_gpus
from oomguard.memory.process import read_tree_memory
from oomguard.memory.system import read_pressure, read_system_memory
from oomguard.sizes import mib


class Sampler:
    """memory_log.csv for one process tree and its cgroup, every ``interval`` seconds."""

    COLUMNS = (
        "time",
        "elapsed_sec",
        "rss_mb",
        "vms_mb",
        "cgroup_mb",
        "mem_available_mb",
        "psi_some_avg10",
        "psi_full_avg10",
        "gpu_used_mb",
        "working_set_mb",  # not in the seed toolkit's columns: after them
        "event",
    )

    def __init__(self, path: Path, pid: int, group: MemoryGroup, interval: float) -> None:
        self.pid = pid
        self.group = group
        self.interval = interval
        self.samples = 0
        self.peak_rss = 0
        self.peak_cgroup = 0
        self.peak_working_set = 0
        self.start = time.time()
        self._file = open_private(path)
        self._writer = csv.writer(self._file)
        self._writer.writerow(self.COLUMNS)
        self._gpu = read_gpus().available
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name="oomguard-repro-sampler", daemon=True
        )

    def start_sampling(self) -> None:
        self.sample()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:
                continue

    def sample(self, event: str = "") -> None:
        now = time.time()
        tree = read_tree_memory(self.pid)
        try:
            reading = self.group.read()
            cgroup, working = reading.usage, reading.working_set
        except OSError:
            cgroup = working = 0
        pressure = read_pressure()
        gpu = read_gpus().used if self._gpu else None
        self.peak_rss = max(self.peak_rss, tree.rss)
        self.peak_cgroup = max(self.peak_cgroup, cgroup)
        self.peak_working_set = max(self.peak_working_set, working)
        self.samples += 1
        with self._lock:
            self._write_row(now, tree, (cgroup, working), pressure, gpu, event)

    def _write_row(
        self,
        now: float,
        tree: Any,
        cgroup: tuple[int, int],
        pressure: Any,
        gpu: int | None,
        event: str,
    ) -> None:
        self._writer.writerow(
            [
                f"{now:.3f}",
                f"{now - self.start:.3f}",
                mib(tree.rss),
                mib(tree.vms),
                mib(cgroup[0]),
                mib(read_system_memory().available),
                pressure.some.avg10 if pressure else "",
                pressure.full.avg10 if pressure and pressure.full else "",
                mib(gpu) if gpu is not None else "",
                mib(cgroup[1]),
                event,
            ]
        )
        self._file.flush()

    def mark(self, event: str) -> None:
        """A row of its own for an event (an OOM kill), sampled the moment it is seen."""
        try:
            self.sample(event)
        except Exception:
            pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._file.close()

"""The monitor: a thread that samples memory every ``interval`` into memory_log.csv.

It reads; it never decides. The supervisor asks it for peaks and for each worker's recent
growth (used to tell a bystander from the batch that was growing when the kernel struck).
The job is logged twice: what its cgroup is charged (page cache included) and its working
set (less the inactive file cache: what decisions use); a worker's growth is of its working
set, so a worker filling the cache with a file it reads is not taken for a runaway.

PSI is the job cgroup's own (``memory.pressure``, cgroup v2) where there is one, the
machine's otherwise.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from oomguard.engine.artifacts import MemoryLog
from oomguard.limits.base import MemoryGroup
from oomguard.memory.gpu import read_gpus
from oomguard.memory.system import read_pressure, read_system_memory
from oomguard.sizes import mib

HISTORY = 16  # samples of growth history kept per worker slot


@dataclass(frozen=True)
class WorkerView:
    slot: int
    pid: int
    group: MemoryGroup


class Monitor:
    def __init__(
        self,
        log: MemoryLog,
        workers: Callable[[], list[WorkerView]],
        in_flight: Callable[[], int],
        interval: float,
        slots: int,
    ) -> None:
        self.log = log
        self.job: MemoryGroup | None = None  # the job's group, from start()
        self.workers = workers
        self.in_flight = in_flight
        self.interval = interval
        self.slots = slots
        self.samples = 0
        self.peak_rss = 0
        self.peak_cgroup = 0  # charged, page cache included
        self.peak_working_set = 0
        self.peak_gpu = 0
        self.last_cgroup = 0
        self.last_working_set = 0
        self.last_psi: float | None = None
        self.started = time.time()
        self._history: dict[int, collections.deque[tuple[float, int, int]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervisor = psutil.Process(os.getpid())
        self._procs: dict[int, psutil.Process] = {}
        self._gpu = read_gpus().available
        self._thread = threading.Thread(target=self._run, name="oomguard-monitor", daemon=True)

    def start(self, job: MemoryGroup) -> None:
        self.job = job
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (a last row at the very end, if it ever started) and close the log."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=10)
            self.sample()
        self.log.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # a failed read loses a row, never the run
                continue

    def sample(self) -> None:
        now = time.time()
        cgroup = working = 0
        try:
            if self.job is not None:
                cgroup, working = self.job.charge()
        except OSError:
            pass
        supervisor = self._supervisor.memory_info()
        workers_rss, workers_vms, per_slot = self._sample_workers(now)
        rss, vms = supervisor.rss + workers_rss, supervisor.vms + workers_vms
        system = read_system_memory()
        # the job's own PSI where the kernel keeps one per cgroup (v2): its tasks' stalls,
        # whatever their cause (its own cap included); else the machine's
        pressure = (self.job.pressure() if self.job is not None else None) or read_pressure()
        gpu_used = read_gpus().used if self._gpu else None
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_cgroup = max(self.peak_cgroup, cgroup)
        self.peak_working_set = max(self.peak_working_set, working)
        self.last_cgroup = cgroup
        self.last_working_set = working
        self.last_psi = pressure.some.avg10 if pressure else None
        if gpu_used is not None:
            self.peak_gpu = max(self.peak_gpu, gpu_used)
        self.samples += 1
        self.log.write(
            [
                f"{now:.3f}",
                f"{now - self.started:.3f}",
                mib(cgroup),
                mib(working),
                mib(rss),
                mib(vms),
                mib(supervisor.rss),
                *(mib(per_slot[s]) if s in per_slot else "" for s in range(self.slots)),
                self.in_flight(),
                mib(system.available),
                pressure.some.avg10 if pressure else "",
                pressure.full.avg10 if pressure and pressure.full else "",
                mib(gpu_used) if gpu_used is not None else "",
            ]
        )

    def _sample_workers(self, now: float) -> tuple[int, int, dict[int, int]]:
        """The workers' RSS and VMS summed, each slot's RSS; each worker's working set
        goes into its growth history."""
        rss = vms = 0
        per_slot: dict[int, int] = {}
        live: dict[int, psutil.Process] = {}
        for view in self.workers():
            try:
                proc = self._procs.get(view.pid) or psutil.Process(view.pid)
                info = proc.memory_info()
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            live[view.pid] = proc
            per_slot[view.slot] = info.rss
            rss += info.rss
            vms += info.vms
            try:
                usage = view.group.working_set()
            except OSError:
                usage = info.rss
            with self._lock:
                history = self._history.setdefault(view.slot, collections.deque(maxlen=HISTORY))
                history.append((now, view.pid, usage))
        self._procs = live  # psutil.Process objects kept: creating one reads /proc/PID/stat
        return rss, vms, per_slot

    def recent_growth(self, slot: int, pid: int, window: float = 1.0) -> int | None:
        """Bytes the worker ``pid`` in ``slot`` grew over the last ``window`` seconds of samples."""
        with self._lock:
            samples = [s for s in self._history.get(slot, ()) if s[1] == pid]
        if len(samples) < 2:
            return None
        latest_time, _, latest = samples[-1]
        earlier = [usage for t, _, usage in samples if latest_time - t <= window]
        return latest - min(earlier) if earlier else None

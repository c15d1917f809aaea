"""The pressure level user code sees (``worker_context().pressure``): one word and a reason.

System RAM (MemAvailable against MemTotal), GPU memory (NVML, per device) and the backend's
recent out-of-memory restarts. Not the admission's intake pause (engine/admission.py),
which reads the job's own cgroup and PSI. The thresholds live in
:class:`PressureThresholds`.
"""

from __future__ import annotations

from dataclasses import dataclass

from oomguard.engine.context import Pressure
from oomguard.memory.gpu import GpuReport
from oomguard.memory.system import SystemMemory
from oomguard.sizes import format_size


@dataclass(frozen=True)
class PressureThresholds:
    ram_elevated: float = 0.10  # MemAvailable below this share of MemTotal
    ram_critical: float = 0.05
    gpu_elevated: float = 0.875  # used share of a GPU: 14 GiB of a 16 GiB card
    gpu_critical: float = 0.95
    backend_oom_seconds: float = 60.0  # a backend OOM this recent makes the level elevated
    recheck_seconds: float = 1.0  # the level is read at most this often (every batch carries it)


def assess(
    system: SystemMemory,
    gpus: GpuReport,
    backend_oom_recently: bool = False,
    thresholds: PressureThresholds = PressureThresholds(),
) -> Pressure:
    reasons: list[tuple[int, str]] = []
    share = system.available / system.total if system.total else 1.0
    if share < thresholds.ram_critical:
        reasons.append((2, f"system RAM: {format_size(system.available)} available"))
    elif share < thresholds.ram_elevated:
        reasons.append((1, f"system RAM: {format_size(system.available)} available"))
    for device in gpus.devices:
        used = device.used / device.total if device.total else 0.0
        text = f"GPU {device.index}: {format_size(device.used)} of {format_size(device.total)}"
        if used >= thresholds.gpu_critical:
            reasons.append((2, text))
        elif used >= thresholds.gpu_elevated:
            reasons.append((1, text))
    if backend_oom_recently:
        reasons.append((1, "the backend was restarted after running out of memory"))
    if not reasons:
        return Pressure()
    worst = max(level for level, _ in reasons)
    return Pressure(
        "critical" if worst == 2 else "elevated", "; ".join(text for _, text in reasons)
    )

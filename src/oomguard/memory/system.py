"""Memory of the whole machine: /proc/meminfo and pressure stall information (PSI)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MEMINFO = Path("/proc/meminfo")
PSI_MEMORY = Path("/proc/pressure/memory")


@dataclass(frozen=True)
class SystemMemory:
    """Machine memory in bytes, as the kernel reports it in /proc/meminfo."""

    total: int
    available: int
    swap_total: int
    swap_free: int


@dataclass(frozen=True)
class PressureLine:
    """One line of a PSI file: the share of time (percent) tasks stalled on memory."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int


@dataclass(frozen=True)
class MemoryPressure:
    """``some``: at least one task stalled; ``full``: all non-idle tasks stalled."""

    some: PressureLine
    full: PressureLine | None


def parse_meminfo(text: str) -> SystemMemory:
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        scale = 1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1
        values[key.strip()] = int(parts[0]) * scale
    total = values["MemTotal"]
    return SystemMemory(
        total=total,
        # MemAvailable exists since Linux 3.14; MemFree is the pessimistic stand-in
        available=values.get("MemAvailable", values.get("MemFree", 0)),
        swap_total=values.get("SwapTotal", 0),
        swap_free=values.get("SwapFree", 0),
    )


def read_system_memory(path: Path = MEMINFO) -> SystemMemory:
    return parse_meminfo(path.read_text())


def parse_pressure(text: str) -> MemoryPressure:
    lines: dict[str, PressureLine] = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        values = dict(field.split("=", 1) for field in fields)
        lines[kind] = PressureLine(
            avg10=float(values["avg10"]),
            avg60=float(values["avg60"]),
            avg300=float(values["avg300"]),
            total_us=int(values["total"]),
        )
    return MemoryPressure(some=lines["some"], full=lines.get("full"))


def read_pressure(path: Path = PSI_MEMORY) -> MemoryPressure | None:
    """Memory PSI, or ``None`` where the kernel has no PSI (before 4.20, or psi=0)."""
    try:
        return parse_pressure(path.read_text())
    except (OSError, KeyError, ValueError):
        return None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's model name, for bug reports."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()

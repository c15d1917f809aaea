"""``oomguard doctor``: what this machine supports, and what oomguard will do about it."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass
from typing import Any

from oomguard import __version__
from oomguard.engine.config import DEFAULT_MEMORY_FRACTION
from oomguard.engine.default_cap import default_job_cap, supervisor_reserve
from oomguard.limits.peak import describe as describe_peak_method
from oomguard.limits.process import can_lower_oom_score_adj, read_oom_score_adj
from oomguard.limits.select_limiter import probe_cgroup_access
from oomguard.memory.allocator import AllocatorInfo, read_allocator
from oomguard.memory.budget import EffectiveBudget, effective_budget
from oomguard.memory.cgroups import CgroupSetup, detect_setup
from oomguard.memory.gpu import GpuReport, read_gpus
from oomguard.memory.kernel_log import read_kernel_log
from oomguard.memory.system import MemoryPressure, SystemMemory, read_pressure, read_system_memory
from oomguard.sizes import format_size


@dataclass(frozen=True)
class CgroupFacts:
    layout: str
    memory_version: str | None
    memory_dir: str | None
    writable: bool
    reason: str
    delegated: bool  # a v2 subtree delegated to this user, its processes moved into a leaf
    peak_method: str | None  # limits/peak.py: how each batch's peak is measured
    peak_method_detail: str | None


@dataclass(frozen=True)
class DoctorReport:
    oomguard: str
    python: str
    kernel: str
    running_as_root: bool
    cgroup: CgroupFacts
    budget: EffectiveBudget
    system: SystemMemory
    pressure: MemoryPressure | None
    kernel_log_readable: bool
    gpus: GpuReport
    allocator: AllocatorInfo
    oom_score_adj: int | None
    can_protect_supervisor: bool
    enforcement: str
    plan: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan_lines(
    access: Any,
    budget: int,
    job_cap: int,
    kernel_log_readable: bool,
    pressure: MemoryPressure | None,
    gpus: Any,
    allocator: Any,
) -> list[str]:
    """What oomguard will do on this machine, in sentences."""
    plan = []
    if access.writable:
        plan.append(
            f"Workers run in cgroup {access.version} groups under {access.base}; the job is capped "
            f"at {format_size(job_cap)} by default ({DEFAULT_MEMORY_FRACTION:.0%} of the {format_size(budget)} budget, "
            "less room for the supervisor and the fork server, which run outside it) and the "
            "kernel's OOM kills are seen the moment they happen."
        )
        if access.delegated:
            plan.append(
                f"{access.base} is a cgroup v2 subtree delegated to you: the kernel enforces "
                "the caps without root (not the watchdog); the processes in it move into a leaf "
                "of their own first, as cgroup v2 requires."
            )
        if access.peak_method is not None:
            plan.append(f"Batch peaks: {describe_peak_method(access.peak_method)}.")
    else:
        plan.append(
            f"cgroups cannot be used ({access.reason}): an RSS watchdog samples every worker every "
            f"100 ms and kills one over its limit. Memory may overshoot for up to one interval; "
            f"run as root or with a delegated cgroup for kernel-enforced caps."
        )
    plan.append(
        "Kernel log lines are attached to OOM evidence."
        if kernel_log_readable
        else "The kernel log is unreadable (needs root or kernel.dmesg_restrict=0): OOM evidence "
        "comes from cgroup counters only."
    )
    if pressure is None:
        plan.append("No PSI (/proc/pressure/memory): admission relies on memory usage alone.")
    if gpus.devices:
        plan.append(f"GPU memory of {len(gpus.devices)} device(s) is sampled through NVML.")
    if not can_lower_oom_score_adj():
        plan.append(
            "The supervisor cannot lower its oom_score_adj (no CAP_SYS_RESOURCE); workers are "
            "raised to 1000 instead, so the kernel still picks a worker first."
        )
    if allocator.jemalloc:
        plan.append("jemalloc is loaded: malloc_trim after batches is skipped.")
    return plan


def examine(setup: CgroupSetup | None = None) -> DoctorReport:
    """Gather every fact doctor shows. Pure reading; nothing is changed on the machine."""
    setup = setup if setup is not None else detect_setup()
    access = probe_cgroup_access(setup)
    budget = effective_budget(setup)
    system = read_system_memory()
    pressure = read_pressure()
    kernel_log_readable = read_kernel_log() is not None
    gpus = read_gpus()
    allocator = read_allocator()
    root = os.geteuid() == 0
    enforcement = f"cgroup-{access.version}" if access.writable else "watchdog"
    job_cap = default_job_cap(budget.bytes, supervisor_reserve(parquet=False))

    plan = plan_lines(access, budget.bytes, job_cap, kernel_log_readable, pressure, gpus, allocator)
    return DoctorReport(
        oomguard=__version__,
        python=platform.python_version(),
        kernel=platform.release(),
        running_as_root=root,
        cgroup=CgroupFacts(
            setup.layout,
            setup.memory_version,
            str(setup.memory_dir) if setup.memory_dir else None,
            access.writable,
            access.reason,
            access.delegated,
            access.peak_method,
            describe_peak_method(access.peak_method) if access.peak_method else None,
        ),
        budget=budget,
        system=system,
        pressure=pressure,
        kernel_log_readable=kernel_log_readable,
        gpus=gpus,
        allocator=allocator,
        oom_score_adj=read_oom_score_adj(),
        can_protect_supervisor=can_lower_oom_score_adj(),
        enforcement=enforcement,
        plan=plan,
    )


def render(report: DoctorReport) -> None:
    """One screen for a person."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    ok, no = "[green]yes[/]", "[red]no[/]"
    table = Table(title=f"oomguard {report.oomguard} doctor", show_header=False, expand=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("Python / kernel", f"{report.python} / {sys.platform} {report.kernel}")
    table.add_row("Root", ok if report.running_as_root else no)
    cg = report.cgroup
    table.add_row(
        "cgroups",
        f"layout {cg.layout}; memory controller on {cg.memory_version or 'none'}"
        + (f" at {cg.memory_dir}" if cg.memory_dir else ""),
    )
    table.add_row("cgroup writable", (ok if cg.writable else no) + f"  ({escape(cg.reason)})")
    if cg.peak_method_detail is not None:
        table.add_row("Batch peak", escape(f"{cg.peak_method}: {cg.peak_method_detail}"))
    _memory_rows(table, report, ok, no)
    table.add_row("Kernel log (dmesg)", ok if report.kernel_log_readable else no)
    gpus = report.gpus
    if gpus.devices:
        for device in gpus.devices:
            table.add_row(
                f"GPU {device.index}",
                f"{device.name}: {format_size(device.used)} used of {format_size(device.total)} "
                f"(driver {gpus.driver})",
            )
    else:
        table.add_row("GPUs (NVML)", f"{no}  ({escape(gpus.reason or '')})")
    alloc = report.allocator
    table.add_row(
        "Allocator",
        f"{'jemalloc' if alloc.jemalloc else 'glibc malloc' if alloc.glibc else 'unknown'}; "
        f"MALLOC_ARENA_MAX={alloc.malloc_arena_max or 'unset'}, "
        f"MALLOC_TRIM_THRESHOLD_={alloc.malloc_trim_threshold or 'unset'}",
    )
    table.add_row(
        "Supervisor protection",
        f"oom_score_adj {report.oom_score_adj}; can lower it (CAP_SYS_RESOURCE): "
        + (ok if report.can_protect_supervisor else no),
    )
    table.add_row("Enforcement", f"[bold]{report.enforcement}[/]")
    console.print(table)
    for line in report.plan:
        console.print(f"• {escape(line)}")


def _memory_rows(table: Any, report: DoctorReport, ok: str, no: str) -> None:
    """The budget, where it comes from, system memory and PSI."""
    budget = report.budget
    table.add_row(
        "Memory budget",
        f"{format_size(budget.bytes)} from {budget.source.kind} ({budget.source.detail})",
    )
    for source in budget.candidates:
        if source is not budget.source:
            table.add_row(
                "", f"[dim]also {source.kind}: {format_size(source.bytes)} ({source.detail})[/]"
            )
    sysmem = report.system
    table.add_row(
        "System memory",
        f"{format_size(sysmem.available)} available of {format_size(sysmem.total)}; "
        f"swap {format_size(sysmem.swap_total)}",
    )
    if report.pressure is not None:
        some = report.pressure.some
        table.add_row("PSI memory", f"{ok}  some avg10={some.avg10:.2f}% avg60={some.avg60:.2f}%")
    else:
        table.add_row("PSI memory", no)

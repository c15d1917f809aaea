"""Facts about this machine for a bug report's manifest."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from oomguard.memory.cgroups import detect_setup
from oomguard.memory.gpu import read_gpus
from oomguard.memory.system import cpu_model, read_system_memory


def os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def machine_facts() -> dict[str, Any]:
    from oomguard import __version__

    setup = detect_setup()
    gpus = read_gpus()
    return {
        "host_os": os_release(),
        "kernel": platform.release(),
        "cpu": cpu_model(),
        "cpu_count": __import__("os").cpu_count(),
        "ram_mb": round(read_system_memory().total / 2**20),
        "cgroup_layout": setup.layout,
        "cgroup_memory_version": setup.memory_version,
        "gpus": [{"name": d.name, "total_mb": round(d.total / 2**20)} for d in gpus.devices],
        "gpu_driver": gpus.driver,
        "python": platform.python_version(),
        "oomguard": __version__,
    }

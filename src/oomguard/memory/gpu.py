"""GPU memory per device through NVML (``pip install oomguard[gpu]``, module ``pynvml``).

No NVML library, no driver, or no GPU are normal states: :func:`read_gpus` then returns
an empty :class:`GpuReport` whose ``reason`` says which.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GpuMemory:
    index: int
    name: str
    uuid: str
    total: int
    used: int
    free: int


@dataclass(frozen=True)
class GpuReport:
    available: bool
    driver: str | None = None
    devices: tuple[GpuMemory, ...] = field(default_factory=tuple)
    reason: str | None = None

    @property
    def used(self) -> int:
        return sum(device.used for device in self.devices)


_lock = threading.Lock()
_initialised = False
# why NVML cannot be used here, once known: a missing package or driver does not appear
# mid-run, and retrying the import every sample costs a walk of sys.path each time
_unavailable: str | None = None


def _load_nvml() -> Any:
    """Import pynvml and initialise NVML once. Raises ImportError or pynvml.NVMLError."""
    global _initialised  # noqa: PLW0603 - NVML initialisation is process-wide by nature
    import pynvml

    with _lock:
        if not _initialised:
            pynvml.nvmlInit()
            _initialised = True
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_gpus() -> GpuReport:
    """Total/used/free memory of every NVIDIA GPU, or an empty report saying why not."""
    global _unavailable  # noqa: PLW0603 - remembered once per process, like NVML's own init
    if _unavailable is not None:
        return GpuReport(False, reason=_unavailable)
    try:
        nvml = _load_nvml()
    except ImportError:
        _unavailable = "nvidia-ml-py is not installed (pip install 'oomguard[gpu]')"
        return GpuReport(False, reason=_unavailable)
    except Exception as err:  # pynvml.NVMLError and its many subclasses: no driver/library
        _unavailable = f"NVML unavailable: {err}"
        return GpuReport(False, reason=_unavailable)
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(
                GpuMemory(
                    index=index,
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    total=int(info.total),
                    used=int(info.used),
                    free=int(info.free),
                )
            )
    except Exception as err:  # a GPU falling off the bus mid-read is reported, not raised
        return GpuReport(False, reason=f"NVML query failed: {err}")
    if not devices:
        return GpuReport(True, driver=driver, reason="NVML found no GPU")
    return GpuReport(True, driver=driver, devices=tuple(devices))

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
    try:
        nvml = _load_nvml()
    except ImportError:
        return GpuReport(
            False, reason="nvidia-ml-py is not installed (pip install 'oomguard[gpu]')"
        )
    except Exception as err:  # pynvml.NVMLError and its many subclasses: no driver/library
        return GpuReport(False, reason=f"NVML unavailable: {err}")
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

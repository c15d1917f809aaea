"""GPU reading without a GPU. This machine has none: the NVML failure is a stand-in module
(named as such) for a driver-less machine; the 'not installed' case is real here."""

import sys
import types

import pytest

from oomguard.memory import gpu


@pytest.fixture(autouse=True)
def fresh_nvml_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "_initialised", False)
    monkeypatch.setattr(gpu, "_unavailable", None)


def test_no_nvml_package_is_a_normal_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails, as without nvidia-ml-py
    report = gpu.read_gpus()
    assert not report.available
    assert report.devices == ()
    assert "nvidia-ml-py" in (report.reason or "")
    # a module that would work now is not even tried: the answer is remembered, not retried
    working = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlSystemGetDriverVersion=lambda: "1", nvmlDeviceGetCount=lambda: 0
    )
    monkeypatch.setitem(sys.modules, "pynvml", working)
    assert gpu.read_gpus().reason == report.reason


def test_nvml_without_driver_is_a_normal_state(monkeypatch: pytest.MonkeyPatch) -> None:
    class NVMLError(Exception):
        pass

    def init() -> None:
        raise NVMLError("NVML Shared Library Not Found")

    stand_in = types.SimpleNamespace(nvmlInit=init, NVMLError=NVMLError)  # mock: no GPU driver here
    monkeypatch.setitem(sys.modules, "pynvml", stand_in)
    report = gpu.read_gpus()
    assert not report.available
    assert "Shared Library Not Found" in (report.reason or "")


def test_nvml_devices_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = types.SimpleNamespace(total=16 * 1024**3, used=14 * 1024**3, free=2 * 1024**3)
    stand_in = types.SimpleNamespace(  # mock: a one-GPU machine, which this one is not
        nvmlInit=lambda: None,
        nvmlSystemGetDriverVersion=lambda: b"550.54",
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetMemoryInfo=lambda h: memory,
        nvmlDeviceGetName=lambda h: "NVIDIA A4000",
        nvmlDeviceGetUUID=lambda h: "GPU-1234",
    )
    monkeypatch.setitem(sys.modules, "pynvml", stand_in)
    report = gpu.read_gpus()
    assert report.available and report.driver == "550.54"
    assert report.devices[0].used == 14 * 1024**3
    assert report.used == 14 * 1024**3

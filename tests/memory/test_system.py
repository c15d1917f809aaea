from pathlib import Path

from oomguard.memory.system import parse_meminfo, parse_pressure, read_pressure, read_system_memory

MEMINFO = """MemTotal:       24684088 kB
MemFree:        23000000 kB
MemAvailable:   24000000 kB
Buffers:           12345 kB
SwapTotal:       1048572 kB
SwapFree:        1048000 kB
"""

PSI = """some avg10=1.50 avg60=0.75 avg300=0.10 total=123456
full avg10=0.50 avg60=0.25 avg300=0.00 total=654
"""


def test_parse_meminfo_in_bytes() -> None:
    memory = parse_meminfo(MEMINFO)
    assert memory.total == 24684088 * 1024
    assert memory.available == 24000000 * 1024
    assert memory.swap_total == 1048572 * 1024


def test_meminfo_without_memavailable_falls_back_to_memfree() -> None:
    text = "MemTotal: 1000 kB\nMemFree: 400 kB\n"
    assert parse_meminfo(text).available == 400 * 1024


def test_real_meminfo_is_consistent() -> None:
    memory = read_system_memory()
    assert 0 < memory.available <= memory.total


def test_parse_pressure() -> None:
    pressure = parse_pressure(PSI)
    assert pressure.some.avg10 == 1.5
    assert pressure.some.total_us == 123456
    assert pressure.full is not None and pressure.full.avg60 == 0.25


def test_no_psi_is_none(tmp_path: Path) -> None:
    assert read_pressure(tmp_path / "missing") is None
    real = read_pressure()
    if Path("/proc/pressure/memory").exists():
        assert real is not None

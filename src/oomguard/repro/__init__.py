"""The OOM repro harness: run a command under a cap, simulate pressure, bundle the evidence."""

from oomguard.repro.bundle import make_bundle
from oomguard.repro.harness import ReproResult, reproduce
from oomguard.repro.simulate_pressure import simulate_pressure

__all__ = ["ReproResult", "make_bundle", "reproduce", "simulate_pressure"]

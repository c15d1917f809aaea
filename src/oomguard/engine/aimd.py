"""Additive increase, multiplicative decrease: the one home of "slow down after an OOM".

After an out-of-memory event a limit (concurrency, batch size) halves, down to ``floor``;
after every ``step_after`` successes in a row it grows by one again, up to ``ceiling``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Aimd:
    ceiling: int
    floor: int = 1
    step_after: int = 10  # successes before one step up
    factor: float = 0.5

    def __post_init__(self) -> None:
        self.limit = self.ceiling
        self._successes = 0

    def decrease(self) -> int:
        self.limit = max(self.floor, int(self.limit * self.factor))
        self._successes = 0
        return self.limit

    def success(self) -> int:
        if self.limit < self.ceiling:
            self._successes += 1
            if self._successes >= self.step_after:
                self.limit += 1
                self._successes = 0
        return self.limit

"""Additive increase, multiplicative decrease: the one home of "slow down after an OOM".

As in TCP congestion control:

- after an out-of-memory event a limit (concurrency, batch size) halves, down to ``floor``,
  but only once per event: work that was already running when the limit was cut ran under
  the old limit, and its deaths are the same event (two big items that coincide cost one
  halving, not two);
- it grows by one again after ``step_after`` successes in a row, by default after as many
  successes as the limit itself (one step per "round" of work), up to ``ceiling``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass
class Aimd:
    ceiling: int
    floor: int = 1
    step_after: int | None = None  # successes before one step up; None: the current limit
    factor: float = 0.5

    def __post_init__(self) -> None:
        self.limit = self.ceiling
        self._successes = 0
        self._ticket = itertools.count(1)
        self._last_ticket = 0
        self._cut_after = 0  # work started after this ticket ran under the current limit

    def ticket(self) -> int:
        """Call when work starts under the current limit; pass it to :meth:`decrease`."""
        self._last_ticket = next(self._ticket)
        return self._last_ticket

    def decrease(self, ticket: int | None = None) -> int | None:
        """Halve the limit; returns the new limit, or None when this event was counted already.

        ``ticket`` is the failed work's :meth:`ticket`; without one every call halves.
        """
        if ticket is not None and ticket <= self._cut_after:
            return None
        self.limit = max(self.floor, int(self.limit * self.factor))
        self._successes = 0
        self._cut_after = self._last_ticket
        return self.limit

    def success(self) -> int:
        if self.limit < self.ceiling:
            self._successes += 1
            if self._successes >= (self.step_after or self.limit):
                self.limit += 1
                self._successes = 0
        return self.limit

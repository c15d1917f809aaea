"""Adaptive batch size: the one home of "how many items go in the next batch".

On by default, from a first batch of ``batch_size`` items; off when the user names a
batch size (``config.fixed_when_named``): every batch then holds ``batch_size`` items, as
asked. On, the size moves within ``[min_batch_size, max_batch_size]``, on one machine and
on a cluster (the driver learns from each node's report):

- **memory**: a batch of a batched function whose predicted peak would not fit the room
  left under the admission target is cut to the number of items that fits (instead of
  waiting for room), never below ``min_batch_size`` (a per-item function's batch needs
  what one item needs, however long);
- **time**: a full batch that took under half of ``batch_seconds`` while memory was
  plentiful (twice the batch would still use under half of the target) doubles the size,
  so fast items stop paying a supervisor round trip each few milliseconds; a batch that
  ran over four times ``batch_seconds`` halves it, so slow items keep progress and
  checkpoints coming and a failure costs less work;
- **the end**: no batch takes more than half an equal share of the items not handed out
  yet (factoring: the remaining items over twice the workers), so batches shrink as the end
  nears and no worker idles behind another's big last batch. Half, not a whole share
  (guided self-scheduling): items differ in length, and a whole share put two long
  neighbours (two long documents among short ones) in one worker's last batch while the
  other worker idled. Where the source's length is known this holds throughout; otherwise
  from when the source is exhausted, and in a lull (the reader has nothing more for now
  and the open batch is old enough to go: an executor's bounded read-ahead, a slow source),
  when the items in hand are all there is and are shared out the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

GROWTH_ROOM = 0.5  # of the admission target: doubling a batch must leave memory under this


def room_to_grow(total_doubled: int, target: float, budget: int) -> bool:
    """Memory is plentiful: with the batch doubled, what is expected in flight
    (``total_doubled``) stays under half of the admission target."""
    return total_doubled <= GROWTH_ROOM * target * budget


@dataclass
class BatchSizer:
    start: int
    low: int = 1
    high: int = 1000
    seconds: float = 0.5
    enabled: bool = False

    def __post_init__(self) -> None:
        self.size = self.start

    def fitting(self, per_item: float | None, room: int) -> int:
        """Items for the next batch: the size, cut to what fits ``room`` at ``per_item`` bytes."""
        if not self.enabled or per_item is None or per_item <= 0:
            return self.size
        return max(self.low, min(self.size, int(room // per_item)))

    def share(self, size: int, remaining: int, workers: int) -> int:
        """``size``, cut to half an equal share of the ``remaining`` items across the workers."""
        if not self.enabled:
            return size
        share = -(-remaining // (2 * max(1, workers)))
        return max(self.low, min(size, share))

    def after_batch(self, items: int, seconds: float, plentiful: bool) -> int | None:
        """Learn from a batch that finished; returns the new size when it changed."""
        if not self.enabled:
            return None
        before = self.size
        if items >= self.size and seconds < self.seconds / 2 and plentiful:
            self.size = min(self.high, self.size * 2)
        elif seconds > self.seconds * 4:
            self.size = max(self.low, self.size // 2)
        return self.size if self.size != before else None

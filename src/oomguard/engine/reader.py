"""The reader thread: items from the source into a bounded queue, the run's only buffer."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from oomguard.engine.items import Run
from oomguard.engine.sources import Source
from oomguard.wakeup import WakePipe

END = object()  # the "source exhausted" mark, after the last item


class SourceReader:
    """Pulls items from the source in a thread into a bounded queue (the only buffer).

    Items travel in chunks of ``CHUNK`` (one queue round trip per chunk, not per item); a
    source that reads in blocks (``chunks()``, a JSONL file's) hands over each block whole,
    a :class:`Run` where the block is one.
    The chunk being filled is shared under a plain lock: when the queue is empty the
    supervisor takes it as it is, so a slow source never holds an item back.
    """

    CHUNK = 256

    def __init__(
        self, source: Source, capacity: int, wanted: Callable[[int], bool] | None = None
    ) -> None:
        """``wanted``: which input indices to run (None: all of them, a new run's case)."""
        self.queue: queue.Queue[Sequence[Any]] = queue.Queue(maxsize=max(2, capacity // self.CHUNK))
        self._source = source
        self._wanted = wanted
        self._pipe = WakePipe()  # readable when an item came that the supervisor waits for
        self.waiting = threading.Event()  # the supervisor wants to hear of the next item
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oomguard-reader", daemon=True)
        self._lock = threading.Lock()
        self._filling: list[Any] = []  # the chunk being filled (under _lock)
        self._taken: Sequence[Any] = []  # the supervisor's side: the chunk being taken from

    def fileno(self) -> int:
        return self._pipe.fileno()

    def start(self) -> None:
        self._thread.start()

    def _wake(self) -> None:
        if self.waiting.is_set():
            self.waiting.clear()
            self._pipe.wake()

    def _put(self, chunk: Sequence[Any]) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(chunk, timeout=0.2)
            except queue.Full:
                continue
            self._wake()
            return True
        return False

    def _add(self, item: Any) -> bool:
        with self._lock:
            self._filling.append(item)
            full = len(self._filling) >= self.CHUNK
            if full:
                chunk, self._filling = self._filling, []
        if full:
            return self._put(chunk)
        self._wake()
        return True

    def _add_chunk(self, items: Sequence[Any]) -> bool:
        """A source's whole chunk: one queue round trip (what is being filled goes first)."""
        with self._lock:
            if self._filling:
                items, self._filling = [*self._filling, *items], []
        return self._put(items)

    def _run(self) -> None:
        wanted = self._wanted
        chunks = getattr(self._source, "chunks", None)
        try:
            if chunks is not None:
                for block in chunks():
                    chunk = block if wanted is None else [i for i in block if wanted(i.index)]
                    if chunk and not self._add_chunk(chunk):
                        return
            else:
                for item in self._source:
                    if wanted is not None and not wanted(item.index):
                        continue  # done in an earlier session (resume), or not asked for
                    if not self._add(item):
                        return
        except BaseException as err:  # reported to the supervisor, which stops the run
            self.error = err
        self._add(END)

    def take(self, count: int) -> Sequence[Any]:
        """Up to ``count`` next items (``END`` last, at the end), or raises queue.Empty.

        Supervisor side. Items come a chunk at a time: a list slice, not a call per item."""
        if not self._taken:
            try:
                self._taken = self.queue.get_nowait()
            except queue.Empty:
                with self._lock:
                    chunk, self._filling = self._filling, []
                if not chunk:
                    raise
                self._taken = chunk
        taken = self._taken[:count]
        self._taken = self._taken[count:]
        return taken

    def give_back(self, items: Sequence[Any]) -> None:
        """Items taken but not used: they come first at the next take."""
        if not self._taken:
            self._taken = items
        elif isinstance(items, Run) and isinstance(self._taken, Run):
            self._taken = items.joined(self._taken) or [*items, *self._taken]
        else:
            self._taken = [*items, *self._taken]

    def empty(self) -> bool:
        return not self._taken and self.queue.empty() and not self._filling

    def drain_wakeups(self) -> None:
        self._pipe.drain()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pipe.close()

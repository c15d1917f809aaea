"""The node side's installation: a ``WorkerPlugin`` that gives a Dask worker its node
engine and the executors that reach it.

``setup`` runs on each worker (and on every worker that joins later): the node's group
with its budget, its fork server, and two executors in ``Worker.executors``:

``"oomguard"``        a plain Dask user's tasks (``dask.annotate(executor="oomguard")``),
                      each call in a capped worker (:class:`~oomguard.dask.executor.NodeExecutor`)
``"oomguard-node"``   threads that hand a driver's batches to the node engine
                      (:func:`oomguard.dask.tasks.run_batch`), as many as the node's workers

``teardown`` stops them and removes the node's groups: nothing outlives the Dask worker.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from distributed import WorkerPlugin, get_worker

from oomguard.dask.executor import NodeExecutor
from oomguard.dask.node import NodeEngine

NAME = "oomguard"  # the plugin's name, and the plain tasks' executor
BATCHES = "oomguard-node"  # the executor of a driver's batch tasks


class OomguardPlugin(WorkerPlugin):  # type: ignore[misc]
    name = NAME
    idempotent = False  # a second install() replaces the first (a new budget, say)

    def __init__(
        self,
        memory: int | None,
        workers: int | None = None,
        *,
        worker_memory: int | None = None,
        limiter: str = "auto",
        crash_retries: int = 2,
        target: float = 0.90,
    ) -> None:
        self.memory = memory
        self.workers = workers
        self.worker_memory = worker_memory
        self.limiter = limiter
        self.crash_retries = crash_retries
        self.target = target
        self.engine: NodeEngine | None = None
        self._executors: list[Any] = []

    def setup(self, worker: Any) -> None:
        workers = self.workers or worker.state.nthreads
        memory = self.memory if self.memory is not None else node_budget(self.target)
        self.engine = NodeEngine(
            memory,
            workers,
            name=worker.address,
            worker_memory=self.worker_memory,
            limiter=self.limiter,
        )
        calls = NodeExecutor(self.engine, crash_retries=self.crash_retries)
        batches = ThreadPoolExecutor(workers, thread_name_prefix="oomguard-node")
        worker.executors[NAME] = calls
        worker.executors[BATCHES] = batches
        self._executors = [calls, batches]

    def teardown(self, worker: Any) -> None:
        for name in (NAME, BATCHES):
            if worker.executors.get(name) in self._executors:
                del worker.executors[name]
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "engine": None, "_executors": []}


def node_budget(target: float) -> int:
    """A node's budget where none was given: ``target`` of its effective memory budget."""
    from oomguard.memory import effective_budget

    return int(effective_budget().bytes * target)


def node_engine() -> NodeEngine:
    """The node engine of the Dask worker running the calling task."""
    plugin = get_worker().plugins.get(NAME)
    engine: NodeEngine | None = getattr(plugin, "engine", None)
    if engine is None:
        raise RuntimeError("oomguard is not installed on this Dask worker (oomguard.dask.install)")
    return engine

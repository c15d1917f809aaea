"""The cluster's parts that need no cluster: addresses, and the node's gate."""

from __future__ import annotations

import threading

import pytest

from oomguard.dask.address import parse_cluster
from oomguard.dask.node import Gate
from oomguard.errors import ConfigError

pytestmark = pytest.mark.timeout(30)


def test_cluster_addresses() -> None:
    assert parse_cluster("tcp://10.0.0.1:8786") == ("tcp://10.0.0.1:8786", None)
    assert parse_cluster("local:3") == ("local", 3)
    for bad in ("local:0", "local:x", "scheduler:8786", ""):
        with pytest.raises(ConfigError, match="invalid cluster"):
            parse_cluster(bad)


def test_an_alone_attempt_waits_for_the_node_to_drain_and_holds_it() -> None:
    gate = Gate(2)
    order: list[str] = []
    first_in, first_out = threading.Event(), threading.Event()

    def first() -> None:
        with gate.hold(alone=False):
            first_in.set()
            first_out.wait(10)
            order.append("first")

    def alone() -> None:
        with gate.hold(alone=True):
            order.append("alone")
            assert gate.running == 1

    runner = threading.Thread(target=first)
    runner.start()
    first_in.wait(10)
    waiting = threading.Thread(target=alone)
    waiting.start()
    with gate._cond:  # the alone one is queued: it waits, and a newcomer would too
        gate._cond.wait_for(lambda: gate.waiting_alone == 1, timeout=10)
    first_out.set()
    runner.join(10)
    waiting.join(10)
    assert order == ["first", "alone"]
    assert gate.running == 0 and not gate.alone

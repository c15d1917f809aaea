"""A module that holds more than its cap the moment a worker imports it (a model loaded at
import), set by the test through the environment the workers inherit:
OOMGUARD_TEST_IMPORT_MB of memory, touched; with OOMGUARD_TEST_IMPORT_MARKER, the first
import creates that file instead and only later imports allocate."""

from __future__ import annotations

import os
from typing import Any

MiB = 1024 * 1024
_marker = os.environ.get("OOMGUARD_TEST_IMPORT_MARKER")
if _marker and not os.path.exists(_marker):
    with open(_marker, "w"):
        pass
else:
    _held = bytearray(int(os.environ.get("OOMGUARD_TEST_IMPORT_MB", "0")) * MiB)
    _held[::4096] = b"\x01" * len(_held[::4096])


def work(item: Any) -> Any:
    if item == "exit":
        os._exit(7)  # a crash: the replacement worker imports the module again
    return item

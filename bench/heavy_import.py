"""Benchmark fixture for startMethod 'forkserver' (bench/forkserver.ts): a handler file whose import
takes ~2 s and leaves ~300 MB allocated, like a module that loads a model at import.

  BLOB   250 MiB of bytes, written (resident, not lazily mapped zero pages)
  TABLE  ~1 M small Python objects (~60 MB): what gc.freeze() keeps the collector off
"""

import os
import time

from pyvisor import handler, on_init

_t0 = time.monotonic()
BLOB = bytearray(b"\x01") * (250 << 20)
TABLE = [("row", i, str(i)) for i in range(1_000_000)]
time.sleep(max(0.0, 2.0 - (time.monotonic() - _t0)))

_state = {}


@on_init
def setup():
    _state["pid"] = os.getpid()


@handler
def add(a, b):
    return a + b


@handler
def checksum(n):
    """Reads the model: sums n bytes of BLOB (pages stay shared: reading does not copy them)."""
    return sum(BLOB[:n])

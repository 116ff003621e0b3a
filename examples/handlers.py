"""Example handlers for pyvisor (used by `npm run demo` and the README).

Every function decorated with @handler can be called from Node by name:

    const pool = createPool({ script: 'examples/handlers.py', size: 4 });
    await pool.call('add', [1, 2]);                        // 3
    for await (const n of pool.stream('count', [5])) {}    // 0, 1, 2, 3, 4

Each worker is a long-lived Python process: module-level state (like MODEL below) is loaded
once per worker and reused by every call that worker serves.
"""

import os
import time

from pyvisor import handler, on_init

MODEL = {}


@on_init
def load_model():
    """Runs once in each worker, before it accepts calls. Put slow set-up here (loading a
    model, opening a connection); if it raises, the worker reports an init error."""
    started = time.perf_counter()
    MODEL["weights"] = {i: i * i for i in range(1000)}  # stands in for something expensive
    MODEL["loaded_in_ms"] = (time.perf_counter() - started) * 1000


@handler
def add(a, b):
    """A plain handler: arguments and return value travel as JSON."""
    return a + b


@handler
def count(n):
    """A generator is a streaming handler: Node receives items as they are yielded, with
    back-pressure (the generator is paused while Node's consumer is behind)."""
    for i in range(n):
        yield i


@handler
def slow_square(x, delay=0.5):
    """A slow call; cancelling it from Node (AbortSignal, timeout) interrupts the sleep."""
    time.sleep(delay)
    return MODEL["weights"].get(x, x * x)


@handler
def timed_square(x, delay=0.5):
    """slow_square that also says which worker process ran it and for how long (the demo uses
    this to show each worker's time per call)."""
    started = time.perf_counter()
    value = slow_square(x, delay)
    return {"value": value, "pid": os.getpid(), "ms": (time.perf_counter() - started) * 1000}


@handler
def whoami():
    """Which worker process served this call."""
    return {"pid": os.getpid(), "model_loaded_in_ms": round(MODEL["loaded_in_ms"], 3)}

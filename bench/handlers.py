"""Handlers of the pyvisor side of bench/run.ts (the bare baseline does the same work)."""

from pyvisor import handler


@handler
def echo(x):
    return x


@handler
def add(a, b):
    return a + b


@handler
async def aadd(a, b):
    """add as an async def: what an async call costs over a plain one."""
    return a + b


@handler
async def nap(seconds):
    """An I/O-bound call: awaits without using the CPU (the async fan-out benchmark)."""
    import asyncio  # here, not at the top: the startup benchmark imports this file

    await asyncio.sleep(seconds)
    return seconds


_matrix = []  # the 1000x1000 matrix of the values benchmark, built by its first call


def _the_matrix():
    if not _matrix:
        import numpy as np  # here, not at the top: numpy is optional (and slow to import)

        _matrix.append(np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000) / 7)
    return _matrix[0]


@handler
def matrix():
    """A 1000x1000 float64 numpy array, returned as it is (an NDArray in Node)."""
    return _the_matrix()


@handler
def matrix_list():
    """The same array as nested lists (.tolist()): what returning it cost before NDArrays."""
    return _the_matrix().tolist()

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

"""Async example handlers for pyvisor: I/O-bound calls (language models, web APIs) side by side.

Create the pool with `concurrency` above 1 and each worker runs that many calls at once, as tasks
on its one event loop:

    const pool = createPool({ script: 'examples/async_handlers.py', size: 2, concurrency: 100 });
    await Promise.all(prompts.map((p) => pool.call('complete', [p])));

The client is made once per worker by an async @on_init, on the same event loop as every call,
so its connection pool is shared by all of them. With a real client this would be, for example,
`httpx.AsyncClient()` or `aiohttp.ClientSession()`; here a stand-in waits instead of sending a
request, so the example runs anywhere.
"""

import asyncio
import os

from pyvisor import handler, on_init

CLIENT = {}


class FakeLLMClient:
    """Stands in for an HTTP client: `complete` awaits the network (here: asyncio.sleep), at most
    `connections` requests at a time, like a client's connection pool."""

    def __init__(self, connections):
        self._slots = asyncio.Semaphore(connections)
        self.requests = 0

    async def complete(self, prompt, latency):
        async with self._slots:
            self.requests += 1
            await asyncio.sleep(latency)  # the request is in flight; other calls run meanwhile
            return prompt.upper()

    async def close(self):
        pass


@on_init
async def connect():
    """Runs once per worker on its event loop, before the worker accepts calls."""
    CLIENT["llm"] = FakeLLMClient(connections=200)


@handler
async def complete(prompt, latency=0.1):
    """One LLM call: awaits the client made by @on_init. While it waits, the worker runs other
    calls. Cancelling it from Node (timeout, AbortSignal) raises asyncio.CancelledError here."""
    text = await CLIENT["llm"].complete(prompt, latency)
    return {"text": text, "pid": os.getpid()}


@handler
async def stream_tokens(prompt, delay=0.01):
    """An async generator is a streaming handler: each token reaches Node as it is yielded."""
    for token in prompt.split():
        await asyncio.sleep(delay)
        yield token


@handler
async def blocking_work(seconds):
    """Blocking code (a sync library, CPU work) goes to a thread with asyncio.to_thread, so the
    event loop keeps serving the worker's other calls meanwhile."""
    import time

    await asyncio.to_thread(time.sleep, seconds)
    return seconds

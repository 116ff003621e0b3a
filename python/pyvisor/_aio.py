"""The worker's one asyncio event loop, and running coroutines on it in serial mode.

Imported on first need only (it imports asyncio, ~10 ms): the first async handler or async
@on_init in serial mode, or at start-up in loop mode. The loop is created then and kept for the
worker's life, so objects bound to it (clients, sessions, queues, tasks started by @on_init)
stay usable by every later call. asyncio.run() is never used: it would make a new loop per call.

Serial mode runs each coroutine with loop.run_until_complete() on the main thread, as the task
``state.task`` (see run_task): a cancel from Node cancels that task on the loop (_watch.py), so
the coroutine sees asyncio.CancelledError where it awaits, and the reply is ``err`` kind
``cancelled`` if the CancelledError escapes (a coroutine that swallows it and returns is
answered normally). Between calls the loop does not run, so background tasks progress only
while some async call (or async @on_init) runs. Loop mode (_loop.py) runs the loop forever.

``call_var`` (a ContextVar) holds the call frame of the call a task belongs to: every task
copies the context it is created in, so pyvisor.current_call() is right in each of many
concurrent tasks, in tasks they create and in asyncio.to_thread() threads.
"""

import asyncio
import sys
from contextvars import ContextVar

import pyvisor as _api

from . import _state
from ._state import state as _st
from ._watch import _cancel_task

_Cancelled = _api.Cancelled
CancelledError = asyncio.CancelledError

call_var = ContextVar("pyvisor_call")
_state.call_var = call_var  # read by pyvisor.current_call()


def get_loop():
    """The worker's event loop, created on the first call and made the main thread's current
    loop (asyncio.get_event_loop() in handler code returns it)."""
    loop = _st.loop
    if loop is None:
        loop = None
        if sys.version_info < (3, 10):
            # Python 3.9's asyncio objects (Queue, Lock, Event...) bind to get_event_loop() when
            # they are created: adopt the loop that sync code may have created that way already.
            try:
                loop = asyncio.get_event_loop()
            except RuntimeError:
                loop = None
            if loop is not None and (loop.is_closed() or loop.is_running()):
                loop = None
        if loop is None:
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        _st.loop = loop
    return loop


def cancelled_from(cid, exc):
    """The Cancelled reported for call cid when Node's cancel ended it with CancelledError exc,
    with the traceback of where the coroutine was waiting."""
    inner = exc.__context__ if isinstance(exc.__context__, CancelledError) else exc
    return _Cancelled("call %d was cancelled" % cid).with_traceback(inner.__traceback__)


async def collect(agen):
    """An async generator's items as a list (the reply to a call without stream)."""
    return [item async for item in agen]


def run_task(coro):
    """Serial mode: run coro as the running call's task on the loop (main thread), until it is
    done; return its result. For Node's cancel see _watch.py: the task is cancelled, never
    interrupted by SIGUSR1. Also runs async @on_init functions (no call: current_id is None)."""
    st = _st
    cid = st.current_id
    try:
        loop = st.loop or get_loop()
        st.defer = True  # no Cancelled between creating the task and publishing it in st.task
        try:
            msg = st.current_msg
            if msg is not None:
                token = call_var.set(msg)  # copied into the task's context by create_task
                try:
                    task = loop.create_task(coro)
                finally:
                    call_var.reset(token)
            else:
                task = loop.create_task(coro)
            st.task = task
        finally:
            st.defer = False
    except BaseException:
        coro.close()  # a Cancelled that came before the task existed: it never ran
        raise
    try:
        # From here a cancel for this call reaches the task. One that the helper sent as a
        # signal before the task was published (its handler ran during defer) is taken now.
        if cid is not None and st.cancel_id == cid:
            _cancel_task(cid)
        try:
            result = loop.run_until_complete(task)
        except CancelledError as exc:
            if cid is not None and st.task_cancelled == cid:
                raise cancelled_from(cid, exc) from None
            raise
    finally:
        st.task = None
    c = st.cancel_id
    if c is not None and c == cid:
        # Node's cancel came in while the task ran, but the task finished before the loop got
        # to cancel it: the call is cancelled like synchronous code would have been, here.
        st.cancel_id = None
        raise _Cancelled("call %d was cancelled" % cid)
    return result


def iter_async_gen(agen, cid):
    """Serial mode, a streaming async generator: a plain generator over its items, for
    _serve._stream_items. Each step runs as the call's task (run_task); an exception thrown in
    at our yield (Cancelled while waiting for credit) is passed on to the async generator's."""
    st = _st
    anext_ = agen.__anext__
    thrown = None
    try:
        while True:
            try:
                if thrown is None:
                    item = run_task(anext_())
                else:
                    exc, thrown = thrown, None
                    item = run_task(agen.athrow(exc))
            except StopAsyncIteration:
                return
            if st.task_cancelled == cid:
                # It swallowed the CancelledError of Node's cancel and yielded again: Node has
                # given up on this stream; stop it (aclose below) and report the cancellation.
                raise _Cancelled("call %d was cancelled" % cid)
            try:
                yield item
            except GeneratorExit:
                raise
            except BaseException as exc:
                thrown = exc
    finally:
        try:
            run_task(agen.aclose())  # runs the async generator's finally blocks if we stop early
        except Exception:
            pass


def close_loop():
    """At `exit`: cancel the tasks still pending on the loop (background tasks of the handler
    file), let them finish, shut down async generators and the default executor, close it."""
    loop = _st.loop
    if loop is None or loop.is_closed():
        return
    try:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    except Exception:
        pass
    finally:
        try:
            loop.close()
        except Exception:
            pass

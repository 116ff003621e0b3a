"""Loop mode (PYVISOR_CONCURRENCY > 1): up to that many calls run at once on one event loop.

The main thread runs the worker's event loop forever (_aio.get_loop: the same persistent loop an
async @on_init ran on). The helper thread reads the request pipe all the time (thread-mode
reading, see _watch.py) and, after each read(), hands the calls, credits and `exit` it found to
the loop in one batch: one call_soon_threadsafe() per read(), not one per call. Cancel and ping
never wait for the loop: the helper handles them itself.

Every call becomes a task on the loop (_run_call), with its own record (_Call): stream credit,
its task, its cancel flags. Async handlers and async generators run side by side; plain
synchronous handlers run on the loop thread and block it while they run (handlers should use
asyncio.to_thread for blocking work); a synchronous generator is advanced one item at a time on
the loop thread, and credit is awaited asynchronously between items, so several streams of
either kind run at once, each under its own credit.

Cancel (helper thread, under rlock):
  * a call received but not started yet (its task has not run) is dropped and answered at once;
    its task finds it gone from ``unstarted`` and never runs its handler;
  * while the call's synchronous code runs on the loop thread (``current_id``, set by
    _section), SIGUSR1 raises Cancelled in it, as in serial mode;
  * otherwise (and also then, in case that code has just returned) _cancel_task cancels the
    call's task on the loop: the coroutine sees asyncio.CancelledError where it awaits;
  * a stream's generator paused at its yield (waiting for credit) gets Cancelled thrown in there.
The cancel is delivered at most once per call (``delivered``); other calls carry on.

`exit`: the helper takes no new calls; once every call received before `exit` has finished, the
loop stops and serve() returns (exit code 0). EOF on the request pipe: os._exit(0), as always.
"""

import pyvisor as _api

from ._aio import CancelledError, call_var, cancelled_from, collect, get_loop
from ._codec import _err_body, _exception_body, _unknown_handler_body, _value_body
from ._connection import _send, _take_frame
from ._fatal import _internal_error
from ._serve import (
    _AsyncGenType,
    _CoroutineType,
    _GeneratorType,
    _not_a_generator_body,
    with_kwargs,
)
from ._state import EXIT as _EXIT
from ._state import state as _st
from ._watch import _dispatch, _not_started_body, _require_int, _signal_cancel

_Cancelled = _api.Cancelled
_PLAIN, _GEN, _ASYNC, _AGEN = _api._PLAIN, _api._GEN, _api._ASYNC, _api._AGEN
_handlers = _api._handlers

_calls = {}  # id -> _Call: every call received and not finished (state.calls)
_unstarted = {}  # id -> _Call: those whose task has not started (state.unstarted)
_exit_seen = False  # the loop has taken `exit` from a batch


class _Call(object):
    """One call received in loop mode."""

    __slots__ = ("id", "msg", "stream", "credit", "waiter", "task", "cancelled", "delivered")

    def __init__(self, msg):
        self.id = msg["id"]
        self.msg = msg
        self.stream = msg.get("stream") is True
        self.credit = msg["credit"] if self.stream else 0  # items the stream may still send
        self.waiter = None  # a future the stream awaits until credit comes
        self.task = None  # its task on the loop
        self.cancelled = False  # Node sent `cancel` (set by the helper thread)
        self.delivered = False  # the cancel reached the handler: Cancelled or task.cancel()


# --------------------------------------------------------------------------------------------
# The helper thread's side (holding rlock).


def _read_to_loop():
    """After each read(): handle every complete frame in the buffer; calls, credit and `exit`
    go to the loop in one batch, in the order they were read."""
    st = _st
    batch = []
    while True:
        msg = _take_frame()
        if msg is None:
            break
        t = msg.get("t")
        if t == "cancel":
            _cancel(_require_int(msg, "id"))
        elif t == "credit":
            cid = _require_int(msg, "id")
            n = _require_int(msg, "n")
            rec = _calls.get(cid)
            if rec is not None and rec.stream and n > 0:
                batch.append((rec, n))
        else:
            r = _dispatch(msg)  # validates calls, answers ping and bad requests
            if r is None or st.exiting:
                continue  # after `exit`, no new calls
            if r is _EXIT:
                st.exiting = True
                batch.append(r)
            else:
                rec = _register(r)
                if rec is not None:
                    batch.append(rec)
    if batch and not st.stopped:
        st.loop.call_soon_threadsafe(_on_batch, batch)


def _register(msg):
    cid = msg["id"]
    if cid in _calls:
        message = "malformed call: call %d is already running" % cid
        _send(_err_body(cid, "bad_request", "BadRequest", message, ""))
        return None
    rec = _Call(msg)
    _calls[cid] = rec
    _unstarted[cid] = rec
    return rec


def _cancel(cid):
    st = _st
    rec = _unstarted.pop(cid, None)  # atomic: its task pops it too when it starts
    if rec is not None:
        del _calls[cid]
        _send(_not_started_body(cid))
        return
    rec = _calls.get(cid)
    if rec is None or rec.cancelled:
        return  # unknown, finished, or cancelled already
    rec.cancelled = True  # before current_id is read: _section checks it after setting it
    if st.current_id == cid:  # its synchronous code runs on the loop thread now
        st.cancel_id = cid
        _signal_cancel(cid)
    if not st.stopped:
        st.loop.call_soon_threadsafe(_cancel_task, rec)


# --------------------------------------------------------------------------------------------
# The loop's side (main thread).


def _on_batch(batch):
    global _exit_seen
    try:
        create_task = _st.loop.create_task
        for item in batch:
            c = item.__class__
            if c is _Call:
                item.task = create_task(_run_call(item))
            elif c is tuple:
                rec, n = item
                rec.credit += n
                w = rec.waiter
                if w is not None and not w.done():
                    w.set_result(None)
            else:  # EXIT
                _exit_seen = True
        if _exit_seen and not _calls:
            _st.loop.stop()
    except BaseException:
        _internal_error()


def _cancel_task(rec):
    if rec.delivered:
        return
    task = rec.task
    if task is None or task.done():
        return
    rec.delivered = True
    task.cancel()


async def _run_call(rec):
    try:
        cid = rec.id
        if _unstarted.pop(cid, None) is not None:  # else: cancelled before it started
            call_var.set(rec.msg)  # this task's own context: pyvisor.current_call()
            reply = await _invoke(rec)
            del _calls[cid]
            _send(reply)
        if _exit_seen and not _calls:
            _st.loop.stop()
    except BaseException:
        _internal_error()


def _section(rec, fn, *args):
    """Run fn(*args), synchronous code of call rec, on the loop thread: a cancel for rec that
    comes meanwhile is delivered by SIGUSR1 (Cancelled raised in it), as in serial mode."""
    st = _st
    st.current_msg = rec.msg  # current_call() in threads the handler starts
    st.current_rec = rec
    st.current_id = rec.id
    try:
        if rec.cancelled and not rec.delivered:  # came before current_id was set
            rec.delivered = True
            raise _Cancelled("call %d was cancelled" % rec.id)
        return fn(*args)
    finally:
        st.current_id = None
        st.current_rec = None
        st.current_msg = None


def _list_of(fn, args):
    return list(fn(*args))


async def _invoke(rec):
    """Run call rec; return its terminal reply body. Never raises."""
    st = _st
    cid = rec.id
    msg = rec.msg
    name = msg["fn"]
    entry = _handlers.get(name)
    if entry is None:
        return _unknown_handler_body(cid, name)
    fn, kind = entry
    args = msg["args"]
    if msg.get("kw") is True:
        fn, args = with_kwargs(fn, args)
    try:
        if rec.stream:
            if kind == _GEN:
                await _stream_sync(rec, name, fn, args)
            elif kind == _AGEN:
                await _stream_async(rec, name, fn, args)
            else:
                return _not_a_generator_body(cid, name)
            return b'{"t":"end","id":%d}' % cid
        if kind == _ASYNC:
            result = await fn(*args)
        elif kind == _PLAIN:
            result = _section(rec, fn, *args)
            rt = result.__class__
            if rt is _GeneratorType:
                result = _section(rec, list, result)
            elif rt is _CoroutineType:
                result = await result
            elif rt is _AsyncGenType:
                result = await collect(result)
        elif kind == _GEN:
            result = _section(rec, _list_of, fn, args)
        else:
            result = await collect(fn(*args))
    except BaseException as exc:
        # A Cancelled that a late signal raised in _section's finally left these set.
        st.current_id = None
        st.current_rec = None
        st.current_msg = None
        if rec.delivered and isinstance(exc, CancelledError):
            exc = cancelled_from(cid, exc)
        return _exception_body(cid, exc)
    try:
        return _value_body("ok", cid, result, name)
    except BaseException as exc:
        return _exception_body(cid, exc)


# --------------------------------------------------------------------------------------------
# Streams: items one at a time, each sent only under the call's own credit.


async def _wait_credit(rec):
    loop = _st.loop
    while rec.credit <= 0:
        w = rec.waiter = loop.create_future()
        try:
            await w
        finally:
            rec.waiter = None


def _cancelled(rec):
    """Cancelled for rec, marking its cancel delivered."""
    rec.delivered = True
    return _Cancelled("call %d was cancelled" % rec.id)


async def _stream_sync(rec, name, fn, args):
    cid = rec.id
    it = _section(rec, fn, *args)
    try:
        next_ = it.__next__
        while True:
            if rec.cancelled and not rec.delivered:
                return _throw_at_yield(rec, it, _cancelled(rec))
            try:
                item = _section(rec, next_)
            except StopIteration:
                return
            if rec.delivered:  # it caught Cancelled and yielded again: Node has given up
                raise _Cancelled("call %d was cancelled" % cid)
            body = _value_body("item", cid, item, name)
            if rec.credit <= 0:
                try:
                    await _wait_credit(rec)
                except CancelledError:
                    if not rec.delivered:
                        raise
                    # Cancelled while paused at its yield: raise it there, like serial mode.
                    return _throw_at_yield(rec, it, _cancelled(rec))
            rec.credit -= 1
            _send(body)
    finally:
        _section(rec, it.close)  # runs the generator's finally blocks if we stop early


def _throw_at_yield(rec, it, exc):
    try:
        _section(rec, it.throw, exc)
    except StopIteration:
        return  # it caught the cancel and finished: a normal end
    raise exc  # it yielded again: closed by the caller's finally, reported as cancelled


async def _stream_async(rec, name, fn, args):
    cid = rec.id
    agen = fn(*args)
    try:
        anext_ = agen.__anext__
        while True:
            if rec.cancelled and not rec.delivered:
                return await _athrow_at_yield(agen, _cancelled(rec))
            try:
                item = await anext_()
            except StopAsyncIteration:
                return
            if rec.delivered:  # it swallowed the CancelledError and yielded again
                raise _Cancelled("call %d was cancelled" % cid)
            body = _value_body("item", cid, item, name)
            if rec.credit <= 0:
                try:
                    await _wait_credit(rec)
                except CancelledError:
                    if not rec.delivered:
                        raise
                    return await _athrow_at_yield(agen, _cancelled(rec))
            rec.credit -= 1
            _send(body)
    finally:
        try:
            await agen.aclose()  # runs the async generator's finally blocks if we stop early
        except Exception:
            pass


async def _athrow_at_yield(agen, exc):
    try:
        await agen.athrow(exc)
    except StopAsyncIteration:
        return
    raise exc


# --------------------------------------------------------------------------------------------
# The serve loop.


def serve():
    """Loop mode's serve loop, on the main thread. Entered holding rlock (after `ready`);
    returns holding rlock once `exit` was read and every call received before it finished."""
    st = _st
    loop = get_loop()
    st.calls = _calls
    st.unstarted = _unstarted
    batch = []
    pending = st.pending  # calls read during start-up
    while pending:
        r = pending.popleft()
        if r is _EXIT:
            st.exiting = True
            batch.append(r)
            pending.clear()
        else:
            rec = _register(r)
            if rec is not None:
                batch.append(rec)
    st.reader_hook = _read_to_loop
    if batch:
        loop.call_soon(_on_batch, batch)
    st.rlock.release()
    try:
        loop.run_forever()
    finally:
        st.rlock.acquire()
        st.stopped = True

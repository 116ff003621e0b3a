"""Serial mode (PYVISOR_CONCURRENCY=1, the default): the serve loop takes the next call, runs
its handler on the main thread and sends the reply; streams (items under Node's credit) and
async handlers (run on the worker's one event loop, see _aio.py).

Calls that arrive while a call runs (Node may pipeline them) wait in pending and run strictly in
arrival order, each one only after the previous call's terminal reply has been written. Loop
mode (concurrency > 1) is _loop.py.

This is the per-call hot path (a benchmark measures it against a bare pipe echo, see
python/tests/bench_inproc.py): the loop keeps what it touches in locals, and state that is
shared with the helper thread is read and written through one local reference to the state
object. asyncio is imported only when an async handler (or async @on_init) first runs.
"""

import os

import pyvisor as _api

from ._codec import _err_body, _exception_body, _unknown_handler_body, _value_body
from ._connection import _fill, _send, _take_frame
from ._state import EXIT as _EXIT
from ._state import state as _st
from ._watch import _dispatch, _drain, _not_started_body

_Cancelled = _api.Cancelled
_PLAIN, _GEN, _ASYNC, _AGEN = _api._PLAIN, _api._GEN, _api._ASYNC, _api._AGEN

_END = object()  # "the stream ended" result of _invoke

# Never replaced, only mutated (see _state.py).
_pending = _st.pending
_precancelled = _st.precancelled
_rlock = _st.rlock
_credit_lock = _st.credit_lock


# Types of generator / coroutine objects, found without importing `types`.
def _gen_fn():
    yield


async def _coro_fn():
    pass


async def _agen_fn():
    yield


_GeneratorType = type(_gen_fn())
_c = _coro_fn()
_CoroutineType = type(_c)
_c.close()
_AsyncGenType = type(_agen_fn())
del _c


# --------------------------------------------------------------------------------------------
# Streams: flow control and cancellation between items.


def _take_credit():
    """Wait until the running stream may send one more item, and take that credit."""
    st = _st
    while True:
        with _credit_lock:
            if st.credit > 0:
                st.credit -= 1
                return
            st.credit_evt.acquire(False)  # make sure the next acquire() really waits
            st.credit_waiting = True
        # Lock waits are interrupted by signals on POSIX, so a cancel gets through here.
        st.credit_evt.acquire()


def _send_item(body):
    st = _st
    st.defer = True  # never interrupt a frame half-written (see _watch._on_sigusr1)
    try:
        _send(body)
    finally:
        st.defer = False
    cid = st.cancel_id
    if cid is not None and cid == st.current_id:  # a cancel arrived during the write
        st.cancel_id = None
        raise _Cancelled("call %d was cancelled" % cid)


def _stream_items(cid, name, fn, kind, args):
    it = fn(*args)
    if kind == _AGEN:
        it = _load_aio().iter_async_gen(it, cid)
    try:
        next_ = it.__next__
        while True:
            try:
                item = next_()
            except StopIteration:
                return
            try:
                body = _value_body("item", cid, item, name)
                _take_credit()
                _send_item(body)
            except _Cancelled as exc:
                # Cancelled while the generator is paused at its yield (typically waiting for
                # credit): raise it there, so the generator sees it like any other handler.
                try:
                    it.throw(exc)
                except StopIteration:
                    return  # it caught the cancel and finished: a normal end
                # It caught the cancel and yielded again: stop it (GeneratorExit) and report
                # the cancellation; Node has given up on this stream.
                raise exc
    finally:
        it.close()  # runs the generator's finally blocks if we stop early


# --------------------------------------------------------------------------------------------
# Async handlers: run on the worker's one event loop (_aio.py, which imports asyncio: ~10 ms,
# paid on first use only).


def _load_aio():
    """The _aio module. The first time, importing it imports asyncio (~10 ms) during a call: a
    Cancelled raised in the middle of that would leave asyncio half-initialised, so a cancel is
    deferred until the import is done (the signal is sent again, see _watch._signal_cancel)."""
    st = _st
    st.defer = True
    try:
        from . import _aio
    finally:
        st.defer = False
    return _aio


def _run_coroutine(coro):
    return _load_aio().run_task(coro)


def _collect_async_gen(agen):
    aio = _load_aio()
    return aio.run_task(aio.collect(agen))


# --------------------------------------------------------------------------------------------
# Running one call.


def with_kwargs(fn, args):
    """A call with keyword arguments ("kw": they are the last element of args): fn with them
    bound, and the positional arguments. The handler's kind (generator, coroutine...) is unchanged:
    the wrapper returns what fn returns. Wrong keywords raise TypeError from fn, as in Python."""
    kwargs = args.pop()

    def call(*positional):
        return fn(*positional, **kwargs)

    return call, args



def _invoke(cid, name, fn, kind, args, stream, _release=_rlock.release):
    """Run one call on the main thread; return its terminal reply body. Never raises.

    Entered holding rlock (the call is fully started); releases it inside the try: from then on
    the helper may read a cancel for this call and the signal may raise Cancelled anywhere, even
    before the handler is entered, so no bytecode may run between the two outside the try.
    (_release is a default argument: a local, as cheap as the _serve loop's own locals.)"""
    st = _st
    try:
        try:
            _release()
            if stream:
                _stream_items(cid, name, fn, kind, args)
                result = _END
            elif kind == _PLAIN:
                result = fn(*args)
                rt = result.__class__
                if rt is _GeneratorType:
                    result = list(result)
                elif rt is _CoroutineType:
                    result = _run_coroutine(result)
                elif rt is _AsyncGenType:
                    result = _collect_async_gen(result)
            elif kind == _GEN:
                result = list(fn(*args))
            elif kind == _ASYNC:
                result = _run_coroutine(fn(*args))
            else:
                result = _collect_async_gen(fn(*args))
        finally:
            st.current_id = None  # from here on no Cancelled can be raised for this call
    except BaseException as exc:
        # Also catches a Cancelled that raced in just before the finally above completed.
        st.current_id = None
        return _exception_body(cid, exc)
    if result is _END:
        return b'{"t":"end","id":%d}' % cid
    try:
        return _value_body("ok", cid, result, name)
    except BaseException as exc:
        return _exception_body(cid, exc)


def _not_a_generator_body(cid, name):
    return _err_body(
        cid,
        "python",
        "TypeError",
        "handler %r is not a generator function, so it cannot be streamed; "
        "use call() instead of stream()" % name,
        "",
    )


# --------------------------------------------------------------------------------------------
# The loop.


def _read_call():
    """Epoll mode, main thread idle (holding rlock): read until a call or exit arrives."""
    while True:
        msg = _take_frame()
        if msg is None:
            _fill()
            continue
        r = _dispatch(msg)
        if r is not None:
            return r


def _wait_call():
    """Thread mode (holding rlock): wait until the helper queues a call or exit."""
    st = _st
    avail = st.avail
    while not _pending:
        avail.acquire(False)
        st.main_waiting = True
        _rlock.release()
        avail.acquire()
        _rlock.acquire()
    return _pending.popleft()


def _serve():
    """The serial serve loop. Entered and left holding rlock. Returns when `exit` is taken
    from the queue (after every call received before it)."""
    st = _st
    handlers = _api._handlers
    epoll = st.ep is not None
    ep_modify = st.ep_modify
    epollin = st.epollin
    in_fd = st.in_fd
    buf = st.buf
    pending = _pending
    precancelled = _precancelled
    rlock = _rlock
    send = _send
    while True:
        if pending:
            msg = pending.popleft()
        elif epoll:
            msg = _read_call()
        else:
            msg = _wait_call()
        if msg is _EXIT:
            return
        cid = msg["id"]
        if epoll and len(buf) >= 4:
            # Frames that came in the same read() as this call sit in the buffer, where the epoll
            # helper cannot see them: a cancel right behind its call would be lost. Take them now.
            _drain(cid)
        if precancelled and cid in precancelled:
            precancelled.discard(cid)
            send(_not_started_body(cid))
            continue
        name = msg["fn"]
        entry = handlers.get(name)
        if entry is None:
            send(_unknown_handler_body(cid, name))
            continue
        fn, kind = entry
        stream = msg.get("stream") is True
        if stream and kind != _GEN and kind != _AGEN:
            send(_not_a_generator_body(cid, name))
            continue
        # Start the call. The helper only looks at this state under rlock, which we hold.
        st.cancel_id = None
        st.cancel_sent = False
        st.current_msg = msg
        if stream:
            st.stream_id = cid
            st.credit = msg["credit"]
        st.current_id = cid
        if epoll:
            st.armed = True
            ep_modify(in_fd, epollin)
        args = msg["args"]
        if msg.get("kw") is True:
            fn, args = with_kwargs(fn, args)
        reply = _invoke(cid, name, fn, kind, args, stream)  # releases rlock
        if st.forked:  # a child forked by the handler returned here: it is not the worker
            os._exit(0)
        rlock.acquire()
        if epoll:
            st.armed = False
            ep_modify(in_fd, 0)
        st.current_msg = None
        st.stream_id = None
        # Sent after disarming, so the next call is read by this thread, not the helper, and a
        # handler that broke the request pipe fails its own call (the disarm dies with exit 3
        # before the reply), not the next one. Sending first would save one epoll_ctl (~2 us).
        send(reply)

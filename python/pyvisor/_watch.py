"""Watching the request pipe and the parent while handlers run: the helper thread, what it
does with each request frame (_dispatch: cancel, credit, ping, queueing calls), the SIGUSR1
handler that turns a cancel into Cancelled, and the parent watchdog.

Threads. Handlers always run on the main thread, so that SIGUSR1 can interrupt synchronous
handler code (signal handlers run there and blocking calls there get EINTR); in loop mode
(PYVISOR_CONCURRENCY > 1) the main thread runs the event loop, which runs the handlers. Someone
must keep reading the request pipe while a handler runs (cancel, credit, ping, EOF, and the
next calls when Node pipelines them); handing every call from a reader thread to the main thread
costs a thread wake-up per call (~20 us), so in serial mode on Linux the work is split:

  * between calls the main thread itself blocks in read() on the request pipe;
  * when a call starts, the main thread arms an epoll registration of the pipe and releases
    rlock; a helper thread sleeping in epoll_wait() wakes only if a frame arrives during the
    call, takes rlock, reads and dispatches it (cancel -> SIGUSR1 to the main thread, or
    task.cancel() on the loop for an async call; credit; ping -> pong; call/exit -> queued in
    pending; EOF -> os._exit(0));
  * when the call ends the main thread takes rlock back and disarms.

A call shorter than the time between frames thus costs two epoll_ctl() calls and no thread
wake-up. Elsewhere (or with PYVISOR_READER=thread) the helper thread reads the pipe all the
time and hands calls to the main thread through pending. In loop mode the helper always reads
(arming is pointless when calls overlap) and, after start-up, hands each read()'s calls to the
event loop in one batch (reader_hook, see _loop.py). Either way everything touching the read
buffer, pending and the cancel state happens under rlock, every write to the reply pipe happens
under wlock, one writev() per frame, and ping is answered by the helper thread (only the GIL is
needed, not the main thread or the event loop).

Cancel (serial mode; loop mode is in _loop.py). A call that was received but has not started
is dropped and answered (err kind cancelled, "... before it started") at once by whichever
thread reads the cancel. For the call whose code runs now the helper sets the token
``cancel_id`` and either sends SIGUSR1 (the main thread runs synchronous handler code:
_on_sigusr1 raises Cancelled there; the signal is sent again until the token is taken, see
_signal_cancel) or, when the call's coroutine runs as ``task`` on the event loop, schedules
_cancel_task on the loop (call_soon_threadsafe), which cancels the task: the coroutine sees
asyncio.CancelledError. An exception raised by a signal handler inside the event loop's own code
would corrupt the loop, so SIGUSR1 never raises while a task runs: it schedules _cancel_task
instead. Whoever takes the token (clears cancel_id) delivers the cancel, so it is delivered once.
"""

import os
import sys
import _thread
from time import sleep as _sleep

try:  # the `signal` module wraps _signal in enums: importing it costs `import enum` (~2 ms)
    import _signal as signal
except ImportError:  # pragma: no cover
    import signal

import pyvisor as _api

from ._codec import _err_body
from ._connection import _fill, _send, _take_frame
from ._fatal import _die, _internal_error, _protocol_error
from ._state import EXIT as _EXIT
from ._state import SKIP as _SKIP
from ._state import state as _st

_Cancelled = _api.Cancelled

# Never replaced, only mutated (see _state.py).
_pending = _st.pending
_precancelled = _st.precancelled
_rlock = _st.rlock
_credit_lock = _st.credit_lock


# --------------------------------------------------------------------------------------------
# Request frames. Called by whichever thread reads: the main thread between calls (epoll mode),
# the helper thread during a call (or always, in thread mode). The caller holds rlock.


def _require_int(msg, field):
    v = msg.get(field)
    if v.__class__ is not int:
        _protocol_error("%r message without an integer %r field" % (msg.get("t"), field))
    return v


def _dispatch(msg):
    """Handle one request frame (caller holds rlock). Returns a validated call or EXIT for
    the caller to run or queue; None when the frame was handled here."""
    t = msg.get("t")
    if t == "call":
        cid = msg.get("id")
        if cid.__class__ is not int:
            _protocol_error("'call' message without an integer 'id' field")
        problem = None
        if msg.get("fn").__class__ is not str:
            problem = "'fn' must be a string"
        elif msg.get("args").__class__ is not list:
            problem = "'args' must be an array"
        else:
            stream = msg.get("stream")
            if stream is True:
                credit = msg.get("credit")
                if credit.__class__ is not int or credit < 0:
                    problem = "a streaming call needs an integer 'credit' >= 0"
            elif stream is not None and stream is not False:
                problem = "'stream' must be a boolean"
            if problem is None and "kw" in msg:
                args = msg["args"]
                if msg["kw"] is not True or not args or args[-1].__class__ is not dict:
                    problem = "with 'kw', the last element of 'args' must be an object"
        if problem is None:
            return msg
        _send(_err_body(cid, "bad_request", "BadRequest", "malformed call: " + problem, ""))
        return None
    st = _st
    if t == "credit":
        cid = _require_int(msg, "id")
        n = _require_int(msg, "n")
        if cid == st.stream_id and n > 0:
            with _credit_lock:
                st.credit += n
                if st.credit_waiting:
                    st.credit_waiting = False
                    st.credit_evt.release()
        return None
    if t == "cancel":
        cid = _require_int(msg, "id")
        if cid == st.current_id:
            if not st.cancel_sent:
                st.cancel_sent = True
                st.cancel_id = cid
                if st.task is not None:  # its coroutine runs on the loop: cancel the task
                    st.loop.call_soon_threadsafe(_cancel_task, cid)
                else:
                    _signal_cancel(cid)
        else:
            _cancel_queued(cid)
        return None
    if t == "ping":
        _send(b'{"t":"pong","id":%d}' % _require_int(msg, "id"))
        return None
    if t == "exit":
        return _EXIT
    if msg is _SKIP:
        return None
    _protocol_error("unknown message type %r" % (t,))


def _cancel_queued(cid):
    """Serial mode (caller holds rlock): drop the queued call cid, if any, and answer it now."""
    i = 0
    for queued in _pending:
        if queued is not _EXIT and queued["id"] == cid:
            del _pending[i]
            _send(_not_started_body(cid))
            return
        i += 1


def _not_started_body(cid):
    return _err_body(
        cid, "cancelled", "Cancelled", "call %d was cancelled before it started" % cid, ""
    )


def _drain(starting=None):
    """Handle every complete frame in the read buffer (caller holds rlock); calls and EXIT go
    to pending. Returns True if something was queued.

    starting: the id of a call the main thread is about to start (it is in no queue any more),
    so that a cancel for it, read in the same read() as the call, cancels it before it starts.
    """
    queued = False
    while True:
        msg = _take_frame()
        if msg is None:
            return queued
        if starting is not None and msg.get("t") == "cancel" and msg.get("id") == starting:
            _precancelled.add(starting)
            continue
        r = _dispatch(msg)
        if r is not None:
            _pending.append(r)
            queued = True


# --------------------------------------------------------------------------------------------
# The helper thread.


def _helper_epoll():
    try:
        poll = _st.ep.poll
        while True:
            poll()  # sleeps until a frame arrives while armed (or the pipe hangs up)
            with _rlock:
                # Holding rlock means the main thread is inside a call (or init); it may
                # have consumed the data that woke us before it got here, so check again.
                if _st.armed and poll(0):
                    _fill()
                    _drain()
    except BaseException:
        _internal_error()


def _helper_thread():
    st = _st
    try:
        while True:
            _fill()  # only this thread touches the read buffer in thread mode
            with _rlock:
                hook = st.reader_hook
                if hook is not None:  # loop mode, after start-up (see _loop.py)
                    hook()
                elif _drain() and st.main_waiting:
                    st.main_waiting = False
                    st.avail.release()
    except BaseException:
        _internal_error()


def _guarded_modify(modify):
    """epoll_ctl on the request pipe fails (EPERM, EBADF) when a handler replaced or closed
    that descriptor: the pipe is unusable, which is a broken pipe (exit 3), not a runtime bug."""

    def ep_modify(fd, events):
        try:
            modify(fd, events)
        except OSError as exc:
            _die(3, "the request pipe became unusable (did a handler close or dup2 over it?): %s" % exc)

    return ep_modify


def _start_helper():
    """Start the helper thread: epoll mode on Linux in serial mode unless PYVISOR_READER=thread
    (or epoll is unusable), else thread mode. Returns holding rlock, with the pipe registered
    but disarmed."""
    st = _st
    if st.concurrency == 1 and os.environ.get("PYVISOR_READER") != "thread":
        try:
            import select

            ep = select.epoll()
            ep.register(st.in_fd, 0)
            st.ep, st.epollin = ep, select.EPOLLIN
            st.ep_modify = _guarded_modify(ep.modify)
        except (ImportError, AttributeError, OSError):
            st.ep = None
    _rlock.acquire()
    _thread.start_new_thread(_helper_epoll if st.ep is not None else _helper_thread, ())


# --------------------------------------------------------------------------------------------
# Cancellation: the helper sends SIGUSR1 (see _dispatch), the main thread raises Cancelled; or
# the running call's task is cancelled on the event loop.


def _signal_cancel(cid):
    """Send SIGUSR1 to the main thread for call cid (cancel_id is set), and keep sending it
    until the main thread has taken the cancel.

    One signal is not enough: if it lands after the main thread released the GIL for a blocking
    system call (time.sleep, a lock wait) but before it entered it, the C-level handler only
    notes it for Python, the call blocks for its full length and the Python handler runs after
    that. A second signal interrupts the blocking call. The re-sender thread stops once the
    token is taken (cancel_id cleared) or the code of the call no longer runs."""
    signal.pthread_kill(_st.main_ident, signal.SIGUSR1)
    _thread.start_new_thread(_resend_cancel, (cid,))


def _resend_cancel(cid):
    st = _st
    delay = 0.002
    waited = 0.0
    try:
        while waited < 10.0:  # by then Node has long killed a worker stuck like that
            _sleep(delay)
            waited += delay
            if st.cancel_id != cid or st.current_id != cid:
                return
            signal.pthread_kill(st.main_ident, signal.SIGUSR1)
            delay = min(delay * 2, 0.05)
    except BaseException:
        pass  # interpreter shutdown


def _on_sigusr1(signum, frame):
    # Runs on the main thread between bytecodes (or when a blocking call there gets EINTR).
    # Raise only if the helper asked for it *for the call running now*: a late signal (its call
    # already finished) must never hit the next call or idle code.
    st = _st
    cid = st.cancel_id
    if cid is not None and cid == st.current_id and not st.defer:
        rec = st.current_rec
        if rec is not None:  # loop mode: the synchronous code of call cid runs now
            st.cancel_id = None
            if rec.delivered:
                return
            rec.delivered = True
        elif st.task is not None:
            # Serial mode, the call's coroutine runs on the loop (the helper chose the signal
            # before it could see the task): never raise inside the loop's code. The token
            # stays set for _cancel_task.
            st.loop.call_soon_threadsafe(_cancel_task, cid)
            return
        else:
            st.cancel_id = None
        raise _Cancelled("call %d was cancelled" % cid)


def _cancel_task(cid):
    """Serial mode, on the event loop (the main thread): cancel the task of call cid if it still
    runs and its cancel was not delivered yet (whoever clears the cancel_id token delivers)."""
    st = _st
    task = st.task
    if task is not None and cid == st.current_id and st.cancel_id == cid:
        st.cancel_id = None
        st.task_cancelled = cid
        task.cancel()


def _install_signal_handlers():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Node decides when workers stop
    signal.signal(signal.SIGUSR1, _on_sigusr1)


# --------------------------------------------------------------------------------------------
# The parent: the worker must not outlive Node.


_prctl = None  # the prctl function, once looked up (a fork server's children reuse it)


def _set_pdeathsig():
    """prctl(PR_SET_PDEATHSIG, SIGKILL). Uses _ctypes directly: ~1 ms instead of ~3.5 ms for
    `import ctypes`; falls back to ctypes if the private API ever changes."""
    global _prctl
    if _prctl is None:
        _prctl = _find_prctl()
    if _prctl is False:
        return False
    try:
        return _prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # PR_SET_PDEATHSIG = 1
    except Exception:
        return False


def _find_prctl():
    try:
        import _ctypes

        class _CInt(_ctypes._SimpleCData):
            _type_ = "i"

        class _CFunc(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = _CInt

        class _Lib(object):
            _handle = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)

        prctl = _CFunc(("prctl", _Lib()))
    except Exception:
        try:
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except Exception:
            return False
    return prctl


def _guard_parent():
    expected = os.environ.get("PYVISOR_PARENT_PID")
    try:
        expected = int(expected) if expected else None
    except ValueError:
        expected = None
    armed = sys.platform.startswith("linux") and _set_pdeathsig()
    ppid = os.getppid()
    if expected is not None and ppid != expected:
        _die(1, "parent process %d is gone (parent is now %d); exiting" % (expected, ppid))
    if not armed:
        _thread.start_new_thread(_watchdog, (ppid,))


def _watchdog(parent):
    # Without PR_SET_PDEATHSIG (not Linux): poll. Re-parenting (getppid() changes) is the only
    # portable sign that the parent died.
    while True:
        _sleep(0.25)
        if os.getppid() != parent:
            os._exit(1)

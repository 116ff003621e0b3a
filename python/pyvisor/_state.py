"""The worker's state: one object, ``state``, shared by the runtime's modules.

Who may touch what (see _watch.py for the threads, _serve.py and _loop.py for the two modes):

  * ``rlock`` guards the read buffer, ``pending``, ``precancelled``, the held-attachment fields
    and the start of a call in serial mode: the main thread sets ``current_id``,
    ``current_msg``, ``stream_id``/``credit`` and ``armed`` while holding it, so the helper
    thread (which reads them only under rlock) sees a call either not started or fully started;
    in loop mode it also guards the registration of calls (``calls``/``unstarted``, written by
    the helper thread) and ``reader_hook``/``exiting``/``stopped``;
  * ``wlock`` guards the reply pipe: every frame is one writev() under it;
  * ``credit_lock`` guards ``credit``/``credit_waiting`` (serial mode: the helper adds credit
    while the main thread, which does not hold rlock during a call, takes it);
  * the rest are single references written by one thread and read by the other under the GIL:
    the helper sets ``cancel_id``, the main thread clears it and clears ``current_id`` as soon
    as the handler returns (no Cancelled can be raised for that call after that); the main
    thread sets ``task`` while the running call's coroutine runs on the event loop (serial
    mode), and ``current_rec`` while a loop-mode call's synchronous code runs.

Per-call state: in serial mode (PYVISOR_CONCURRENCY=1) one call runs at a time, so the running
call's cancel and stream credit are fields of this object (cheapest on the per-call path); in
loop mode every call received and not finished has its own record (_loop._Call: credit, task,
cancel flags) in ``calls``.

Objects that are never replaced (the locks, ``buf``, ``pending``...) are also bound to module
globals by the modules that use them on the per-call path: one LOAD_GLOBAL instead of a global
plus an attribute lookup, as cheap as the module globals this state object replaced.

``pyvisor.current_call()`` reads ``call_var`` (a ContextVar set per call task, created with the
event loop) and ``current_msg`` through sys.modules: it never imports the runtime, so outside a
worker it costs nothing and returns None.
"""

import _thread
from _collections import deque

_DEFAULT_MAX_MESSAGE = 268435456  # 256 MiB

EXIT = object()  # queued in pending by an `exit` message
SKIP = {"t": "_skip"}  # a frame already answered by _take_frame (see _connection.py)

# contextvars.ContextVar holding the call frame of the call a task (or a thread started with
# asyncio.to_thread) belongs to; created by _aio.py with the event loop, None until then.
call_var = None


class State(object):
    # __slots__: attribute reads and writes on the per-call path are a fixed-offset slot
    # access (specialised by CPython 3.11+), not a dict lookup.
    __slots__ = (
        "in_fd",
        "out_fd",
        "max_message",
        "concurrency",
        "main_ident",
        "wlock",
        "rlock",
        "buf",
        "pending",
        "precancelled",
        "held",
        "held_n",
        "held_atts",
        "held_skip",
        "scratch",
        "ep",
        "ep_modify",
        "epollin",
        "armed",
        "main_waiting",
        "avail",
        "current_id",
        "current_msg",
        "cancel_id",
        "cancel_sent",
        "defer",
        "stream_id",
        "credit",
        "credit_waiting",
        "credit_lock",
        "credit_evt",
        "loop",
        "task",
        "task_cancelled",
        "current_rec",
        "calls",
        "unstarted",
        "reader_hook",
        "exiting",
        "stopped",
        "forked",
    )

    def __init__(self):
        # The protocol pipes and their limits.
        self.in_fd = -1  # request pipe (moved from fd 3)
        self.out_fd = -1  # reply pipe (moved from fd 4)
        self.max_message = _DEFAULT_MAX_MESSAGE  # PYVISOR_MAX_MESSAGE
        self.concurrency = 1  # PYVISOR_CONCURRENCY: 1 is serial mode, more is loop mode
        self.main_ident = None  # the thread that runs handlers (SIGUSR1 goes there)

        self.wlock = _thread.allocate_lock()
        self.rlock = _thread.allocate_lock()

        # Reading (under rlock).
        self.buf = bytearray()  # bytes read from the request pipe, not yet parsed
        self.pending = deque()  # calls (and EXIT) read while the main thread was busy
        self.precancelled = set()  # ids of calls cancelled in the read() that brought them (_drain)
        self.held = None  # a request frame with "b" whose attachments are still being read
        self.held_n = 0  # how many attachments it announced
        self.held_atts = []  # the attachments read so far
        self.held_skip = False  # the frame was answered already (RecursionError): drop it
        self.scratch = bytearray()  # reused buffer for large attachments (_read_big)

        # The helper thread.
        self.ep = None  # epoll object, or None in thread mode
        self.ep_modify = None  # ep.modify, turning an OSError into exit 3 (_guarded_modify)
        self.epollin = 1  # select.EPOLLIN
        self.armed = False  # epoll mode: the helper thread may read (a call is running)
        self.main_waiting = False  # thread mode: the main thread waits on avail for a call
        self.avail = _thread.allocate_lock()  # released by the helper when it queued a call

        # The running call and its cancellation.
        self.current_id = None  # id of the call whose code runs on the main thread now, else None
        self.current_msg = None  # its call frame (for pyvisor.current_call())
        self.cancel_id = None  # set by the helper: deliver the cancel of this call (a token: the
        #                        main thread clears it when it raises Cancelled or cancels the task)
        self.cancel_sent = False  # the running call's cancel was handled (at most one per call)
        self.defer = False  # the main thread is writing a frame or creating the call's task: do
        #                     not raise Cancelled now (it is raised or delivered right after)

        # The running stream's flow control (serial mode).
        self.stream_id = None  # id of the streaming call running now
        self.credit = 0  # items it may still send
        self.credit_waiting = False  # the main thread waits on credit_evt
        self.credit_lock = _thread.allocate_lock()
        self.credit_evt = _thread.allocate_lock()  # released by the helper when credit arrives

        # The event loop (created on first need, kept for the worker's life; see _aio.py).
        self.loop = None
        self.task = None  # serial mode: the task running the current call's coroutine now
        self.task_cancelled = None  # serial mode: id of the call whose task Node cancelled

        # Loop mode (see _loop.py).
        self.current_rec = None  # the call record whose synchronous code runs now
        self.calls = None  # id -> record of every call received and not finished
        self.unstarted = None  # id -> record of the calls that have not started yet
        self.reader_hook = None  # what the reader thread does after each read(), if set
        self.exiting = False  # `exit` was read: take no new calls
        self.stopped = False  # the loop has stopped: hand nothing more to it

        self.forked = False  # True in a child forked by a handler (see _after_fork_in_child)


state = State()

"""The worker's state: one object, ``state``, shared by the runtime's modules.

Who may touch what (see _watch.py for the two threads):

  * ``rlock`` guards the read buffer, ``pending``, ``precancelled``, the held-attachment fields
    and the start of a call: the main thread sets ``current_id``, ``current_msg``,
    ``stream_id``/``credit`` and ``armed`` while holding it, so the helper thread (which reads
    them only under rlock) sees a call either not started or fully started;
  * ``wlock`` guards the reply pipe: every frame is one writev() under it;
  * ``credit_lock`` guards ``credit``/``credit_waiting`` (the helper adds credit while the main
    thread, which does not hold rlock during a call, takes it);
  * the rest are single references written by one thread and read by the other under the GIL:
    the helper sets ``cancel_id``, the main thread clears it and clears ``current_id`` as soon
    as the handler returns (no Cancelled can be raised for that call after that).

Objects that are never replaced (the locks, ``buf``, ``pending``...) are also bound to module
globals by the modules that use them on the per-call path: one LOAD_GLOBAL instead of a global
plus an attribute lookup, as cheap as the module globals this state object replaced.

``pyvisor.current_call()`` reads ``current_msg`` through sys.modules: it never imports the
runtime, so outside a worker it costs nothing and returns None.
"""

import _thread
from _collections import deque

_DEFAULT_MAX_MESSAGE = 268435456  # 256 MiB

EXIT = object()  # queued in pending by an `exit` message
SKIP = {"t": "_skip"}  # a frame already answered by _take_frame (see _connection.py)


class State(object):
    # __slots__: attribute reads and writes on the per-call path are a fixed-offset slot
    # access (specialised by CPython 3.11+), not a dict lookup.
    __slots__ = (
        "in_fd",
        "out_fd",
        "max_message",
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
        "forked",
    )

    def __init__(self):
        # The protocol pipes and their limits.
        self.in_fd = -1  # request pipe (moved from fd 3)
        self.out_fd = -1  # reply pipe (moved from fd 4)
        self.max_message = _DEFAULT_MAX_MESSAGE  # PYVISOR_MAX_MESSAGE
        self.main_ident = None  # the thread that runs handlers (SIGUSR1 goes there)

        self.wlock = _thread.allocate_lock()
        self.rlock = _thread.allocate_lock()

        # Reading (under rlock).
        self.buf = bytearray()  # bytes read from the request pipe, not yet parsed
        self.pending = deque()  # calls (and EXIT) read while the main thread was busy
        self.precancelled = set()  # ids of queued calls that Node cancelled before they started
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
        self.current_id = None  # id of the call running on the main thread, else None
        self.current_msg = None  # its call frame (for pyvisor.current_call())
        self.cancel_id = None  # set by the helper: raise Cancelled in the main thread for this call
        self.cancel_sent = False  # SIGUSR1 already sent for the running call (at most one per call)
        self.defer = False  # the main thread is writing a frame: do not raise Cancelled now

        # The running stream's flow control.
        self.stream_id = None  # id of the streaming call running now
        self.credit = 0  # items it may still send
        self.credit_waiting = False  # the main thread waits on credit_evt
        self.credit_lock = _thread.allocate_lock()
        self.credit_evt = _thread.allocate_lock()  # released by the helper when credit arrives

        self.forked = False  # True in a child forked by a handler (see _after_fork_in_child)


state = State()

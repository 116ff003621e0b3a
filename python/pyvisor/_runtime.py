"""The pyvisor worker runtime: talks to Node over two pipes and runs handlers.

This module is the entry point (main(), called by __main__.py): start-up, the handler file,
@on_init and the `ready` frame. The rest is split by job, around one state object:

  _state.py       the worker's state (fds, buffers, locks, queue, running call, cancel, credit)
  _fatal.py       fatal exits and their exit codes
  _codec.py       JSON, binary values and the bodies of ok/item/err frames
  _connection.py  the protocol pipes: set-up, reading and writing frames, attachments
  _watch.py       the helper thread (cancel, credit, ping while handlers run), SIGUSR1,
                  the parent watchdog
  _serve.py       serial mode: the serve loop, running handlers, streams
  _aio.py         the worker's one asyncio event loop (created on first need, kept for the
                  worker's life); running coroutines on it in serial mode
  _loop.py        loop mode: many calls at once as tasks on the event loop

Concurrency (env PYVISOR_CONCURRENCY, 1..10000, default 1) is how many calls Node may have in
flight on this worker at once. At 1 (serial mode) calls run one after another in arrival order
on the main thread, pipelined calls waiting in a queue, and async handlers run on the persistent
event loop with run_until_complete(). Above 1 (loop mode) the main thread runs the event loop
forever and every call is a task on it: async handlers overlap, synchronous ones block the loop
while they run.

Message types (one JSON object per frame; the field "t" names the type). See docs/protocol.md.

  Node -> Python, read from the request pipe (fd 3 at exec, moved at start-up)
  ------------------------------------------------------------------------------------------
  call        id:int fn:str args:list [stream:bool credit:int tp:str kw:true]   run fn(*args)
                                         (with kw: fn(*args[:-1], **args[-1]))
  cancel      id:int                     interrupt call id if running; if not started yet,
                                         drop it and answer it at once
  credit      id:int n:int               streaming call id may send n more items
  ping        id:int                     reply pong, even while a handler runs
  exit                                   finish the calls received so far, exit with code 0

  Python -> Node, written to the reply pipe (fd 4 at exec, moved at start-up)
  ------------------------------------------------------------------------------------------
  ready       pid version executable concurrency handlers:[{name,stream,async}] initMs
                                         once, after init
  init_error  type message traceback     import or @on_init raised; exit code 1 follows
  ok          id v                       terminal: the handler returned v
  item        id v                       one item of a streaming call (only while credit > 0)
  end         id                         terminal: the generator finished
  err         id kind type message traceback    terminal; kind is one of python,
                                         unknown_handler, cancelled, serialization, bad_request
  pong        id                         answer to ping

Framing and binary values: see _connection.py and _codec.py.

Exit codes: 0 after ``exit``, on EOF of the request pipe, or when the reply pipe is closed by
Node (EPIPE); 1 init error, or the parent is already gone at start-up; 2 bad usage (no script
argument, fds 3/4 not open, bad PYVISOR_MAX_MESSAGE or PYVISOR_CONCURRENCY); 3 protocol error
(malformed frame from Node) or an unusable reply pipe; 4 internal error in this runtime (a bug:
traceback on stderr).

Threads and cancellation: see _watch.py (and _loop.py for loop mode).

Start-up cost matters (a worker is measured against a bare `python3 -c`): imports are kept
to builtin or tiny modules (os, sys, _signal, _thread, time, _json, _collections, select,
and _ctypes on Linux for prctl); json, asyncio and traceback are imported only when needed
(asyncio: on the first async handler or async @on_init, or at start-up in loop mode), and
threading, json, signal, fcntl and ctypes not at all on the normal path (they pull in re,
enum, functools, struct or another shared library: 0.3-15 ms depending on the version).

Names used by test fixtures outside this package (test/fixtures/*.py) are kept here:
raw_write, _wlock, and _in_fd/_out_fd (read from the state object on access).
"""

import os
import sys
import _thread
from time import perf_counter as _perf_counter

import pyvisor as _api

from ._codec import _clip, _dict_body, _format_traceback, _safe_str
from ._connection import _after_fork_in_child, _send, _setup_fds
from ._connection import raw_write  # noqa: F401  (testing hook, used as pyvisor._runtime.raw_write)
from ._fatal import _die, _internal_error
from ._serve import _CoroutineType, _run_coroutine, _serve
from ._state import state as _st
from ._watch import _guard_parent, _install_signal_handlers, _start_helper

_GEN, _ASYNC, _AGEN = _api._GEN, _api._ASYNC, _api._AGEN

_wlock = _st.wlock  # testing hook: a fixture holds it to stop the runtime from writing


def __getattr__(name):
    # PEP 562: the pipe fds are set at start-up, after fixtures imported this module, so they
    # are looked up in the state object when asked for, not copied here.
    if name == "_in_fd":
        return _st.in_fd
    if name == "_out_fd":
        return _st.out_fd
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def _read_max_message():
    raw = os.environ.get("PYVISOR_MAX_MESSAGE")
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if not 16 <= value <= 0xFFFFFFFF:
            _die(2, "PYVISOR_MAX_MESSAGE=%r is not an integer between 16 and 4294967295" % raw)
        _st.max_message = value


def _read_concurrency():
    raw = os.environ.get("PYVISOR_CONCURRENCY")
    if raw is None:
        return
    value = int(raw) if raw.isdigit() and raw.isascii() else 0
    if not 1 <= value <= 10000:
        _die(2, "PYVISOR_CONCURRENCY=%r is not an integer between 1 and 10000" % raw)
    _st.concurrency = value


def _import_script(path):
    try:  # the frozen bootstrap modules are loaded already; `import importlib` is not free
        from _frozen_importlib import module_from_spec
        from _frozen_importlib_external import SourceFileLoader, spec_from_file_location
    except ImportError:  # pragma: no cover
        from importlib.machinery import SourceFileLoader
        from importlib.util import module_from_spec, spec_from_file_location

    class _ScriptLoader(SourceFileLoader):
        """Compiles the handler file from its source every time, as Python does for a __main__
        script: a cached .pyc is trusted when the source has the same size and mtime in whole
        seconds, so an edit saved within the second (pool.reload(), watch) could run old code.
        Modules the script imports keep the bytecode cache."""

        def get_code(self, fullname):
            return compile(self.get_data(self.path), self.path, "exec", dont_inherit=True)

    base = os.path.basename(path)
    stem = base[:-3] if base.endswith(".py") else base
    name = stem.replace(".", "_")
    if (
        not name
        or name in sys.modules
        or name in getattr(sys, "stdlib_module_names", ())
    ):
        # Never shadow a module that exists already (json.py, pyvisor.py, __main__.py...).
        name = "pyvisor_script_" + name
    spec = spec_from_file_location(name, path, loader=_ScriptLoader(name, path))
    module = module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _init_error(exc):
    """The init_error message for exc, raised by the script's import or an @on_init function."""
    return {
        "t": "init_error",
        "type": type(exc).__name__,
        "message": _clip(_safe_str(exc)),
        "traceback": _clip(_format_traceback(exc)),
    }


def _exit_after_output(code):
    """Flush what the script printed, then exit at once."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(code)  # not sys.exit: a non-daemon thread started by the script must not hang us


def _init_failed(exc):
    _send(_dict_body(_init_error(exc)))
    _exit_after_output(1)


def _initialize(script, imported=False):
    t0 = _perf_counter()
    try:
        if not imported:
            _import_script(script)
        for fn in list(_api._init_funcs):
            r = fn()
            if r.__class__ is _CoroutineType:
                _run_coroutine(r)
    except BaseException as exc:
        _init_failed(exc)
    return (_perf_counter() - t0) * 1000.0


def main(argv, drop_path0=False, imported=False):
    """Run the worker: ``python3 -u -m pyvisor /abs/path/to/handlers.py [args...]``.

    imported: the script is imported already (a worker forked from the fork server's template,
    see _forkserver.py): only the @on_init functions run, and sys.argv and sys.path are left as
    the template set them.
    """
    try:
        _main(argv, drop_path0, imported)
    except SystemExit:
        raise
    except BaseException:
        _internal_error()
    raise SystemExit(0)


def _main(argv, drop_path0, imported=False):
    st = _st
    if not argv:
        _die(2, "usage: python3 -u -m pyvisor /path/to/handlers.py")
    st.main_ident = _thread.get_ident()
    _setup_fds()
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
    _read_max_message()
    _read_concurrency()
    _guard_parent()
    _install_signal_handlers()
    _start_helper()  # returns holding rlock (thread-mode reading in loop mode)

    script = os.path.abspath(argv[0])
    if not imported:
        sys.argv = [script] + list(argv[1:])
        if drop_path0 and sys.path:
            del sys.path[0]  # the implicit cwd entry of -m: behave like `python3 handlers.py`
        sys.path.insert(0, os.path.dirname(script))

    # During init the helper answers ping, notices EOF and queues early messages.
    if st.ep is not None:
        st.armed = True
        st.ep_modify(st.in_fd, st.epollin)
    st.rlock.release()
    init_ms = _initialize(script, imported)
    st.rlock.acquire()
    if st.ep is not None:
        st.armed = False
        st.ep_modify(st.in_fd, 0)

    loop_mode = st.concurrency > 1
    if loop_mode:
        from ._aio import get_loop
        from ._loop import serve as serve_loop

        get_loop()  # ready means ready: the loop exists before `ready` is sent
    v = sys.version_info
    _send(
        _dict_body(
            {
                "t": "ready",
                "pid": os.getpid(),
                "version": "%d.%d.%d" % (v[0], v[1], v[2]),
                "executable": sys.executable,
                "concurrency": st.concurrency,
                "handlers": [
                    {
                        "name": name,
                        "stream": kind == _GEN or kind == _AGEN,
                        "async": kind == _ASYNC or kind == _AGEN,
                    }
                    for name, (fn, kind) in _api._handlers.items()
                ],
                "initMs": round(init_ms, 3),
            }
        )
    )
    if loop_mode:
        serve_loop()
    else:
        _serve()
    if st.loop is not None:
        from ._aio import close_loop

        close_loop()

"""The pyvisor worker runtime: talks to Node over two pipes and runs handlers.

Message types (one JSON object per frame; the field "t" names the type). See docs/protocol.md.

  Node -> Python, read from the request pipe (fd 3 at exec, moved at start-up)
  ------------------------------------------------------------------------------------------
  call        id:int fn:str args:list [stream:bool credit:int tp:str]   run fn(*args)
  cancel      id:int                     interrupt call id if running (or still queued)
  credit      id:int n:int               streaming call id may send n more items
  ping        id:int                     reply pong, even while a handler runs
  exit                                   finish the calls received so far, exit with code 0

  Python -> Node, written to the reply pipe (fd 4 at exec, moved at start-up)
  ------------------------------------------------------------------------------------------
  ready       pid version executable handlers:[{name,stream}] initMs     once, after init
  init_error  type message traceback     import or @on_init raised; exit code 1 follows
  ok          id v                       terminal: the handler returned v
  item        id v                       one item of a streaming call (only while credit > 0)
  end         id                         terminal: the generator finished
  err         id kind type message traceback    terminal; kind is one of python,
                                         unknown_handler, cancelled, serialization, bad_request
  pong        id                         answer to ping

Framing: a 4-byte unsigned big-endian length N, then N bytes of UTF-8 JSON. _take_frame()
is the only reader of frames and _send() the only writer. Frames larger than
PYVISOR_MAX_MESSAGE (default 256 MiB) are a protocol error when received; an outgoing reply
that would be larger becomes an ``err`` of kind ``serialization`` instead.

Binary values (call args; ok/item values): a JSON frame with a field "b": K is followed by K
attachment frames (same 4-byte length, raw bytes as the body); in the JSON, attachment i is the
placeholder {"__pyvisor_bytes__": i}, and a user dict that has the key "__pyvisor_bytes__" is
escaped as {"__pyvisor_bytes__": "escape", "v": dict}. Attachments arrive as bytes; bytes,
bytearray and memoryview results are sent as attachments. Frames without "b" are unchanged.

Exit codes: 0 after ``exit``, on EOF of the request pipe, or when the reply pipe is closed by
Node (EPIPE); 1 init error, or the parent is already gone at start-up; 2 bad usage (no script
argument, fds 3/4 not open); 3 protocol error (malformed frame from Node) or an unusable reply
pipe; 4 internal error in this runtime (a bug: traceback on stderr).

Threads. Handlers always run on the main thread, so that SIGUSR1 can interrupt them (signal
handlers run there and blocking calls there get EINTR). Someone must keep reading the request
pipe while a handler runs (cancel, credit, ping, EOF); handing every call from a reader thread
to the main thread costs a thread wake-up per call (~20 us), so on Linux the work is split:

  * between calls the main thread itself blocks in read() on the request pipe;
  * when a call starts, the main thread arms an epoll registration of the pipe and releases
    _rlock; a helper thread sleeping in epoll_wait() wakes only if a frame arrives during the
    call, takes _rlock, reads and dispatches it (cancel -> SIGUSR1 to the main thread, credit,
    ping -> pong, call/exit -> queued in _pending, EOF -> os._exit(0));
  * when the call ends the main thread takes _rlock back and disarms.

A call shorter than the time between frames thus costs two epoll_ctl() calls and no thread
wake-up. Elsewhere (or with PYVISOR_READER=thread) the helper thread reads the pipe all the
time and hands calls to the main thread through _pending. Either way everything touching the
read buffer, _pending and the cancel state happens under _rlock, and every write to the reply
pipe happens under _wlock, one writev() per frame.

Start-up cost matters (a worker is measured against a bare `python3 -c`): imports are kept
to builtin or tiny modules (os, sys, _signal, _thread, time, _json, _collections, select,
and _ctypes on Linux for prctl); json, asyncio and traceback are imported only when needed,
and threading, json, signal, fcntl and ctypes not at all on the normal path (they pull in re,
enum, functools, struct or another shared library: 0.3-15 ms depending on the version).
"""

import os
import sys
import _thread
from _collections import deque
from time import perf_counter as _perf_counter
from time import sleep as _sleep

try:  # the `signal` module wraps _signal in enums: importing it costs `import enum` (~2 ms)
    import _signal as signal
except ImportError:  # pragma: no cover
    import signal

import pyvisor as _api

_Cancelled = _api.Cancelled
_PLAIN, _GEN, _ASYNC, _AGEN = _api._PLAIN, _api._GEN, _api._ASYNC, _api._AGEN

_DEFAULT_MAX_MESSAGE = 268435456  # 256 MiB
_READ_SIZE = 65536
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))

_EXIT = object()  # queued in _pending by an `exit` message
_END = object()  # "the stream ended" result of _invoke

# --------------------------------------------------------------------------------------------
# State. The main thread owns the handler; _rlock guards the read buffer, _pending,
# _precancelled and the start of a call; _wlock guards the reply pipe.

_in_fd = -1  # request pipe (moved from fd 3)
_out_fd = -1  # reply pipe (moved from fd 4)
_max_message = _DEFAULT_MAX_MESSAGE
_main_ident = None

_wlock = _thread.allocate_lock()
_rlock = _thread.allocate_lock()
_buf = bytearray()  # bytes read from the request pipe, not yet parsed
_pending = deque()  # calls (and _EXIT) read while the main thread was busy
_precancelled = set()  # ids of queued calls that Node cancelled before they started

_ep = None  # epoll object, or None in thread mode
_ep_modify = None
_EPOLLIN = 1
_armed = False  # epoll mode: the helper thread may read (a call is running)
_main_waiting = False  # thread mode: the main thread waits on _avail for a call
_avail = _thread.allocate_lock()

_current_id = None  # id of the call running on the main thread, else None
_current_msg = None  # its call frame (for pyvisor.current_call())
_cancel_id = None  # set by the helper: raise Cancelled in the main thread for this call
_cancel_sent = False  # SIGUSR1 already sent for the running call (at most one per call)
_defer = False  # the main thread is writing a frame: do not raise Cancelled now

_stream_id = None  # id of the streaming call running now
_credit = 0  # items it may still send
_credit_waiting = False
_credit_lock = _thread.allocate_lock()
_credit_evt = _thread.allocate_lock()  # released by the helper when credit arrives

_forked = False  # True in a child forked by a handler (see _after_fork_in_child)

_held = None  # a request frame with "b" whose attachments are still being read
_held_n = 0  # how many attachments it announced
_held_atts = []  # the attachments read so far
_held_skip = False  # the frame was answered already (RecursionError): drop it with them

_os_read = os.read
_os_writev = os.writev
_IOV_MAX = 512  # parts per writev() (Linux allows 1024)


# --------------------------------------------------------------------------------------------
# JSON, via the C accelerator directly: `import json` costs 10-15 ms on 3.9/3.13 because
# json.decoder imports and compiles `re`. Same behaviour as json.dumps(obj, separators=(",",
# ":"), ensure_ascii=False, allow_nan=False) and json.loads (the full json module is imported
# only for frames the fast scanner does not accept, e.g. with surrounding whitespace).


def _json_default(o):
    raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)


_BKEY = "__pyvisor_bytes__"  # placeholder key of binary values (see Binary values above)
_BKEY_JSON = '"__pyvisor_bytes__"'
_BINARY = (bytes, bytearray, memoryview)
_attach = []  # binary values met by _value_default during one _dumps (main thread only)


def _value_default(o):
    """The encoder's hook for values JSON cannot hold: binary values become placeholders."""
    if isinstance(o, _BINARY):
        _attach.append(o)
        return {_BKEY: len(_attach) - 1}
    raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)


def _reject_constant(name):
    raise ValueError("%s is not allowed in pyvisor frames" % name)


try:
    import _json

    class _ScanContext(object):
        pass

    _ctx = _ScanContext()
    _ctx.strict = True
    _ctx.object_hook = None
    _ctx.object_pairs_hook = None
    _ctx.parse_float = float
    _ctx.parse_int = int
    _ctx.parse_constant = _reject_constant
    _ctx.memo = {}
    _scan_once = _json.make_scanner(_ctx)

    def _new_encoder(markers, ascii_only, default=_json_default):
        return _json.make_encoder(
            markers,
            default,
            _json.encode_basestring_ascii if ascii_only else _json.encode_basestring,
            None,
            ":",
            ",",
            False,
            False,
            False,
        )

    _markers = {}
    _main_encoder = _new_encoder(_markers, False, _value_default)
    if "".join(_main_encoder({"a": [1, 2.5, None, True, "\u00e9"]}, 0)) != (
        '{"a":[1,2.5,null,true,"\u00e9"]}'
    ):
        raise ImportError("unexpected _json behaviour")

    def _dumps(v):
        """Encode v (main thread only: shares one encoder and its circularity markers)."""
        try:
            return "".join(_main_encoder(v, 0))
        except BaseException:
            _markers.clear()  # an aborted encode leaves stale entries behind
            raise

    def _dumps_any(v, ascii_only, default=_json_default):
        """Encode v from any thread."""
        return "".join(_new_encoder({}, ascii_only, default)(v, 0))

    def _loads(s):
        try:
            obj, end = _scan_once(s, 0)
            if end == len(s):
                return obj
        except StopIteration:
            pass
        import json  # whitespace around the value, or a real error: let json say what

        return json.loads(s, parse_constant=_reject_constant)

except (ImportError, AttributeError, TypeError):  # pragma: no cover - CPython has _json
    import json as _jsonmod

    _main_enc = _jsonmod.JSONEncoder(
        separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_value_default
    )

    def _dumps(v):
        return _main_enc.encode(v)

    def _dumps_any(v, ascii_only, default=_json_default):
        return _jsonmod.JSONEncoder(
            separators=(",", ":"), ensure_ascii=ascii_only, allow_nan=False, default=default
        ).encode(v)

    def _loads(s):
        return _jsonmod.loads(s, parse_constant=_reject_constant)


def _dict_body(d):
    """Encode a (non-hot-path) message dict to UTF-8 bytes, from any thread."""
    try:
        return _dumps_any(d, False).encode()
    except UnicodeEncodeError:  # lone surrogates: escape them (\udXXX), still valid JSON
        return _dumps_any(d, True).encode()


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
# Fatal exits. Messages go straight to fd 2 (sys.stderr may have been replaced by user code).


def _die(code, message):
    try:
        os.write(2, ("pyvisor worker %d: %s\n" % (os.getpid(), message)).encode("utf-8", "replace"))
    except BaseException:
        pass
    os._exit(code)


def _protocol_error(message):
    _die(3, "protocol error: %s; exiting" % message)


def _internal_error():
    try:
        import traceback

        text = traceback.format_exc()
    except BaseException:
        text = "(no traceback)"
    _die(4, "internal error in the pyvisor runtime, please report it:\n" + text)


def _reply_pipe_broken(exc):
    if getattr(exc, "errno", None) == 32:  # EPIPE: Node closed its end, it is gone
        os._exit(0)
    _die(3, "cannot write to the reply pipe (%s)" % (exc,))


# --------------------------------------------------------------------------------------------
# Writing: the one framing function for Python -> Node.


def _send(body):
    """Write one frame. body is bytes, a list of bytes parts (large values, no copy), or a
    tuple of parts that already holds the headers (a frame followed by its attachments)."""
    if _forked:
        os._exit(0)
    c = body.__class__
    if c is bytes:
        n = len(body) + 4
        parts = [(n - 4).to_bytes(4, "big"), body]
    elif c is list:
        n = 0
        for p in body:
            n += len(p)
        parts = [n.to_bytes(4, "big")]
        parts.extend(body)
        n += 4
    else:
        parts = body
        n = 0
        for p in body:
            n += len(p)
    with _wlock:
        try:
            if len(parts) <= _IOV_MAX:
                written = _os_writev(_out_fd, parts)
                if written != n:
                    _write_rest(parts, written)
            else:  # many small attachments: writev() takes at most IOV_MAX buffers per call
                for i in range(0, len(parts), _IOV_MAX):
                    batch = parts[i : i + _IOV_MAX]
                    written = _os_writev(_out_fd, batch)
                    if written != sum([len(p) for p in batch]):
                        _write_rest(batch, written)
        except OSError as exc:
            _reply_pipe_broken(exc)


def _write_rest(parts, done):
    # A write to a pipe may be partial (large frame + signal); finish it, still under _wlock.
    for p in parts:
        if done >= len(p):
            done -= len(p)
            continue
        view = memoryview(p)[done:]
        done = 0
        while view:
            k = os.write(_out_fd, view)
            view = view[k:]


def raw_write(data):
    """Testing hook: write raw bytes to the reply pipe, under the write lock."""
    with _wlock:
        view = memoryview(bytes(data))
        while view:
            k = os.write(_out_fd, view)
            view = view[k:]


class _SerializationError(Exception):
    def __init__(self, type_name, message):
        Exception.__init__(self, message)
        self.type_name = type_name
        self.message = message


def _value_body(t, cid, v, name):
    """The body of an ok/item frame carrying v. Raises _SerializationError (or Cancelled,
    which a signal may raise while an item is being encoded)."""
    try:
        s = _dumps(v)
    except _Cancelled:
        del _attach[:]
        raise
    except BaseException as exc:
        del _attach[:]
        raise _SerializationError(
            type(exc).__name__,
            "the %s of handler %r cannot be encoded as JSON: %s"
            % ("result" if t == "ok" else "item", name, _safe_str(exc)),
        )
    if _attach:
        try:
            return _binary_body(t, cid, v, s, name)
        finally:
            del _attach[:]
    if len(s) < 65536:
        try:
            body = ('{"t":"%s","id":%d,"v":%s}' % (t, cid, s)).encode()
        except UnicodeEncodeError:
            body = ('{"t":"%s","id":%d,"v":%s}' % (t, cid, _dumps_any(v, True))).encode()
        if len(body) <= _max_message:
            return body
        size = len(body)
    else:
        try:
            sb = s.encode()
        except UnicodeEncodeError:
            sb = _dumps_any(v, True).encode()
        del s
        head = ('{"t":"%s","id":%d,"v":' % (t, cid)).encode()
        size = len(head) + len(sb) + 1
        if size <= _max_message:
            return [head, sb, b"}"]
    raise _SerializationError(
        "ValueError",
        "the %s of handler %r is too large: its frame would be %d bytes, the limit is %d "
        "(PYVISOR_MAX_MESSAGE)" % ("result" if t == "ok" else "item", name, size, _max_message),
    )


_INLINE = 16384  # attachments smaller than this are copied next to their header (fewer iovecs)


def _binary_body(t, cid, v, s, name):
    """The frames of an ok/item value holding binary values (_attach, filled by _dumps): a
    tuple of parts (headers included) for _send. Raises _SerializationError."""
    what = "result" if t == "ok" else "item"
    atts = _attach
    try:
        if s.count(_BKEY_JSON) != len(atts):
            # The key (or a string equal to it) occurs in the value itself: escape user dicts
            # that have the key, so Node cannot mistake them for placeholders.
            atts = []
            v = _escape(v, atts, set())
            s = _dumps_any(v, False)
        try:
            sb = s.encode()
        except UnicodeEncodeError:
            del _attach[:]
            sb = _dumps_any(v, True, _value_default).encode()
        del s
        head = ('{"t":"%s","id":%d,"v":' % (t, cid)).encode()
        tail = b',"b":%d}' % len(atts)
        size = len(head) + len(sb) + len(tail)
        if size > _max_message:
            raise _SerializationError(
                "ValueError",
                "the %s of handler %r is too large: its frame would be %d bytes, the limit is %d "
                "(PYVISOR_MAX_MESSAGE)" % (what, name, size, _max_message),
            )
        first = bytearray(size.to_bytes(4, "big"))
        first += head
        if len(sb) < _INLINE:
            first += sb
            first += tail
            parts = []
            cur = first
        else:
            parts = [first, sb]
            cur = bytearray(tail)
        for a in atts:
            if a.__class__ is not bytes and a.__class__ is not bytearray:
                a = _flat(a)
            n = len(a)
            if n > _max_message:
                raise _SerializationError(
                    "ValueError",
                    "the %s of handler %r holds a %d-byte binary value, over the limit of %d "
                    "bytes (PYVISOR_MAX_MESSAGE)" % (what, name, n, _max_message),
                )
            cur += n.to_bytes(4, "big")
            if n < _INLINE:
                cur += a
            else:
                parts.append(cur)
                parts.append(a)
                cur = bytearray()
        if cur:
            parts.append(cur)
        return tuple(parts)
    except (_SerializationError, _Cancelled):
        raise
    except BaseException as exc:
        raise _SerializationError(
            type(exc).__name__,
            "the %s of handler %r cannot be encoded: %s" % (what, name, _safe_str(exc)),
        )


def _flat(a):
    """A bytes-like object (memoryview, bytes/bytearray subclass) as a flat buffer whose len()
    is its size in bytes."""
    m = memoryview(a)
    if m.ndim == 1 and m.itemsize == 1 and m.c_contiguous:
        return m
    if m.c_contiguous:
        try:
            return m.cast("B")
        except (TypeError, ValueError):
            pass
    return m.tobytes()


def _escape(v, atts, active):
    """A copy of v ready for JSON: binary values become placeholders (appended to atts) and
    dicts that have the placeholder key are escaped. Only used when the key occurs in v."""
    if isinstance(v, _BINARY):
        atts.append(v)
        return {_BKEY: len(atts) - 1}
    if isinstance(v, dict):
        i = id(v)
        if i in active:
            raise ValueError("Circular reference detected")
        active.add(i)
        out = {}
        for k, x in v.items():
            out[k] = _escape(x, atts, active)
        active.discard(i)
        return {_BKEY: "escape", "v": out} if _BKEY in v else out
    if isinstance(v, (list, tuple)):
        i = id(v)
        if i in active:
            raise ValueError("Circular reference detected")
        active.add(i)
        out = [_escape(x, atts, active) for x in v]
        active.discard(i)
        return out
    return v


def _safe_str(exc):
    try:
        return str(exc)
    except BaseException:
        return "<exception str() failed>"


def _clip(text):
    limit = min(1 << 20, max(256, _max_message // 16))
    if len(text) > limit:
        return text[:limit] + "\n... [truncated %d characters]" % (len(text) - limit)
    return text


def _format_traceback(exc):
    """The traceback as Python prints it, minus this runtime's and importlib's frames."""
    try:
        import traceback

        te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
        kept = [
            f
            for f in te.stack
            if not (
                f.filename.startswith(_PKG_DIR + os.sep)
                or f.filename.startswith("<frozen importlib")
            )
        ]
        if len(kept) != len(te.stack):
            te.stack = traceback.StackSummary.from_list(kept)
        return "".join(te.format())
    except BaseException:
        return "%s: %s\n" % (type(exc).__name__, _safe_str(exc))


def _err_body(cid, kind, type_name, message, tb):
    d = {
        "t": "err",
        "id": cid,
        "kind": kind,
        "type": type_name,
        "message": _clip(message),
        "traceback": _clip(tb),
    }
    body = _dict_body(d)
    if len(body) > _max_message:  # tiny PYVISOR_MAX_MESSAGE: drop the traceback, then clip
        d["traceback"] = ""
        d["message"] = message[: max(0, _max_message - len(body) + len(message) - len(tb) - 32)]
        body = _dict_body(d)
    return body


def _exception_body(cid, exc):
    if isinstance(exc, _SerializationError):
        return _err_body(cid, "serialization", exc.type_name, exc.message, "")
    kind = "cancelled" if isinstance(exc, _Cancelled) else "python"
    return _err_body(cid, kind, type(exc).__name__, _safe_str(exc), _format_traceback(exc))


def _unknown_handler_body(cid, name):
    known = ", ".join(sorted(_api._handlers)) or "none are registered"
    return _err_body(
        cid,
        "unknown_handler",
        "UnknownHandler",
        "no handler named %r in this worker (known handlers: %s)" % (name, known),
        "",
    )


# --------------------------------------------------------------------------------------------
# Reading: the one framing function for Node -> Python. Callers hold _rlock (thread mode:
# only the helper thread reads).


def _fill():
    """One read() from the request pipe into _buf. EOF or a read error: Node is gone."""
    try:
        data = _os_read(_in_fd, _READ_SIZE)
    except OSError:
        os._exit(0)
    if not data:
        if _buf or _held is not None:
            _protocol_error("request pipe closed in the middle of a frame")
        os._exit(0)
    _buf.extend(data)


def _guarded_modify(modify):
    """epoll_ctl on the request pipe fails (EPERM, EBADF) when a handler replaced or closed
    that descriptor: the pipe is unusable, which is a broken pipe (exit 3), not a runtime bug."""

    def ep_modify(fd, events):
        try:
            modify(fd, events)
        except OSError as exc:
            _die(3, "the request pipe became unusable (did a handler close or dup2 over it?): %s" % exc)

    return ep_modify


def _frame_length(b, what):
    """The body length announced by the header at the start of b (None: not all 4 bytes yet)."""
    if len(b) < 4:
        return None
    n = int.from_bytes(b[:4], "big")
    if n > _max_message:
        _protocol_error(
            "incoming %s announces %d bytes, the limit is %d (PYVISOR_MAX_MESSAGE)"
            % (what, n, _max_message)
        )
    return n


def _take_frame():
    """Remove one complete message (a frame, with its attachments if it announces any) from
    _buf and return its message dict, or None."""
    global _held, _held_n, _held_atts, _held_skip
    if _held is not None:
        return _take_attachments()
    b = _buf
    have = len(b)
    n = _frame_length(b, "frame")
    if n is None:
        return None
    end = n + 4
    if have < end:
        return None
    body = b[4:end]
    del b[:end]
    try:
        msg = _loads(body.decode("utf-8"))
    except RecursionError:
        # Valid JSON nested deeper than Python's decoder goes (~1000 levels): ordinary user input,
        # not a broken peer. Node writes calls as {"t":"call","id":N,...}: answer that call.
        cid = _call_id_prefix(body)
        if cid is None:
            _protocol_error("frame body is nested too deeply to decode")
        _send(
            _err_body(
                cid,
                "serialization",
                "RecursionError",
                "the arguments are nested too deeply for Python's JSON decoder",
                "",
            )
        )
        k = _attachment_count_suffix(body)
        if k:  # its attachments follow: read and drop them
            _held, _held_n, _held_atts, _held_skip = _SKIP, k, [], True
            return _take_attachments()
        return _SKIP
    except Exception as exc:
        _protocol_error("frame body is not UTF-8 JSON (%s: %s)" % (type(exc).__name__, exc))
    if msg.__class__ is not dict:
        _protocol_error("frame body is not a JSON object")
    if "b" in msg:
        k = msg["b"]
        if k.__class__ is not int or k < 1 or msg.get("t") != "call":
            _protocol_error("'b' (attachment count) must be an integer >= 1, on a 'call' only")
        _held, _held_n, _held_atts, _held_skip = msg, k, [], False
        return _take_attachments()
    return msg


_BIG_READ = 65536  # an attachment at least this large is read straight into its own buffer


def _take_attachments():
    """Read the attachments of the held frame; return the frame once all are in, else None."""
    global _held, _held_atts
    atts = _held_atts
    b = _buf
    while len(atts) < _held_n:
        have = len(b)
        n = _frame_length(b, "attachment")
        if n is None:
            return None
        end = n + 4
        if have >= end:
            with memoryview(b) as m:
                data = bytes(m[4:end])
            del b[:end]
        elif n >= _BIG_READ:
            data = _read_big(n)
        else:
            return None
        atts.append(data)
    msg = _held
    _held = None
    _held_atts = []
    if _held_skip:
        return _SKIP
    _restore(msg.get("args"), atts)
    return msg


_SCRATCH_MAX = 1 << 20  # attachments up to this size are read into one reused buffer
_scratch = bytearray()


def _read_big(n):
    """Read an n-byte attachment whose header is at the start of _buf, straight into one
    buffer (blocking until it is complete: the rest of it is on its way), as bytes."""
    global _scratch
    if n <= _SCRATCH_MAX:
        # Reused: a fresh buffer per call costs page faults (malloc trims and regrows the heap).
        if len(_scratch) < n:
            _scratch = bytearray(n)
        out = _scratch
    else:
        out = bytearray(n)
    with memoryview(out) as dst:
        have = len(_buf) - 4
        with memoryview(_buf) as src:
            dst[:have] = src[4:]
        del _buf[:]
        pos = have
        readv = os.readv
        while pos < n:
            try:
                k = readv(_in_fd, [dst[pos:n]])
            except OSError:
                os._exit(0)
            if not k:
                _protocol_error("request pipe closed in the middle of a frame")
            pos += k
        return bytes(dst[:n]) if out is _scratch else bytes(out)


def _restore(args, atts):
    """Replace the placeholders in args (in place) by their attachments; unescape dicts."""
    if args.__class__ is not list:
        return  # _dispatch answers bad_request
    n = len(atts)
    used = bytearray(n)
    count = 0
    stack = [args]
    pop = stack.pop
    push = stack.append
    while stack:
        c = pop()
        for k, x in (enumerate(c) if c.__class__ is list else c.items()):
            xc = x.__class__
            if xc is dict:
                if _BKEY in x:
                    i = x[_BKEY]
                    if i.__class__ is int and len(x) == 1 and 0 <= i < n and not used[i]:
                        used[i] = 1
                        count += 1
                        c[k] = atts[i]
                        continue
                    inner = x.get("v")
                    if i == "escape" and len(x) == 2 and inner.__class__ is dict:
                        c[k] = inner
                        push(inner)  # its values, not its own keys
                        continue
                    _protocol_error("bad binary placeholder %r" % (x,))
                push(x)
            elif xc is list:
                push(x)
    if count != n:
        _protocol_error("%d attachments announced, %d referenced" % (n, count))


def _attachment_count_suffix(body):
    """The "b" count of a call frame Node wrote (it puts "b" last), or 0."""
    tail = bytes(body[-24:])
    i = tail.rfind(b',"b":')
    if i < 0 or not tail.endswith(b"}"):
        return 0
    digits = tail[i + 5 : -1]
    return int(digits) if digits.isdigit() else 0


_SKIP = {"t": "_skip"}  # a frame already answered by _take_frame


def _call_id_prefix(body):
    prefix = b'{"t":"call","id":'
    if not body.startswith(prefix):
        return None
    digits = bytes(body[len(prefix) : len(prefix) + 20]).split(b",", 1)[0]
    return int(digits) if digits.isdigit() else None


def _require_int(msg, field):
    v = msg.get(field)
    if v.__class__ is not int:
        _protocol_error("%r message without an integer %r field" % (msg.get("t"), field))
    return v


def _dispatch(msg):
    """Handle one request frame (caller holds _rlock). Returns a validated call or _EXIT for
    the caller to run or queue; None when the frame was handled here."""
    global _cancel_id, _cancel_sent, _credit, _credit_waiting
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
        if problem is None:
            return msg
        _send(_err_body(cid, "bad_request", "BadRequest", "malformed call: " + problem, ""))
        return None
    if t == "credit":
        cid = _require_int(msg, "id")
        n = _require_int(msg, "n")
        if cid == _stream_id and n > 0:
            with _credit_lock:
                _credit += n
                if _credit_waiting:
                    _credit_waiting = False
                    _credit_evt.release()
        return None
    if t == "cancel":
        cid = _require_int(msg, "id")
        if cid == _current_id:
            if not _cancel_sent:
                _cancel_sent = True
                _cancel_id = cid
                signal.pthread_kill(_main_ident, signal.SIGUSR1)
        else:
            for queued in _pending:
                if queued is not _EXIT and queued["id"] == cid:
                    _precancelled.add(cid)
                    break
        return None
    if t == "ping":
        _send(b'{"t":"pong","id":%d}' % _require_int(msg, "id"))
        return None
    if t == "exit":
        return _EXIT
    if msg is _SKIP:
        return None
    _protocol_error("unknown message type %r" % (t,))


# --------------------------------------------------------------------------------------------
# The helper thread.


def _helper_epoll():
    try:
        poll = _ep.poll
        while True:
            poll()  # sleeps until a frame arrives while armed (or the pipe hangs up)
            with _rlock:
                # Holding _rlock means the main thread is inside a call (or init); it may
                # have consumed the data that woke us before it got here, so check again.
                if _armed and poll(0):
                    _fill()
                    while True:
                        msg = _take_frame()
                        if msg is None:
                            break
                        r = _dispatch(msg)
                        if r is not None:
                            _pending.append(r)
    except BaseException:
        _internal_error()


def _helper_thread():
    global _main_waiting
    try:
        while True:
            _fill()  # only this thread touches _buf in thread mode
            with _rlock:
                queued = False
                while True:
                    msg = _take_frame()
                    if msg is None:
                        break
                    r = _dispatch(msg)
                    if r is not None:
                        _pending.append(r)
                        queued = True
                if queued and _main_waiting:
                    _main_waiting = False
                    _avail.release()
    except BaseException:
        _internal_error()


def _watchdog(parent):
    while True:
        _sleep(0.25)
        if os.getppid() != parent:
            os._exit(1)


# --------------------------------------------------------------------------------------------
# Cancellation.


def _on_sigusr1(signum, frame):
    # Runs on the main thread between bytecodes (or when a blocking call there gets EINTR).
    # Raise only if the helper asked for it *for the call running now*: a late signal (its call
    # already finished) must never hit the next call or idle code.
    global _cancel_id
    cid = _cancel_id
    if cid is not None and cid == _current_id and not _defer:
        _cancel_id = None
        raise _Cancelled("call %d was cancelled" % cid)


def _take_credit():
    """Wait until the running stream may send one more item, and take that credit."""
    global _credit, _credit_waiting
    while True:
        with _credit_lock:
            if _credit > 0:
                _credit -= 1
                return
            _credit_evt.acquire(False)  # make sure the next acquire() really waits
            _credit_waiting = True
        # Lock waits are interrupted by signals on POSIX, so a cancel gets through here.
        _credit_evt.acquire()


def _send_item(body):
    global _defer, _cancel_id
    _defer = True  # never interrupt a frame half-written
    try:
        _send(body)
    finally:
        _defer = False
    cid = _cancel_id
    if cid is not None and cid == _current_id:  # a cancel arrived during the write
        _cancel_id = None
        raise _Cancelled("call %d was cancelled" % cid)


# --------------------------------------------------------------------------------------------
# Running handlers.


def _run_coroutine(coro):
    import asyncio

    return asyncio.run(coro)


def _iter_async_gen(agen):
    """Drive an async generator from synchronous code, on one event loop for the whole call.
    An exception thrown in at our yield (Cancelled) is passed on to the async generator's."""
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        anext_ = agen.__anext__
        thrown = None
        while True:
            try:
                if thrown is None:
                    item = loop.run_until_complete(anext_())
                else:
                    exc, thrown = thrown, None
                    item = loop.run_until_complete(agen.athrow(exc))
            except StopAsyncIteration:
                return
            try:
                yield item
            except GeneratorExit:
                raise
            except BaseException as exc:
                thrown = exc
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(agen.aclose())
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception:
            pass
        finally:
            loop.close()


def _stream_items(cid, name, fn, kind, args):
    it = fn(*args)
    if kind == _AGEN:
        it = _iter_async_gen(it)
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


def _invoke(cid, name, fn, kind, args, stream):
    """Run one call on the main thread; return its terminal reply body. Never raises."""
    global _current_id
    try:
        try:
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
                    result = list(_iter_async_gen(result))
            elif kind == _GEN:
                result = list(fn(*args))
            elif kind == _ASYNC:
                result = _run_coroutine(fn(*args))
            else:
                result = list(_iter_async_gen(fn(*args)))
        finally:
            _current_id = None  # from here on no Cancelled can be raised for this call
    except BaseException as exc:
        # Also catches a Cancelled that raced in just before the finally above completed.
        _current_id = None
        return _exception_body(cid, exc)
    if result is _END:
        return b'{"t":"end","id":%d}' % cid
    try:
        return _value_body("ok", cid, result, name)
    except BaseException as exc:
        return _exception_body(cid, exc)


def _read_call():
    """Epoll mode, main thread idle (holding _rlock): read until a call or exit arrives."""
    while True:
        msg = _take_frame()
        if msg is None:
            _fill()
            continue
        r = _dispatch(msg)
        if r is not None:
            return r


def _wait_call():
    """Thread mode (holding _rlock): wait until the helper queues a call or exit."""
    global _main_waiting
    while not _pending:
        _avail.acquire(False)
        _main_waiting = True
        _rlock.release()
        _avail.acquire()
        _rlock.acquire()
    return _pending.popleft()


def _serve():
    """The main loop. Entered and left holding _rlock. Returns when `exit` is received."""
    global _current_id, _current_msg, _cancel_id, _cancel_sent, _stream_id, _credit, _armed
    handlers = _api._handlers
    epoll = _ep is not None
    ep_modify = _ep_modify
    in_fd = _in_fd
    while True:
        if _pending:
            msg = _pending.popleft()
        elif epoll:
            msg = _read_call()
        else:
            msg = _wait_call()
        if msg is _EXIT:
            return
        cid = msg["id"]
        if epoll and len(_buf) >= 4:
            # Frames that came in the same read() as this call sit in _buf, where the epoll
            # helper cannot see them: a cancel right behind its call would be lost. Take them now.
            while True:
                m = _take_frame()
                if m is None:
                    break
                if m.get("t") == "cancel" and m.get("id") == cid:
                    _precancelled.add(cid)
                    continue
                r = _dispatch(m)
                if r is not None:
                    _pending.append(r)
        if _precancelled and cid in _precancelled:
            _precancelled.discard(cid)
            _send(
                _err_body(
                    cid, "cancelled", "Cancelled", "call %d was cancelled before it started" % cid, ""
                )
            )
            continue
        name = msg["fn"]
        entry = handlers.get(name)
        if entry is None:
            _send(_unknown_handler_body(cid, name))
            continue
        fn, kind = entry
        stream = msg.get("stream") is True
        if stream and kind != _GEN and kind != _AGEN:
            _send(
                _err_body(
                    cid,
                    "python",
                    "TypeError",
                    "handler %r is not a generator function, so it cannot be streamed; "
                    "use call() instead of stream()" % name,
                    "",
                )
            )
            continue
        # Start the call. The helper only looks at this state under _rlock, which we hold.
        _cancel_id = None
        _cancel_sent = False
        _current_msg = msg
        if stream:
            _stream_id = cid
            _credit = msg["credit"]
        _current_id = cid
        if epoll:
            _armed = True
            ep_modify(in_fd, _EPOLLIN)
        _rlock.release()
        reply = _invoke(cid, name, fn, kind, msg["args"], stream)
        if _forked:  # a child forked by the handler returned here: it is not the worker
            os._exit(0)
        _rlock.acquire()
        if epoll:
            _armed = False
            ep_modify(in_fd, 0)
        _current_msg = None
        _stream_id = None
        # Sent after disarming, so the next call is read by this thread, not the helper, and a
        # handler that broke the request pipe fails its own call (the disarm dies with exit 3
        # before the reply), not the next one. Sending first would save one epoll_ctl (~2 us).
        _send(reply)


# --------------------------------------------------------------------------------------------
# Start-up.


def _move_fd(fd, lowest):
    """Duplicate fd onto the lowest free descriptor >= lowest, close-on-exec, like
    fcntl(fd, F_DUPFD_CLOEXEC, lowest) (without loading the fcntl extension module)."""
    target = lowest
    while True:
        try:
            os.fstat(target)
        except OSError:  # EBADF: free (we are single-threaded here, nobody can take it)
            break
        target += 1
    os.dup2(fd, target, inheritable=False)
    return target


def _setup_fds():
    global _in_fd, _out_fd
    try:
        os.fstat(3)
        os.fstat(4)
    except OSError as exc:
        _die(2, "fds 3 and 4 must be the request and reply pipes (%s); this program is "
             "started by pyvisor's Node side" % exc)
    _in_fd = _move_fd(3, 100)
    _out_fd = _move_fd(4, 100)
    # Park /dev/null on 3 and 4 (close-on-exec) instead of leaving them free: a handler
    # that writes to "fd 4" or dup2()s over 3/4 hits /dev/null, and a file opened later by
    # user code never gets one of those numbers, so a stray write cannot corrupt it.
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 3, inheritable=False)
    os.dup2(null, 4, inheritable=False)
    if null not in (3, 4):
        os.close(null)


def _after_fork_in_child():
    """In a child forked by a handler (os.fork, multiprocessing's fork start method): park
    /dev/null on the protocol pipes so the child neither keeps them open (Node would not see
    EOF when the worker dies) nor writes stray frames. If the child ever returns into the
    runtime, it exits (code 0) instead of replying: only the worker talks to Node."""
    global _forked
    _forked = True
    try:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, _in_fd, inheritable=False)
        os.dup2(null, _out_fd, inheritable=False)
        os.close(null)
    except OSError:
        pass


def _set_pdeathsig():
    """prctl(PR_SET_PDEATHSIG, SIGKILL). Uses _ctypes directly: ~1 ms instead of ~3.5 ms for
    `import ctypes`; falls back to ctypes if the private API ever changes."""
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
    try:
        return prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # PR_SET_PDEATHSIG = 1
    except Exception:
        return False


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


def _read_max_message():
    global _max_message
    raw = os.environ.get("PYVISOR_MAX_MESSAGE")
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if not 16 <= value <= 0xFFFFFFFF:
            _die(2, "PYVISOR_MAX_MESSAGE=%r is not an integer between 16 and 4294967295" % raw)
        _max_message = value


def _import_script(path):
    try:  # the frozen bootstrap modules are loaded already; `import importlib` is not free
        from _frozen_importlib import module_from_spec
        from _frozen_importlib_external import SourceFileLoader, spec_from_file_location
    except ImportError:  # pragma: no cover
        from importlib.machinery import SourceFileLoader
        from importlib.util import module_from_spec, spec_from_file_location
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
    spec = spec_from_file_location(name, path, loader=SourceFileLoader(name, path))
    module = module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _init_failed(exc):
    _send(
        _dict_body(
            {
                "t": "init_error",
                "type": type(exc).__name__,
                "message": _clip(_safe_str(exc)),
                "traceback": _clip(_format_traceback(exc)),
            }
        )
    )
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(1)  # not sys.exit: a non-daemon thread started by the script must not hang us


def _initialize(script):
    t0 = _perf_counter()
    try:
        _import_script(script)
        for fn in list(_api._init_funcs):
            r = fn()
            if r.__class__ is _CoroutineType:
                _run_coroutine(r)
    except BaseException as exc:
        _init_failed(exc)
    return (_perf_counter() - t0) * 1000.0


def main(argv, drop_path0=False):
    """Run the worker: ``python3 -u -m pyvisor /abs/path/to/handlers.py [args...]``."""
    try:
        _main(argv, drop_path0)
    except SystemExit:
        raise
    except BaseException:
        _internal_error()
    raise SystemExit(0)


def _main(argv, drop_path0):
    global _main_ident, _ep, _ep_modify, _EPOLLIN, _armed
    if not argv:
        _die(2, "usage: python3 -u -m pyvisor /path/to/handlers.py")
    _main_ident = _thread.get_ident()
    _setup_fds()
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
    _read_max_message()
    _guard_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Node decides when workers stop
    signal.signal(signal.SIGUSR1, _on_sigusr1)

    if os.environ.get("PYVISOR_READER") != "thread":
        try:
            import select

            ep = select.epoll()
            ep.register(_in_fd, 0)
            _ep, _EPOLLIN = ep, select.EPOLLIN
            _ep_modify = _guarded_modify(ep.modify)
        except (ImportError, AttributeError, OSError):
            _ep = None
    _rlock.acquire()
    _thread.start_new_thread(_helper_epoll if _ep is not None else _helper_thread, ())

    script = os.path.abspath(argv[0])
    sys.argv = [script] + list(argv[1:])
    if drop_path0 and sys.path:
        del sys.path[0]  # the implicit cwd entry of -m: behave like `python3 handlers.py`
    sys.path.insert(0, os.path.dirname(script))

    # During init the helper answers ping, notices EOF and queues early messages.
    if _ep is not None:
        _armed = True
        _ep_modify(_in_fd, _EPOLLIN)
    _rlock.release()
    init_ms = _initialize(script)
    _rlock.acquire()
    if _ep is not None:
        _armed = False
        _ep_modify(_in_fd, 0)

    v = sys.version_info
    _send(
        _dict_body(
            {
                "t": "ready",
                "pid": os.getpid(),
                "version": "%d.%d.%d" % (v[0], v[1], v[2]),
                "executable": sys.executable,
                "handlers": [
                    {"name": name, "stream": kind == _GEN or kind == _AGEN}
                    for name, (fn, kind) in _api._handlers.items()
                ],
                "initMs": round(init_ms, 3),
            }
        )
    )
    _serve()

"""The protocol pipes: setting them up, and framing on them (docs/protocol.md).

Framing: a 4-byte unsigned big-endian length N, then N bytes of UTF-8 JSON. _take_frame() is the
only reader of frames and _send() the only writer. Frames larger than PYVISOR_MAX_MESSAGE (default
256 MiB) are a protocol error when received; an outgoing reply that would be larger becomes an
``err`` of kind ``serialization`` instead (see _codec.py). A frame with "b": K is followed by K
attachment frames (K may be 0), read here; _codec._restore then puts the values of its
placeholders in place.
"""

import os

from ._codec import _err_body, _loads, _restore
from ._fatal import _die, _protocol_error, _reply_pipe_broken
from ._state import SKIP as _SKIP
from ._state import state as _st

_READ_SIZE = 65536
_IOV_MAX = 512  # parts per writev() (Linux allows 1024)
_BIG_READ = 65536  # an attachment at least this large is read straight into its own buffer
_SCRATCH_MAX = 1 << 20  # attachments up to this size are read into one reused buffer

_os_read = os.read
_os_writev = os.writev

# Never replaced, only mutated: bound once so the per-call path pays one global lookup, as it
# did when these were module globals of _runtime.py.
_buf = _st.buf
_wlock = _st.wlock


# --------------------------------------------------------------------------------------------
# Writing: the one framing function for Python -> Node. Any thread, under _wlock.


def _send(body):
    """Write one frame. body is bytes, a list of bytes parts (large values, no copy), or a
    tuple of parts that already holds the headers (a frame followed by its attachments)."""
    if _st.forked:
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
            out_fd = _st.out_fd
            if len(parts) <= _IOV_MAX:
                written = _os_writev(out_fd, parts)
                if written != n:
                    _write_rest(parts, written)
            else:  # many small attachments: writev() takes at most IOV_MAX buffers per call
                for i in range(0, len(parts), _IOV_MAX):
                    batch = parts[i : i + _IOV_MAX]
                    written = _os_writev(out_fd, batch)
                    if written != sum([len(p) for p in batch]):
                        _write_rest(batch, written)
        except OSError as exc:
            _reply_pipe_broken(exc)


def _write_all(view):
    """os.write until all of view is written (the caller holds _wlock)."""
    out_fd = _st.out_fd
    while view:
        k = os.write(out_fd, view)
        view = view[k:]


def _write_rest(parts, done):
    # A write to a pipe may be partial (large frame + signal); finish it, still under _wlock.
    for p in parts:
        if done >= len(p):
            done -= len(p)
            continue
        _write_all(memoryview(p)[done:])
        done = 0


def raw_write(data):
    """Testing hook: write raw bytes to the reply pipe, under the write lock."""
    with _wlock:
        _write_all(memoryview(bytes(data)))


# --------------------------------------------------------------------------------------------
# Reading: the one framing function for Node -> Python. Callers hold rlock (thread mode:
# only the helper thread reads).


def _fill():
    """One read() from the request pipe into _buf. EOF or a read error: Node is gone."""
    try:
        data = _os_read(_st.in_fd, _READ_SIZE)
    except OSError:
        os._exit(0)
    if not data:
        if _buf or _st.held is not None:
            _protocol_error("request pipe closed in the middle of a frame")
        os._exit(0)
    _buf.extend(data)


def _frame_length(b, what):
    """The body length announced by the header at the start of b (None: not all 4 bytes yet)."""
    if len(b) < 4:
        return None
    n = int.from_bytes(b[:4], "big")
    if n > _st.max_message:
        _protocol_error(
            "incoming %s announces %d bytes, the limit is %d (PYVISOR_MAX_MESSAGE)"
            % (what, n, _st.max_message)
        )
    return n


def _hold(msg, k, skip):
    """Keep msg until its k attachments are read (by this and later _take_frame calls)."""
    st = _st
    st.held, st.held_n, st.held_atts, st.held_skip = msg, k, [], skip
    return _take_attachments()


def _take_frame():
    """Remove one complete message (a frame, with its attachments if it announces any) from
    _buf and return its message dict, or None."""
    if _st.held is not None:
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
            return _hold(_SKIP, k, True)
        return _SKIP
    except Exception as exc:
        _protocol_error("frame body is not UTF-8 JSON (%s: %s)" % (type(exc).__name__, exc))
    if msg.__class__ is not dict:
        _protocol_error("frame body is not a JSON object")
    if "b" in msg:
        k = msg["b"]
        if k.__class__ is not int or k < 0 or msg.get("t") != "call":
            _protocol_error("'b' (attachment count) must be an integer >= 0, on a 'call' only")
        if not k:  # placeholders without attachments (a NaN...): nothing more to read
            _restore(msg.get("args"), [])
            return msg
        return _hold(msg, k, False)
    return msg


def _take_attachments():
    """Read the attachments of the held frame; return the frame once all are in, else None."""
    st = _st
    atts = st.held_atts
    b = _buf
    while len(atts) < st.held_n:
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
    msg = st.held
    st.held = None
    st.held_atts = []
    if st.held_skip:
        return _SKIP
    _restore(msg.get("args"), atts)
    return msg


def _read_big(n):
    """Read an n-byte attachment whose header is at the start of _buf, straight into one
    buffer (blocking until it is complete: the rest of it is on its way), as bytes."""
    st = _st
    scratch = st.scratch
    if n <= _SCRATCH_MAX:
        # Reused: a fresh buffer per call costs page faults (malloc trims and regrows the heap).
        if len(scratch) < n:
            scratch = st.scratch = bytearray(n)
        out = scratch
    else:
        out = bytearray(n)
    with memoryview(out) as dst:
        have = len(_buf) - 4
        with memoryview(_buf) as src:
            dst[:have] = src[4:]
        del _buf[:]
        pos = have
        readv = os.readv
        in_fd = st.in_fd
        while pos < n:
            try:
                k = readv(in_fd, [dst[pos:n]])
            except OSError:
                os._exit(0)
            if not k:
                _protocol_error("request pipe closed in the middle of a frame")
            pos += k
        return bytes(dst[:n]) if out is scratch else bytes(out)


def _attachment_count_suffix(body):
    """The "b" count of a call frame Node wrote (it puts "b" last), or 0."""
    tail = bytes(body[-24:])
    i = tail.rfind(b',"b":')
    if i < 0 or not tail.endswith(b"}"):
        return 0
    digits = tail[i + 5 : -1]
    return int(digits) if digits.isdigit() else 0


def _call_id_prefix(body):
    prefix = b'{"t":"call","id":'
    if not body.startswith(prefix):
        return None
    digits = bytes(body[len(prefix) : len(prefix) + 20]).split(b",", 1)[0]
    return int(digits) if digits.isdigit() else None


# --------------------------------------------------------------------------------------------
# Start-up: the pipes arrive on fds 3 and 4.


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
    try:
        os.fstat(3)
        os.fstat(4)
    except OSError as exc:
        _die(2, "fds 3 and 4 must be the request and reply pipes (%s); this program is "
             "started by pyvisor's Node side" % exc)
    _st.in_fd = _move_fd(3, 100)
    _st.out_fd = _move_fd(4, 100)
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
    _st.forked = True
    try:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, _st.in_fd, inheritable=False)
        os.dup2(null, _st.out_fd, inheritable=False)
        os.close(null)
    except OSError:
        pass

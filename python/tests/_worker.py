"""A tiny stand-in for pyvisor's Node side, for the Python runtime tests (stdlib only).

Spawns ``python -u -m pyvisor <script>`` with the request pipe on fd 3 and the reply pipe on
fd 4, and speaks the frame protocol of docs/protocol.md.
"""

import array
import fcntl
import json
import os
import select
import subprocess
import sys
import termios
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)
REPO = os.path.dirname(PYTHON_DIR)
FIXTURES = os.path.join(REPO, "test", "fixtures")
PYTHON = os.environ.get("PYVISOR_TEST_PYTHON") or sys.executable


def fixture(name):
    return os.path.join(FIXTURES, name)


def frame(obj):
    body = json.dumps(obj, separators=(",", ":")).encode()
    return len(body).to_bytes(4, "big") + body


BKEY = "__pyvisor_bytes__"
FLOAT_NAMES = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
ITEMSIZE = {"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
            "int64": 8, "uint64": 8, "float32": 4, "float64": 8}


class NDArray(tuple):
    """An ndarray placeholder with its data, as the harness sends and receives it (no numpy):
    NDArray(dtype, shape, data) with data the little-endian C-order element bytes."""

    __slots__ = ()

    def __new__(cls, dtype, shape, data):
        return tuple.__new__(cls, (dtype, list(shape), bytes(data)))

    dtype = property(lambda self: self[0])
    shape = property(lambda self: self[1])
    data = property(lambda self: self[2])

    def __repr__(self):
        return "NDArray(%r, %r, %r)" % tuple(self)


def _float_name(x):
    return "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")


def binary_frames(obj):
    """A message with bytes values, NDArray values or non-finite floats anywhere in it, as Node
    writes it: the JSON frame with placeholders and "b" last (0 if only floats need one), then
    one attachment frame per bytes value or array."""
    atts = []
    placeholders = [0]

    def walk(v):
        if isinstance(v, NDArray):
            atts.append(v.data)
            return {BKEY: "ndarray", "dtype": v.dtype, "shape": v.shape, "data": len(atts) - 1}
        if isinstance(v, (bytes, bytearray, memoryview)):
            atts.append(bytes(v))
            return {BKEY: len(atts) - 1}
        if isinstance(v, float) and v - v != 0.0:
            placeholders[0] += 1
            return {BKEY: "float", "v": _float_name(v)}
        if isinstance(v, dict):
            out = {k: walk(x) for k, x in v.items()}
            return {BKEY: "escape", "v": out} if BKEY in v else out
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    msg = walk(obj)
    if not atts and not placeholders[0]:
        return frame(obj)
    msg["b"] = len(atts)
    return frame(msg) + b"".join(len(a).to_bytes(4, "big") + a for a in atts)


def restore(v, atts, used):
    """Substitute values for placeholders (the Node side's decoding), checking them: bytes,
    float('nan')/inf/-inf, and NDArray(dtype, shape, data) for arrays."""
    if isinstance(v, list):
        return [restore(x, atts, used) for x in v]
    if isinstance(v, dict):
        if BKEY in v:
            i = v[BKEY]
            if isinstance(i, int):
                assert len(v) == 1 and 0 <= i < len(atts) and i not in used, v
                used.add(i)
                return atts[i]
            if i == "float":
                assert set(v) == {BKEY, "v"} and v["v"] in FLOAT_NAMES, v
                return FLOAT_NAMES[v["v"]]
            if i == "ndarray":
                assert set(v) == {BKEY, "dtype", "shape", "data"}, v
                j, shape = v["data"], v["shape"]
                assert isinstance(j, int) and 0 <= j < len(atts) and j not in used, v
                assert isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape), v
                n = ITEMSIZE[v["dtype"]]
                for d in shape:
                    n *= d
                assert len(atts[j]) == n, (v, len(atts[j]))
                used.add(j)
                return NDArray(v["dtype"], shape, atts[j])
            assert i == "escape" and set(v) == {BKEY, "v"}, v
            return {k: restore(x, atts, used) for k, x in v["v"].items()}
        return {k: restore(x, atts, used) for k, x in v.items()}
    return v


class Timeout(Exception):
    pass


class Worker(object):
    """A worker process (python -u -m pyvisor <script> [args]), or with code= any Python code run
    with the same pipes (a bare baseline for the benchmarks)."""

    def __init__(self, script, env=None, args=None, capture=False, python=None, use_m=True,
                 code=None, site=False):
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = PYTHON_DIR
        full_env["PYVISOR_PARENT_PID"] = str(os.getpid())
        full_env.pop("PYVISOR_READER", None)
        full_env.update(env or {})
        # -S (no `site`): the runtime needs nothing from site-packages, and on machines where a
        # .pth file there imports something (certifi, ~60 ms per start here) hundreds of worker
        # starts add up. The Node suite starts workers the normal way.
        exe = [python or PYTHON, "-u"] + ([] if site else ["-S"])
        if code is not None:
            argv = exe + ["-c", code]
        elif use_m:
            argv = exe + ["-m", "pyvisor", script]
        else:
            argv = exe + [os.path.join(PYTHON_DIR, "pyvisor", "__main__.py"), script]
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()

        def child_fds():
            # Move the child's ends to 3 and 4 (via high fds, so they cannot collide).
            a = fcntl.fcntl(req_r, fcntl.F_DUPFD_CLOEXEC, 50)
            b = fcntl.fcntl(rep_w, fcntl.F_DUPFD_CLOEXEC, 50)
            os.dup2(a, 3)
            os.dup2(b, 4)

        out = subprocess.PIPE if capture else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            argv + list(args or []),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=full_env,
            preexec_fn=child_fds,
            close_fds=False,  # our pipe fds are close-on-exec; only 3 and 4 are inherited
        )
        os.close(req_r)
        os.close(rep_w)
        self.buf = b""
        self.next_id = 1
        self.stdout = []
        self.stderr = []
        self._output = threading.Condition()  # notified for every line read from stdout/stderr
        self._drains = []
        if capture:
            for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
                t = threading.Thread(target=self._drain, args=(stream, sink), daemon=True)
                t.start()
                self._drains.append(t)

    def _drain(self, stream, sink):
        for line in iter(stream.readline, b""):
            with self._output:
                sink.append(line)
                self._output.notify_all()

    # -- raw I/O ------------------------------------------------------------------------------

    def send(self, obj):
        self.send_raw(frame(obj))

    def send_binary(self, obj):
        self.send_raw(binary_frames(obj))

    def send_raw(self, data):
        view = memoryview(data)
        while view:
            k = os.write(self.req_w, view)
            view = view[k:]

    def close_requests(self):
        if self.req_w >= 0:
            os.close(self.req_w)
            self.req_w = -1

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout()
        r, _, _ = select.select([self.rep_r], [], [], left)
        if not r:
            raise Timeout()
        data = os.read(self.rep_r, 1 << 20)
        if not data:
            raise EOFError("reply pipe closed")
        self.buf += data

    def recv_body(self, timeout=10.0):
        """The body of the next frame, as bytes."""
        deadline = time.monotonic() + timeout
        while len(self.buf) < 4:
            self._fill(deadline)
        n = int.from_bytes(self.buf[:4], "big")
        while len(self.buf) < 4 + n:
            self._fill(deadline)
        body, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
        return body

    def recv(self, timeout=10.0, raw=False):
        """The next message; its attachments (if any) are read and put in place of their
        placeholders, unless raw (then they are in msg["attachments"])."""
        body = self.recv_body(timeout)
        msg = json.loads(body.decode("utf-8"))  # strict: fails on invalid UTF-8
        assert isinstance(msg, dict) and isinstance(msg.get("t"), str), msg
        if "b" in msg:
            atts = [self.recv_body(timeout) for _ in range(msg["b"])]
            if raw:
                msg["attachments"] = atts
            else:
                used = set()
                msg["v"] = restore(msg["v"], atts, used)
                assert len(used) == len(atts), (msg, used)
                del msg["b"]
        return msg

    def nothing_within(self, seconds):
        """True if no frame arrives within `seconds`. Only for what cannot be observed otherwise
        (a worker stuck with the GIL held answers nothing); elsewhere use barrier()."""
        try:
            msg = self.recv(seconds)
        except Timeout:
            return True
        self.unexpected = msg
        return False

    def barrier(self, ping_id=424242):
        """Send a ping and return every frame that arrives before its pong. The worker answers a
        ping after everything it wrote before reading it, so [] means nothing else was sent."""
        self.send({"t": "ping", "id": ping_id})
        before = []
        while True:
            msg = self.recv()
            if msg == {"t": "pong", "id": ping_id}:
                return before
            before.append(msg)

    def send_consumed(self, data, timeout=10.0):
        """Write data and wait until the worker has read it all from the request pipe (FIONREAD
        on our end counts the bytes still in the pipe): each call is a separate read()."""
        self.send_raw(data)
        deadline = time.monotonic() + timeout
        left = array.array("i", [0])
        while True:
            fcntl.ioctl(self.req_w, termios.FIONREAD, left)
            if left[0] == 0:
                return
            if time.monotonic() > deadline:
                raise Timeout("the worker did not read the request pipe")
            time.sleep(0.0005)

    # -- handshakes with the worker's process ---------------------------------------------------

    def wait_stderr(self, line, timeout=10.0):
        """Wait until the worker wrote `line` (bytes, with its newline) to stderr (capture=True)."""
        assert self._drains, "wait_stderr needs capture=True"
        deadline = time.monotonic() + timeout
        with self._output:
            while line not in self.stderr:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout("no %r on stderr after %.1fs" % (line, timeout))
                self._output.wait(left)

    def wait_started(self, cid, timeout=10.0):
        """Wait for the "started <cid>" line of a handler of python/tests/fixtures/extra.py."""
        self.wait_stderr(b"started %d\n" % cid, timeout)

    def wait_blocked(self, timeout=10.0):
        """Wait until the worker's main thread sleeps in the kernel (state S in /proc, twice in a
        row): after wait_started(), the handler has reached its blocking call (sleep, lock wait,
        credit wait, a C call). Nothing else can put it to sleep then: the helper thread holds
        the GIL only while it handles a frame, and none is in flight. Linux only; elsewhere it
        returns at once."""
        path = "/proc/%d/task/%d/stat" % (self.proc.pid, self.proc.pid)
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            try:
                with open(path) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                return  # no /proc
            seen = seen + 1 if state == "S" else 0
            if seen == 2:
                return
            if time.monotonic() > deadline:
                raise Timeout("the worker's main thread did not block (state %s)" % state)
            time.sleep(0.002)

    def finish_output(self, timeout=10.0):
        """After the worker exited: wait until its stdout and stderr were read to the end."""
        for t in self._drains:
            t.join(timeout)
            if t.is_alive():
                raise Timeout("stdout/stderr still open %.1fs after the exit" % timeout)

    # -- protocol helpers ---------------------------------------------------------------------

    def ready(self, timeout=10.0):
        msg = self.recv(timeout)
        assert msg["t"] == "ready", msg
        return msg

    def start_call(self, fn, *args, **extra):
        cid = self.next_id
        self.next_id += 1
        msg = {"t": "call", "id": cid, "fn": fn, "args": list(args)}
        msg.update(extra)
        self.send_binary(msg)  # a plain frame when there are no bytes values
        return cid

    def call(self, fn, *args, **extra):
        timeout = extra.pop("timeout", 10.0)
        cid = self.start_call(fn, *args, **extra)
        msg = self.recv(timeout)
        assert msg.get("id") == cid, (cid, msg)
        return msg

    def wait_exit(self, timeout=10.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Timeout("worker still running after %.1fs" % timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        self.kill()
        self.close_requests()
        for t in self._drains:  # let them see EOF before their streams are closed under them
            t.join(5)
        if self.rep_r >= 0:
            os.close(self.rep_r)
            self.rep_r = -1
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class WorkerAsserts(object):
    """Mixed into the tests' base classes: a ready worker, and checks of reply frames."""

    def ready_worker(self, script=None, **kw):
        w = self.worker(script, **kw)
        w.ready_msg = w.ready()
        return w

    def assertOk(self, msg, value):
        self.assertEqual(msg["t"], "ok", msg)
        self.assertEqual(msg["v"], value)

    def assertErr(self, msg, kind, type_name=None):
        self.assertEqual(msg["t"], "err", msg)
        self.assertEqual(msg["kind"], kind, msg)
        if type_name is not None:
            self.assertEqual(msg["type"], type_name, msg)
        for field in ("message", "traceback"):
            self.assertIsInstance(msg[field], str)

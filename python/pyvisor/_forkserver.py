"""The fork server's template process (startMethod 'forkserver', Linux only).

Node starts the template like a worker (``python3 -u .../pyvisor/__main__.py handlers.py``), with
PYVISOR_FORKSERVER set to the path of a Unix socket Node listens on (in a private 0700
directory). The template imports the handler file once, reports on fd 4 and then waits for
requests on fd 3; each worker is forked from it. Framing on fds 3/4 is the worker protocol's
(4-byte big-endian length, UTF-8 JSON); the messages are the template's own:

  Template -> Node (fd 4)
  ------------------------------------------------------------------------------------------
  hello       pid importMs threads:[names] osThreads     the script is imported; ready to fork
  init_error  type message traceback       importing the script raised; exit code 1 follows
  forked      id pid                       worker `id` was forked as `pid`
  fork_failed id message                   os.fork() failed for worker `id`
  exited      id pid code signal           worker `id` ended (reaped here): exit code or signal

  Node -> Template (fd 3)
  ------------------------------------------------------------------------------------------
  fork        id token                     fork a worker that proves itself with `token`
  kill        id sig                       send signal `sig` to worker `id` (if not reaped yet)
  (EOF)                                    Node closed the channel: the template exits (code 0)

A forked child (see _detach and _plug_in):

  * sets its own parent-death signal (the kernel clears it in a forked child) to SIGKILL, so it
    dies with the template, and exits if its parent is no longer the template;
  * closes the template's descriptors, and points every descriptor the script opened at import
    at /dev/null (files, sockets and pipes must not be shared by every worker; the number stays
    taken, so a stale file object cannot close a descriptor the child opens later);
  * connects to Node's socket three times, writing ``token + kind`` (kind ``p`` protocol, ``o``
    stdout, ``e`` stderr; Node refuses a wrong token), and moves the sockets onto fds 3/4 and
    1/2: from there on it is a worker like a spawned one (pyvisor._runtime.main, the same code
    path), except that the script is already imported and only the @on_init functions run;
  * reseeds `random` and, when they were imported, NumPy's and torch's global generators.

While it is idle, the template keeps one child forked ahead of time (the spare: detached, waiting
on a pipe for its token), so that a worker started later, a replacement above all, does not wait
for fork(): for a template holding hundreds of MB, copying its page tables takes tens of ms.

The template itself: dies with Node (PR_SET_PDEATHSIG), stays single-threaded (it only forks
from its main thread: the parent-death signal of a child is tied to the thread that forked it),
reaps its children (SIGCHLD wakes the poll loop through a wake-up pipe) and reports each exit
status, so a worker's exit code and signal reach Node as with a spawned worker. Node decides
from `hello` whether forking is safe (no Python thread running after import) and otherwise falls
back to spawning; a template with Python threads forks nothing, not even a spare.

Exit codes of the template: 0 when Node closes fd 3; 1 init error, or its parent is gone at
start-up; 2 bad usage (no script, fds 3/4 not open, no PR_SET_PDEATHSIG); 4 internal error.
"""

import os
import sys
import _socket  # the children connect with it: loaded once, here, not in each child
import _thread
from time import perf_counter as _perf_counter

try:
    import _signal as signal
except ImportError:  # pragma: no cover
    import signal

from ._fatal import _die, _internal_error

_TOKEN_LENGTH = 32  # hex digits of the per-worker token Node chooses


def _fd_set():
    """The descriptors open in this process (Linux: /proc/self/fd)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            os.fstat(fd)  # the directory listdir() used is closed again by now
        except OSError:
            continue
        fds.add(fd)
    return fds


def _python_threads():
    """Names of the Python threads running besides the main thread."""
    count = _thread._count()
    if not count:
        return []
    names = []
    threading = sys.modules.get("threading")
    if threading is not None:
        main = threading.main_thread()
        names = [t.name for t in threading.enumerate() if t is not main and t.is_alive()]
    while len(names) < count:
        names.append("(a thread started with _thread)")
    return names


def _os_thread_count():
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


class _Channel(object):
    """The control channel to Node: frames in on fd 3 (moved), frames out on fd 4 (moved)."""

    def __init__(self, in_fd, out_fd):
        import json

        self.in_fd = in_fd
        self.out_fd = out_fd
        self.buf = bytearray()
        self._dumps = json.dumps
        self._loads = json.loads

    def send(self, msg):
        body = self._dumps(msg, separators=(",", ":")).encode()
        view = memoryview(len(body).to_bytes(4, "big") + body)
        try:
            while view:
                view = view[os.write(self.out_fd, view) :]
        except OSError:
            os._exit(0)  # Node is gone

    def read(self):
        """One read(); returns the complete messages it completed. EOF: exit."""
        try:
            data = os.read(self.in_fd, 65536)
        except InterruptedError:  # pragma: no cover  (PEP 475 retries)
            return []
        except OSError:
            os._exit(0)
        if not data:
            os._exit(0)  # Node closed the channel (or died): the workers die with us
        b = self.buf
        b.extend(data)
        out = []
        while len(b) >= 4:
            n = int.from_bytes(b[:4], "big")
            if len(b) < 4 + n:
                break
            out.append(self._loads(bytes(b[4 : 4 + n]).decode("utf-8")))
            del b[: 4 + n]
        return out


class _Template(object):
    def __init__(self, channel, sock_path, script_fds, own_fds):
        self.channel = channel
        self.sock_path = sock_path
        self.script_fds = script_fds
        self.own_fds = own_fds  # closed in each child
        self.pid = os.getpid()
        self.by_pid = {}  # pid -> worker id
        self.by_id = {}  # worker id -> pid
        # A child forked ahead of time that waits for a token on a pipe (see make_spare):
        # (pid, write end of its pipe), or None.
        self.spare = None

    def child_fds(self):
        """The template's descriptors, which a child closes."""
        fds = list(self.own_fds)
        if self.spare is not None:
            fds.append(self.spare[1])
        return fds

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            wid = self.by_pid.pop(pid, None)
            if wid is None:
                spare = self.spare
                if spare is not None and spare[0] == pid:  # killed by someone: make another
                    self.spare = None
                    os.close(spare[1])
                continue
            self.by_id.pop(wid, None)
            code = sig = None
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
            elif os.WIFEXITED(status):
                code = os.WEXITSTATUS(status)
            self.channel.send({"t": "exited", "id": wid, "pid": pid, "code": code, "signal": sig})

    def handle(self, msg):
        """Handle one request; returns the child's arguments in a forked child, else None."""
        t = msg.get("t")
        if t == "fork":
            return self.fork(msg["id"], msg["token"])
        if t == "kill":
            pid = self.by_id.get(msg["id"])
            if pid is not None:
                try:
                    os.kill(pid, msg["sig"])
                except OSError:
                    pass
            return None
        _die(3, "fork server: unknown request %r" % (t,))

    def fork(self, wid, token):
        """Start worker wid: hand the token to the spare if there is one, else fork now."""
        token = token.encode("ascii")
        spare = self.spare
        if spare is not None:
            self.spare = None
            pid, w = spare
            try:
                os.write(w, token)  # 32 bytes: one atomic write to an empty pipe
                handed = True
            except OSError:  # it died meanwhile (reaped or not yet): fork one
                handed = False
            os.close(w)
            if handed:
                self.started(wid, pid)
                return None
        import gc

        gc.freeze()  # objects made since the last freeze: keep the GC off the shared pages
        try:
            pid = os.fork()
        except OSError as exc:
            self.channel.send({"t": "fork_failed", "id": wid, "message": str(exc)})
            return None
        if pid == 0:
            _detach(self)
            _plug_in(self, token)
            return True
        self.started(wid, pid)
        return None

    def started(self, wid, pid):
        self.by_pid[pid] = wid
        self.by_id[wid] = pid
        self.channel.send({"t": "forked", "id": wid, "pid": pid})

    def make_spare(self):
        """Fork a child ahead of time, when the template is idle: it cuts loose from the
        template and waits for a token, so a replacement does not wait for fork() (tens of ms
        for a template with hundreds of MB: every page-table entry is copied). Returns True in
        the spare once it got its token (it then becomes a worker), else None."""
        import gc

        r, w = os.pipe()
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            return None
        if pid == 0:
            os.close(w)
            _detach(self, keep=r)
            token = b""
            while len(token) < _TOKEN_LENGTH:
                try:
                    chunk = os.read(r, _TOKEN_LENGTH - len(token))
                except InterruptedError:  # pragma: no cover  (PEP 475 retries)
                    continue
                if not chunk:
                    os._exit(0)  # the template closed the pipe: never used
                token += chunk
            os.close(r)
            _plug_in(self, token)
            return True
        os.close(r)
        self.spare = (pid, w)
        return None


def _connect(path, hello):
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(path)
        s.sendall(hello)
    except OSError:
        s.close()
        return None
    return s.detach()


def _reseed():
    """Forked children would all draw the same numbers from generators seeded at import."""
    mods = sys.modules
    for name, reseed in (
        ("random", lambda m: m.seed()),
        ("numpy.random", lambda m: m.seed()),
        ("torch", lambda m: m.seed()),
    ):
        m = mods.get(name)
        if m is not None:
            try:
                reseed(m)
            except BaseException:
                pass


def _detach(template, keep=None):
    """In a forked child: cut loose from the template (see the module docstring)."""
    from ._watch import _set_pdeathsig

    # The kernel cleared the parent-death signal in this child: set it again, for the
    # template, and make sure the template did not die before that.
    _set_pdeathsig()
    if os.getppid() != template.pid:
        os._exit(1)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in template.child_fds():
        if fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass
    null = os.open(os.devnull, os.O_RDWR)
    for fd in template.script_fds:
        try:
            os.dup2(null, fd, inheritable=False)
        except OSError:
            pass
    os.close(null)


def _plug_in(template, token):
    """In a forked child: connect to Node with token and become a worker on fds 1-4. Returns
    normally; the caller then runs the worker runtime."""
    null = os.open(os.devnull, os.O_RDWR)
    path = template.sock_path
    proto = _connect(path, token + b"p")
    if proto is None:
        _die(2, "fork server: cannot connect to Node's socket %s" % path)
    out = _connect(path, token + b"o")
    err = _connect(path, token + b"e")
    os.dup2(proto, 3)
    os.dup2(proto, 4)
    os.close(proto)
    for fd, target in ((out, 1), (err, 2)):
        os.dup2(null if fd is None else fd, target)
        if fd is not None:
            os.close(fd)
    os.close(null)
    _reseed()
    # The worker's parent is the template: that is who _guard_parent checks for.
    os.environ["PYVISOR_PARENT_PID"] = str(template.pid)


def serve(argv, drop_path0=False):
    """Run the template. Returns only in a forked child, with the worker's argv."""
    try:
        r = _serve(argv, drop_path0)
    except SystemExit:
        raise
    except BaseException:
        _internal_error()
    return r


def _serve(argv, drop_path0):
    from ._connection import _move_fd
    from ._watch import _set_pdeathsig

    sock_path = os.environ.pop("PYVISOR_FORKSERVER", "")
    if not argv or not sock_path:
        _die(2, "usage: PYVISOR_FORKSERVER=/path/to/socket python3 -u -m pyvisor handlers.py")
    try:
        os.fstat(3)
        os.fstat(4)
    except OSError as exc:
        _die(2, "fds 3 and 4 must be the control pipes (%s)" % exc)
    if not (sys.platform.startswith("linux") and _set_pdeathsig()):
        _die(2, "fork server: PR_SET_PDEATHSIG is not available")
    expected = os.environ.get("PYVISOR_PARENT_PID")
    if expected and expected.isdigit() and os.getppid() != int(expected):
        _die(1, "parent process %s is gone; exiting" % expected)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    in_fd = _move_fd(3, 100)
    out_fd = _move_fd(4, 100)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 3, inheritable=False)
    os.dup2(null, 4, inheritable=False)
    if null not in (3, 4):
        os.close(null)
    channel = _Channel(in_fd, out_fd)

    script = os.path.abspath(argv[0])
    sys.argv = [script] + list(argv[1:])
    if drop_path0 and sys.path:
        del sys.path[0]
    sys.path.insert(0, os.path.dirname(script))

    # Everything a worker needs, imported once here, before the script.
    import gc
    import select

    from . import _runtime

    before = _fd_set()
    t0 = _perf_counter()
    try:
        _runtime._import_script(script)
    except BaseException as exc:
        channel.send(_runtime._init_error(exc))
        _runtime._exit_after_output(1)
    import_ms = (_perf_counter() - t0) * 1000.0
    script_fds = sorted(_fd_set() - before - {0, 1, 2, 3, 4})
    threads = _python_threads()

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    template = _Template(channel, sock_path, script_fds, (in_fd, out_fd, wake_r, wake_w))
    channel.send(
        {
            "t": "hello",
            "pid": template.pid,
            "importMs": round(import_ms, 3),
            "threads": threads,
            "osThreads": _os_thread_count(),
        }
    )
    gc.freeze()

    poll = select.poll()
    poll.register(in_fd, select.POLLIN)
    poll.register(wake_r, select.POLLIN)
    while True:
        template.reap()
        # Idle (no request half read): fork the spare before waiting.
        if template.spare is None and not threads and not channel.buf:
            if template.make_spare():
                return list(sys.argv)  # in the spare, once it got its token
        for fd, _ in poll.poll():
            if fd == wake_r:
                try:
                    while os.read(wake_r, 512):
                        pass
                except OSError:
                    pass
                continue
            for msg in channel.read():
                if template.handle(msg):
                    return list(sys.argv)  # in the forked child

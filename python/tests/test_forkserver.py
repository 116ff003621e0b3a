"""The fork server's template (pyvisor/_forkserver.py), driven by a stand-in for Node: the control
channel on fds 3/4, and a Unix socket the forked workers connect back to (Linux only)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from _worker import PYTHON, PYTHON_DIR, fixture, frame

TOKEN = "ab" * 16


def _read_frame(read):
    head = read(4)
    n = int.from_bytes(head, "big")
    return json.loads(read(n).decode())


def _children(pid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == pid:
                out.append(int(name))
    return out


def _wchan(pid):
    """Where the process sleeps in the kernel (its main thread)."""
    with open("/proc/%d/wchan" % pid) as f:
        return f.read()


def _wait_until(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %s s" % timeout)
        time.sleep(0.01)


@unittest.skipUnless(sys.platform.startswith("linux"), "the fork server is Linux only")
class TemplateTest(unittest.TestCase):
    def start(self, script):
        self.dir = tempfile.mkdtemp(prefix="pyvisor-fs-test-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        path = os.path.join(self.dir, "s")
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(16)
        self.server.settimeout(10)
        self.addCleanup(self.server.close)
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()

        def child_fds():
            os.dup2(req_r, 3)
            os.dup2(rep_w, 4)

        env = dict(os.environ, PYVISOR_FORKSERVER=path, PYTHONPATH=PYTHON_DIR)
        env["PYVISOR_PARENT_PID"] = str(os.getpid())
        self.proc = subprocess.Popen(
            [PYTHON, "-u", "-m", "pyvisor", script],
            env=env,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            close_fds=False,
            preexec_fn=child_fds,
        )
        for fd in (req_r, rep_w):
            os.close(fd)
        self.req = os.fdopen(req_w, "wb", buffering=0)
        self.rep = os.fdopen(rep_r, "rb")
        self.addCleanup(self.stop)
        return _read_frame(self.rep.read)

    def stop(self):
        for f in (self.req, self.rep):
            try:
                f.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stderr.close()

    def send(self, msg):
        self.req.write(frame(msg))

    def recv(self):
        return _read_frame(self.rep.read)

    def accept_worker(self, token=TOKEN):
        conns = {}
        for _ in range(3):
            conn, _ = self.server.accept()
            self.addCleanup(conn.close)
            hello = b""
            while len(hello) < 33:
                hello += conn.recv(33 - len(hello))
            self.assertEqual(hello[:32].decode(), token)
            conns[hello[32:].decode()] = conn
        self.assertEqual(sorted(conns), ["e", "o", "p"])
        return conns

    def test_forks_workers_that_connect_back_and_reports_their_exits(self):
        hello = self.start(fixture("fork-state.py"))
        self.assertEqual(hello["t"], "hello")
        self.assertEqual(hello["threads"], [])
        template = hello["pid"]
        # Idle, it forks a spare ahead of time: the first worker is that child.
        _wait_until(lambda: len(_children(template)) == 1)
        spare = _children(template)[0]
        self.send({"t": "fork", "id": 1, "token": TOKEN})
        self.assertEqual(self.recv(), {"t": "forked", "id": 1, "pid": spare})
        conns = self.accept_worker()
        proto = conns["p"].makefile("rwb", buffering=0)
        ready = _read_frame(proto.read)
        self.assertEqual((ready["t"], ready["pid"]), ("ready", spare))
        proto.write(frame({"t": "call", "id": 1, "fn": "import_fd", "args": []}))
        self.assertEqual(_read_frame(proto.read), {"t": "ok", "id": 1, "v": "/dev/null"})
        proto.write(frame({"t": "call", "id": 2, "fn": "noisy", "args": [1]}))
        self.assertEqual(_read_frame(proto.read)["t"], "ok")
        self.assertIn(b"noisy stdout line 0", conns["o"].recv(4096))
        self.assertIn(b"noisy stderr line 0", conns["e"].recv(4096))
        proto.write(frame({"t": "call", "id": 3, "fn": "crash", "args": [7]}))
        exited = self.recv()
        self.assertEqual(exited, {"t": "exited", "id": 1, "pid": spare, "code": 7, "signal": None})
        # A second worker, killed through the template: its signal is reported.
        _wait_until(lambda: len(_children(template)) == 1)  # the next spare
        self.send({"t": "fork", "id": 2, "token": TOKEN})
        forked = self.recv()
        self.assertEqual(forked["t"], "forked")
        self.accept_worker()
        self.send({"t": "kill", "id": 2, "sig": signal.SIGKILL})
        self.assertEqual(
            self.recv(),
            {"t": "exited", "id": 2, "pid": forked["pid"], "code": None, "signal": 9},
        )
        # EOF on its channel: the template exits, and its children (the spare) with it.
        children = _children(template)
        self.req.close()
        self.assertEqual(self.proc.wait(10), 0)
        _wait_until(lambda: not any(os.path.exists("/proc/%d" % p) for p in children))

    def test_reports_python_threads_and_forks_no_spare(self):
        hello = self.start(fixture("fork-thread.py"))
        self.assertEqual(hello["threads"], ["left-running"])
        # It waits in poll() once idle; a spare would have been forked before that.
        _wait_until(lambda: "poll" in _wchan(hello["pid"]))
        self.assertEqual(_children(hello["pid"]), [])

    def test_import_error_is_an_init_error(self):
        msg = self.start(fixture("syntax-error.py"))
        self.assertEqual((msg["t"], msg["type"]), ("init_error", "SyntaxError"))
        self.assertIn("syntax-error.py", msg["traceback"])
        self.assertEqual(self.proc.wait(10), 1)


if __name__ == "__main__":
    unittest.main()

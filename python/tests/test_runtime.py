"""Tests of the Python worker runtime, driving real worker processes over fds 3/4.

    python3 -m unittest discover -s python/tests            (from the repository root)
    PYVISOR_TEST_PYTHON=/path/to/python3.9 python3 -m unittest discover -s python/tests

Every test runs in both reader modes: epoll (the default on Linux) and the portable reader
thread (PYVISOR_READER=thread), see the module docstring of pyvisor/_watch.py.

No test sleeps to let something happen: a test that needs a handler to be running waits for the
handler's "started <id>" line on stderr (python/tests/fixtures/extra.py), and if the handler must
be inside its blocking call, for its main thread to sleep (Worker.wait_blocked); a test that needs
"nothing more was sent" uses a ping as a barrier (Worker.barrier). Time bounds are generous
(several seconds): they only catch a hang, never measure speed.
"""

import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _worker import HERE, PYTHON, Worker, WorkerAsserts, binary_frames, fixture, frame  # noqa: E402

EXTRA = os.path.join(HERE, "fixtures", "extra.py")
RUNTIME_DIR = os.path.join(os.path.dirname(HERE), "pyvisor") + os.sep  # no frames from there
IS_LINUX = sys.platform.startswith("linux")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state on Linux.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


class Base(WorkerAsserts):
    """Mixed into one TestCase class per reader mode."""

    READER = None

    def worker(self, script=None, env=None, **kw):
        kw.setdefault("capture", True)  # stderr carries the "started <id>" handshake
        e = dict(env or {})
        e.setdefault("PYTHONPATH", "")
        if self.READER:
            e["PYVISOR_READER"] = self.READER
        e = {k: v for k, v in e.items() if k != "PYTHONPATH" or v}
        w = Worker(script or EXTRA, env=e, **kw)
        self.addCleanup(w.close)
        return w

    def start_announced(self, w, fn, *args, **kw):
        """Start the call fn(*args) and return its id once the handler is running; with
        blocked=True, once it sits in its blocking call (sleep, lock wait, C call)."""
        blocked = kw.pop("blocked", False)
        cid = w.start_call(fn, *args, **kw)
        w.wait_started(cid)
        if blocked:
            w.wait_blocked()
        return cid

    def assertProtocolError(self, script, data):
        """Writing data to a fresh worker of script makes it exit with 3 and say why."""
        w = self.worker(script)
        w.ready()
        w.send_raw(data)
        self.assertEqual(w.wait_exit(), 3, data)
        w.finish_output()
        self.assertIn(b"protocol error", b"".join(w.stderr), data)

    # -- start-up -----------------------------------------------------------------------------

    def test_ready(self):
        w = self.worker(fixture("handlers.py"))
        msg = w.ready()
        self.assertEqual(msg["pid"], w.proc.pid)
        self.assertRegex(msg["version"], r"^3\.\d+\.\d+$")
        self.assertTrue(os.path.isabs(msg["executable"]))
        self.assertIsInstance(msg["initMs"], float)
        handlers = {h["name"]: h["stream"] for h in msg["handlers"]}
        self.assertIs(handlers["count"], True)
        self.assertIs(handlers["add"], False)
        for name in ("add", "echo", "sleep", "spin", "fail", "noisy", "pid", "session_set",
                     "session_get", "nan", "unserializable", "context", "big", "crash",
                     "kill_self", "swallow", "hang_c", "stderr_flood", "garbage"):
            self.assertIn(name, handlers)

    def test_script_form_also_works(self):
        w = self.worker(fixture("handlers.py"), use_m=False)
        w.ready()
        self.assertOk(w.call("add", 1, 2), 3)

    def test_init_order_names_and_module(self):
        w = self.ready_worker()
        self.assertOk(w.call("init_order"), ["first", "second"])
        self.assertOk(w.call("renamed", 1), ["renamed", 1])
        self.assertOk(w.call("positional_name", 1), ["positional", 1])
        self.assertOk(w.call("module_name"), "extra")
        names = [h["name"] for h in w.ready_msg["handlers"]]
        self.assertNotIn("_original", names)
        head = w.call("sys_path_head")["v"]
        self.assertEqual(head[0], os.path.dirname(EXTRA))

    def test_init_error_syntax(self):
        w = self.worker(fixture("syntax-error.py"))
        msg = w.recv(10)
        self.assertEqual(msg["t"], "init_error", msg)
        self.assertEqual(msg["type"], "SyntaxError")
        self.assertIn("syntax-error.py", msg["traceback"])
        self.assertIn("SyntaxError", msg["traceback"])
        self.assertNotIn(RUNTIME_DIR, msg["traceback"])
        self.assertNotIn("<frozen", msg["traceback"])
        self.assertEqual(w.wait_exit(), 1)

    def test_init_error_base_exception_does_not_hang(self):
        w = self.worker(os.path.join(HERE, "fixtures", "init_base_exception.py"))
        msg = w.recv(10)
        self.assertEqual(msg["t"], "init_error", msg)
        self.assertEqual(msg["type"], "SystemExit")
        self.assertEqual(msg["message"], "init gave up")
        self.assertIn("boom", msg["traceback"])
        self.assertEqual(w.wait_exit(), 1)

    def test_init_error_duplicate_handler(self):
        w = self.worker(os.path.join(HERE, "fixtures", "duplicate.py"))
        msg = w.recv(10)
        self.assertEqual(msg["t"], "init_error", msg)
        self.assertEqual(msg["type"], "ValueError")
        self.assertIn("same", msg["message"])
        self.assertEqual(w.wait_exit(), 1)

    def test_init_error_missing_file(self):
        w = self.worker(os.path.join(HERE, "fixtures", "does-not-exist.py"))
        msg = w.recv(10)
        self.assertEqual(msg["t"], "init_error", msg)
        self.assertEqual(msg["type"], "FileNotFoundError")
        self.assertEqual(w.wait_exit(), 1)

    def test_scriptable_fixture(self):
        w = self.worker(fixture("scriptable.py"), env={"PYVISOR_TEST_INIT": "fail"})
        msg = w.recv(10)
        self.assertEqual((msg["t"], msg["type"]), ("init_error", "RuntimeError"))
        self.assertEqual(w.wait_exit(), 1)
        w = self.worker(fixture("scriptable.py"), env={"PYVISOR_TEST_INIT": "crash"})
        self.assertEqual(w.wait_exit(10), 7)
        w = self.worker(fixture("scriptable.py"), env={"PYVISOR_TEST_INIT": "slow:200"})
        self.assertGreaterEqual(w.ready()["initMs"], 200)
        self.assertOk(w.call("init_count"), 1)
        self.assertOk(w.call("add", 2, 3), 5)

    def test_crash_on_start(self):
        w = self.worker(fixture("crash-on-start.py"))
        self.assertEqual(w.wait_exit(10), 3)

    def test_hang_in_init_answers_ping_and_exits_on_eof(self):
        w = self.worker(fixture("hang-in-init.py"))
        w.send({"t": "ping", "id": 7})
        self.assertEqual(w.recv(), {"t": "pong", "id": 7})
        w.close_requests()
        self.assertEqual(w.wait_exit(), 0)

    # -- calls --------------------------------------------------------------------------------

    def test_add_echo_and_session(self):
        w = self.ready_worker(fixture("handlers.py"))
        self.assertOk(w.call("add", 1, 2), 3)
        value = {"a": [1, 2.5, None, True, "é ✓ 😀"], "b": {"c": -1}}
        self.assertOk(w.call("echo", value), value)
        self.assertOk(w.call("session_set", "k", [1]), True)
        self.assertOk(w.call("session_get", "k"), [1])
        self.assertOk(w.call("pid"), w.proc.pid)

    def test_python_error(self):
        w = self.ready_worker(fixture("handlers.py"))
        msg = w.call("fail", "boom")
        self.assertErr(msg, "python", "ValueError")
        self.assertEqual(msg["message"], "boom")
        self.assertTrue(msg["traceback"].startswith("Traceback (most recent call last):"))
        self.assertIn("in fail", msg["traceback"])
        self.assertNotIn(RUNTIME_DIR, msg["traceback"])
        self.assertOk(w.call("add", 1, 1), 2)

    def test_wrong_arguments_is_a_python_error(self):
        w = self.ready_worker(fixture("handlers.py"))
        msg = w.call("add", 1)
        self.assertErr(msg, "python", "TypeError")
        self.assertIn("missing 1 required positional argument", msg["message"])

    def test_system_exit_and_keyboard_interrupt_are_errors(self):
        w = self.ready_worker()
        self.assertErr(w.call("raise_system_exit"), "python", "SystemExit")
        self.assertErr(w.call("raise_keyboard_interrupt"), "python", "KeyboardInterrupt")
        self.assertOk(w.call("add", 1, 1), 2)

    def test_unknown_handler(self):
        w = self.ready_worker(fixture("handlers.py"))
        msg = w.call("nope")
        self.assertErr(msg, "unknown_handler", "UnknownHandler")
        self.assertIn("'nope'", msg["message"])
        self.assertIn("add", msg["message"])
        self.assertIn("session_get", msg["message"])

    def test_serialization_errors(self):
        w = self.ready_worker()
        for fn in ("unserializable", "circular", "bad_key"):
            msg = w.call(fn)
            self.assertErr(msg, "serialization")
            self.assertIn(repr(fn), msg["message"])
        self.assertIn("not JSON serializable", w.call("unserializable")["message"])
        v = w.call("nan")["v"]  # sent as a float placeholder (test_values.py)
        self.assertTrue(isinstance(v, float) and v != v, v)
        # An aborted encode must not poison the next one (circularity markers are reset).
        nested = [[1, [2, [3]]], {"x": [4]}]
        for _ in range(3):
            self.assertOk(w.call("echo", nested), nested)

    def test_lone_surrogates_and_unicode(self):
        w = self.ready_worker()
        self.assertOk(w.call("surrogate"), "\ud800 lone")
        w.send_raw(frame({"t": "call", "id": 99, "fn": "echo", "args": ["\udc00x"]}))
        self.assertOk(w.recv(), "\udc00x")
        self.assertOk(w.call("unicode_echo", "ünï😀"), ["ünï😀", 4])

    def test_generator_called_without_stream_returns_list(self):
        w = self.ready_worker()
        self.assertOk(w.call("count", 4), [0, 1, 2, 3])
        self.assertOk(w.call("returns_generator", 4), [0, 1, 4, 9])
        self.assertOk(w.call("async_count", 3), [0, 1, 2])

    def test_async_handlers(self):
        w = self.ready_worker()
        self.assertOk(w.call("async_add", 2, 3), 5)
        cid = self.start_announced(w, "async_sleep", 30)
        w.send({"t": "cancel", "id": cid})
        msg = w.recv()
        self.assertEqual(msg["id"], cid)
        self.assertErr(msg, "cancelled", "Cancelled")
        self.assertNotIn("before it started", msg["message"])  # it was running
        self.assertOk(w.call("async_add", 1, 1), 2)

    def test_context(self):
        w = self.ready_worker(fixture("handlers.py"))
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        msg = w.call("context", tp=tp)
        self.assertOk(msg, {"id": msg["id"], "fn": "context", "traceparent": tp})
        msg = w.call("context")
        self.assertEqual(msg["v"]["traceparent"], None)

    def test_big_results_and_args(self):
        w = self.ready_worker(fixture("handlers.py"))
        msg = w.call("big", 5000000)
        self.assertEqual(msg["t"], "ok")
        self.assertEqual(len(msg["v"]), 5000000)
        arg = "y" * 3000000
        self.assertOk(w.call("echo", arg), arg)

    def test_max_message(self):
        w = self.ready_worker(fixture("handlers.py"), env={"PYVISOR_MAX_MESSAGE": "2000"})
        self.assertEqual(len(w.call("big", 1000)["v"]), 1000)
        msg = w.call("big", 5000)
        self.assertErr(msg, "serialization")
        self.assertIn("too large", msg["message"])
        msg = w.call("big", 100000)
        self.assertErr(msg, "serialization")
        self.assertOk(w.call("add", 1, 2), 3)
        # An incoming frame over the limit is a protocol error.
        w.send({"t": "call", "id": 5, "fn": "echo", "args": ["z" * 3000]})
        self.assertEqual(w.wait_exit(), 3)

    def test_print_does_not_corrupt_frames(self):
        w = self.ready_worker(fixture("handlers.py"), capture=True)
        self.assertOk(w.call("noisy", 200), "done")
        self.assertOk(w.call("add", 1, 2), 3)
        self.assertOk(w.call("stderr_flood", 300000), 300000)
        self.assertOk(w.call("add", 2, 2), 4)
        w.send({"t": "exit"})
        self.assertEqual(w.wait_exit(), 0)
        w.finish_output()
        out = b"".join(w.stdout)
        self.assertIn(b"noisy stdout line 199\n", out)
        self.assertIn(b"noisy raw fd1 line 199\n", out)
        self.assertIn(b"noisy stderr line 199\n", b"".join(w.stderr))

    def test_fds_moved_and_dup2_is_harmless(self):
        w = self.ready_worker()
        info = w.call("getpid_and_fds")["v"]
        if IS_LINUX:
            self.assertEqual(info["fd3"], "/dev/null")
            self.assertEqual(info["fd4"], "/dev/null")
        self.assertOk(w.call("write_fd4", "junk that must go nowhere"), "written")
        self.assertOk(w.call("garbage", "dup2"), "ok")
        self.assertOk(w.call("add", 1, 2), 3)
        w.send({"t": "ping", "id": 3})
        self.assertEqual(w.recv(), {"t": "pong", "id": 3})

    @unittest.skipUnless(IS_LINUX, "uses /proc")
    def test_forked_children_do_not_touch_the_pipes(self):
        w = self.ready_worker()
        self.assertOk(w.call("fork_child_returns"), {"parent": True, "child_exit": 0})
        self.assertEqual(w.call("fork_child_fds")["v"], repr(["/dev/null", "/dev/null"]))
        self.assertOk(w.call("add", 1, 2), 3)
        # The children exited before their parent replied: a stray frame would be here by now.
        self.assertEqual(w.barrier(), [])

    def test_garbage_hooks_write_what_they_say(self):
        w = self.ready_worker(fixture("handlers.py"))
        w.start_call("garbage", "unknown_id")
        self.assertEqual(w.recv(), {"t": "ok", "id": 999999999, "v": 1})
        self.assertEqual(w.recv()["v"], "ok")
        w.start_call("garbage", "not_object")
        n = int.from_bytes(os.read(w.rep_r, 4), "big")
        self.assertEqual(os.read(w.rep_r, n), b"[1,2]")
        w.start_call("garbage", "close_out")
        self.assertEqual(w.wait_exit(), 3)

    # -- streams ------------------------------------------------------------------------------

    def test_stream_credit_flow_control(self):
        w = self.ready_worker(fixture("handlers.py"))
        cid = w.start_call("count", 10, stream=True, credit=2)
        self.assertEqual([w.recv()["v"] for _ in range(2)], [0, 1])
        w.wait_blocked()  # waiting for credit, with item 2 ready
        self.assertEqual(w.barrier(), [], "item sent beyond credit")
        w.send({"t": "credit", "id": cid, "n": 3})
        self.assertEqual([w.recv()["v"] for _ in range(3)], [2, 3, 4])
        w.wait_blocked()
        self.assertEqual(w.barrier(), [], "item sent beyond credit")
        w.send({"t": "credit", "id": cid, "n": 100})
        items = [w.recv() for _ in range(5)]
        self.assertEqual([m["v"] for m in items], [5, 6, 7, 8, 9])
        self.assertTrue(all(m["t"] == "item" and m["id"] == cid for m in items))
        self.assertEqual(w.recv(), {"t": "end", "id": cid})
        self.assertOk(w.call("add", 1, 2), 3)

    def test_stream_ends_without_extra_credit(self):
        w = self.ready_worker(fixture("handlers.py"))
        cid = w.start_call("count", 3, stream=True, credit=3)
        self.assertEqual([w.recv()["v"] for _ in range(3)], [0, 1, 2])
        self.assertEqual(w.recv(), {"t": "end", "id": cid})
        cid = w.start_call("count", 0, stream=True, credit=0)
        self.assertEqual(w.recv(), {"t": "end", "id": cid})

    def test_stream_errors(self):
        w = self.ready_worker()
        cid = w.start_call("stream_then_fail", 2, stream=True, credit=10)
        self.assertEqual([w.recv()["v"] for _ in range(2)], [0, 1])
        msg = w.recv()
        self.assertEqual(msg["id"], cid)
        self.assertErr(msg, "python", "RuntimeError")
        cid = w.start_call("stream_unserializable", stream=True, credit=10)
        self.assertEqual(w.recv()["v"], 1)
        self.assertErr(w.recv(), "serialization")
        msg = w.call("add", 1, 2, stream=True, credit=1)
        self.assertErr(msg, "python", "TypeError")
        self.assertIn("call()", msg["message"])
        cid = w.start_call("async_count", 3, stream=True, credit=10)
        self.assertEqual([w.recv()["v"] for _ in range(3)], [0, 1, 2])
        self.assertEqual(w.recv(), {"t": "end", "id": cid})

    def test_cancel_while_waiting_for_credit(self):
        w = self.ready_worker()
        cid = w.start_call("slow_stream", 100, 0.0, stream=True, credit=1)
        self.assertEqual(w.recv()["v"], 0)
        w.wait_blocked()  # in the credit wait: no credit will ever come, only the cancel
        w.send({"t": "cancel", "id": cid})
        msg = w.recv()
        self.assertEqual(msg["id"], cid)
        self.assertErr(msg, "cancelled", "Cancelled")
        events = w.call("events")["v"]
        self.assertIn("slow_stream got Cancelled", events)  # raised at its yield
        self.assertIn("slow_stream closed", events)

    def test_cancel_reaches_generators_at_their_yield(self):
        w = self.ready_worker()
        cid = w.start_call("stubborn_stream", 100, stream=True, credit=1)
        self.assertEqual(w.recv()["v"], 0)
        w.send({"t": "cancel", "id": cid})
        self.assertErr(w.recv(), "cancelled", "Cancelled")
        cid = w.start_call("async_stream_tracked", 100, stream=True, credit=1)
        self.assertEqual(w.recv()["v"], 0)
        # In the credit wait, paused at its yield: a cancel while it runs a step reaches it as the
        # task's asyncio.CancelledError at its await instead (tested elsewhere).
        w.wait_blocked()
        w.send({"t": "cancel", "id": cid})
        self.assertErr(w.recv(), "cancelled", "Cancelled")
        events = w.call("events")["v"]
        self.assertIn("stubborn_stream swallowed Cancelled", events)
        self.assertIn("async_stream_tracked got Cancelled", events)
        self.assertOk(w.call("add", 1, 2), 3)

    def test_cancel_during_stream_item_production(self):
        w = self.ready_worker()
        cid = w.start_call("slow_stream", 100, 0.05, stream=True, credit=1000)
        for _ in range(3):
            self.assertEqual(w.recv()["t"], "item")
        w.send({"t": "cancel", "id": cid})
        while True:
            msg = w.recv()
            if msg["t"] != "item":
                break
        self.assertErr(msg, "cancelled", "Cancelled")
        self.assertOk(w.call("add", 1, 2), 3)

    # -- cancellation -------------------------------------------------------------------------

    def test_cancel_sleep(self):
        w = self.ready_worker()
        cid = self.start_announced(w, "announced", "sleep", 30, blocked=True)
        w.send({"t": "cancel", "id": cid})
        msg = w.recv()  # within recv's 10 s, long before the 30 s sleep would end
        self.assertEqual(msg["id"], cid)
        self.assertErr(msg, "cancelled", "Cancelled")
        self.assertIn("in sleep", msg["traceback"])
        self.assertOk(w.call("add", 1, 2), 3)
        self.assertOk(w.call("sleep", 0.1), 0.1)

    def test_cancel_spin_and_lock_waits(self):
        w = self.ready_worker()
        for fn, args, blocked in (
            ("announced", ["spin", 30], False),
            ("block_on_lock", [], True),
            ("block_on_event", [], True),
        ):
            cid = self.start_announced(w, fn, *args, blocked=blocked)
            w.send({"t": "cancel", "id": cid})
            msg = w.recv()
            self.assertEqual(msg["id"], cid, fn)
            self.assertErr(msg, "cancelled", "Cancelled")
            self.assertNotIn("before it started", msg["message"])
        self.assertOk(w.call("add", 1, 2), 3)

    def test_handler_sees_cancelled_and_can_clean_up(self):
        w = self.ready_worker()
        cid = self.start_announced(w, "tracked_sleep", 30)
        w.send({"t": "cancel", "id": cid})
        self.assertErr(w.recv(), "cancelled")
        self.assertIn("tracked_sleep cancelled", w.call("events")["v"])

    def test_swallowed_cancel_returns_ok(self):
        w = self.ready_worker()
        cid = self.start_announced(w, "swallow_announced", 0.6)
        w.send({"t": "cancel", "id": cid})
        w.send({"t": "cancel", "id": cid})  # a second cancel for the same call is ignored
        msg = w.recv()
        self.assertEqual(msg["id"], cid)
        self.assertOk(msg, "late")
        self.assertOk(w.call("add", 1, 2), 3)

    def test_late_cancel_does_not_hit_next_call(self):
        w = self.ready_worker(fixture("handlers.py"))
        cid = w.start_call("add", 1, 2)
        self.assertOk(w.recv(), 3)
        w.send({"t": "cancel", "id": cid})
        w.send({"t": "cancel", "id": 12345})
        self.assertOk(w.call("sleep", 0.3), 0.3)
        self.assertOk(w.call("spin", 0.2), 0.2)

    def test_cancel_race_stress(self):
        """Cancels landing right around the end of calls never affect the following call."""
        w = self.ready_worker(fixture("handlers.py"))
        outcomes = set()
        for i in range(300):
            delay = (i % 6) * 0.0005
            if i % 50 == 0:
                delay = 30  # surely cancelled (recv() would time out first)
            cid = w.start_call("sleep", delay)
            if i % 50 == 25:
                msg = w.recv()  # surely finished: a late cancel
                w.send({"t": "cancel", "id": cid})
            else:
                if i % 3:
                    time.sleep(min(delay, 0.02) * (i % 4) / 2)
                w.send({"t": "cancel", "id": cid})
                msg = w.recv()
            self.assertEqual(msg["id"], cid)
            if msg["t"] == "err":
                self.assertEqual(msg["kind"], "cancelled", msg)
            else:
                self.assertOk(msg, delay)
            outcomes.add(msg["t"])
            self.assertOk(w.call("echo", i), i)
        self.assertEqual(outcomes, {"ok", "err"})

    def test_cancel_of_queued_call(self):
        w = self.ready_worker()
        first = w.start_call("announced", "sleep", 30)
        second = w.start_call("add", 1, 2)
        third = w.start_call("add", 2, 2)
        # Cancels are handled in the order they are read: `second` is still queued behind
        # `first` when its cancel is read, whatever the timing (first is cancelled only after).
        # A queued call is answered at once, before the running one.
        w.wait_started(first)
        w.send({"t": "cancel", "id": second})
        w.send({"t": "cancel", "id": first})
        replies = [w.recv() for _ in range(3)]
        self.assertEqual([m["id"] for m in replies], [second, first, third])
        self.assertErr(replies[0], "cancelled", "Cancelled")
        self.assertIn("before it started", replies[0]["message"])
        self.assertErr(replies[1], "cancelled", "Cancelled")
        self.assertNotIn("before it started", replies[1]["message"])
        self.assertOk(replies[2], 4)

    def test_pipelined_calls(self):
        w = self.ready_worker(fixture("handlers.py"))
        ids = [w.start_call("echo", i) for i in range(200)]
        got = [w.recv() for _ in ids]
        self.assertEqual([m["id"] for m in got], ids)
        self.assertEqual([m["v"] for m in got], list(range(200)))

    # -- liveness -----------------------------------------------------------------------------

    def test_ping_while_busy_in_spin(self):
        w = self.ready_worker()
        w.send({"t": "ping", "id": 1})
        self.assertEqual(w.recv(), {"t": "pong", "id": 1})
        cid = self.start_announced(w, "announced", "spin", 60)
        # Ordering, not speed: the pongs come while the handler still spins (it would run for
        # 60 s; recv gives up after 10), before the reply that the cancel below produces.
        for i in range(2, 5):
            w.send({"t": "ping", "id": i})
            self.assertEqual(w.recv(), {"t": "pong", "id": i})
        w.send({"t": "cancel", "id": cid})
        msg = w.recv()
        self.assertEqual(msg["id"], cid)
        self.assertErr(msg, "cancelled", "Cancelled")

    def test_eof_exits_while_spinning(self):
        w = self.ready_worker()
        self.start_announced(w, "announced", "spin", 60)
        w.close_requests()
        self.assertEqual(w.wait_exit(), 0)  # within 10 s: long before the spin would end

    def test_eof_exits_while_sleeping_and_idle(self):
        w = self.ready_worker()
        self.start_announced(w, "announced", "sleep", 60, blocked=True)
        w.close_requests()
        self.assertEqual(w.wait_exit(), 0)
        w = self.ready_worker(fixture("handlers.py"))
        w.close_requests()
        self.assertEqual(w.wait_exit(), 0)

    def test_hang_c_holds_the_gil(self):
        w = self.ready_worker()
        # Blocked: in the C call (nothing else puts the main thread to sleep with the GIL held).
        cid = self.start_announced(w, "hang_c_announced", blocked=True)
        w.send({"t": "ping", "id": 1})
        self.assertTrue(w.nothing_within(0.5), "a pong came back although the GIL is held")
        w.send({"t": "cancel", "id": cid})
        self.assertTrue(w.nothing_within(0.3))
        w.kill()

    @unittest.skipUnless(IS_LINUX, "PR_SET_PDEATHSIG is Linux-only")
    def test_parent_death_kills_worker_stuck_in_c(self):
        env = dict(os.environ)
        if self.READER:
            env["PYVISOR_READER"] = self.READER
        out = subprocess.check_output(
            [PYTHON, os.path.join(HERE, "fixtures", "orphan_parent.py")], env=env, timeout=20
        )
        pid = int(out.decode().strip())
        deadline = time.monotonic() + 10  # SIGKILL is sent at once; this only waits for it
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = pid_alive(pid)
        if alive:
            os.kill(pid, signal.SIGKILL)
        self.assertFalse(alive, "worker outlived its parent")

    def test_wrong_parent_pid_exits(self):
        w = self.worker(fixture("handlers.py"), env={"PYVISOR_PARENT_PID": "1"}, capture=True)
        self.assertEqual(w.wait_exit(), 1)

    def test_sigint_is_ignored(self):
        w = self.ready_worker()
        cid = self.start_announced(w, "announced", "sleep", 60, blocked=True)
        os.kill(w.proc.pid, signal.SIGINT)
        # Had SIGINT raised KeyboardInterrupt, that error would be the reply; the sleep goes
        # on instead, until it is cancelled.
        w.send({"t": "cancel", "id": cid})
        msg = w.recv()
        self.assertEqual(msg["id"], cid)
        self.assertErr(msg, "cancelled", "Cancelled")
        self.assertOk(w.call("kill_self", int(signal.SIGINT)), "survived")

    def test_stray_sigusr1_is_harmless(self):
        w = self.ready_worker(fixture("handlers.py"))
        cid = w.start_call("count", 3, stream=True, credit=1)
        self.assertEqual(w.recv(), {"t": "item", "id": cid, "v": 0})
        w.wait_blocked()  # in the credit wait, which a signal interrupts (EINTR)
        os.kill(w.proc.pid, signal.SIGUSR1)
        # Without a cancel for this call the signal raises nothing: the stream goes on when it
        # gets credit (a Cancelled would have ended it with an error instead).
        w.send({"t": "credit", "id": cid, "n": 10})
        self.assertEqual(w.recv(), {"t": "item", "id": cid, "v": 1})
        self.assertEqual(w.recv(), {"t": "item", "id": cid, "v": 2})
        self.assertEqual(w.recv(), {"t": "end", "id": cid})

    # -- exit and protocol errors -------------------------------------------------------------

    def test_exit_message(self):
        w = self.ready_worker(fixture("handlers.py"))
        w.send({"t": "exit"})
        self.assertEqual(w.wait_exit(), 0)

    def test_exit_finishes_queued_calls_first(self):
        w = self.ready_worker(fixture("handlers.py"))
        cid = w.start_call("sleep", 0.2)
        cid2 = w.start_call("add", 1, 2)
        w.send({"t": "exit"})
        msg = w.recv()
        self.assertEqual(msg["id"], cid)
        self.assertOk(msg, 0.2)
        msg = w.recv()
        self.assertEqual(msg["id"], cid2)
        self.assertOk(msg, 3)
        self.assertEqual(w.wait_exit(), 0)

    def test_keyword_arguments(self):
        w = self.ready_worker(fixture("handlers.py"))
        # "kw": the last element of args holds the keyword arguments.
        self.assertOk(w.call("add", 1, {"b": 2}, kw=True), 3)
        self.assertOk(w.call("add", {"b": "y", "a": "x"}, kw=True), "xy")
        msg = w.call("add", 1, {"c": 2}, kw=True)
        self.assertErr(msg, "python", "TypeError")
        self.assertIn("unexpected keyword argument 'c'", msg["message"])
        # A generator (streamed) with keyword arguments: its kind is kept.
        cid = w.start_call("count", {"n": 3}, kw=True, stream=True, credit=10)
        items = [w.recv() for _ in range(4)]
        self.assertEqual([m.get("v") for m in items[:3]], [0, 1, 2])
        self.assertEqual(items[3], {"t": "end", "id": cid})
        for bad in (
            {"t": "call", "id": 900, "fn": "add", "args": [1, 2], "kw": True},
            {"t": "call", "id": 901, "fn": "add", "args": [], "kw": True},
            {"t": "call", "id": 902, "fn": "add", "args": [{"a": 1, "b": 2}], "kw": 1},
        ):
            w.send(bad)
            msg = w.recv()
            self.assertEqual(msg["id"], bad["id"])
            self.assertErr(msg, "bad_request", "BadRequest")
        self.assertOk(w.call("add", 1, 2), 3)

    def test_bad_request(self):
        w = self.ready_worker(fixture("handlers.py"))
        for bad in (
            {"t": "call", "id": 1, "fn": "add"},
            {"t": "call", "id": 2, "fn": 5, "args": []},
            {"t": "call", "id": 3, "fn": "count", "args": [3], "stream": True},
            {"t": "call", "id": 4, "fn": "count", "args": [3], "stream": "yes", "credit": 1},
        ):
            w.send(bad)
            msg = w.recv()
            self.assertEqual(msg["id"], bad["id"])
            self.assertErr(msg, "bad_request", "BadRequest")
        self.assertOk(w.call("add", 1, 2), 3)

    def test_protocol_errors_exit_3(self):
        cases = [
            b"\x00\x00\x00\x05hello",  # not JSON
            frame([1, 2]),  # not an object
            frame({"t": "bogus"}),  # unknown type
            frame({"no_t": 1}),
            frame({"t": "call", "fn": "add", "args": [1, 2]}),  # call without an id
            b"\x00\x00\x00\x03\xff\xfe\xfd",  # not UTF-8
            b"\xff\xff\xff\xff",  # oversize
            frame({"t": "cancel"}),
        ]
        for data in cases:
            self.assertProtocolError(fixture("handlers.py"), data)

    def test_eof_inside_frame_is_a_protocol_error(self):
        w = self.ready_worker(fixture("handlers.py"))
        w.send_raw(b"\x00\x00\x01\x00{")
        w.close_requests()
        self.assertEqual(w.wait_exit(), 3)

    def test_whitespace_json_is_accepted(self):
        w = self.ready_worker(fixture("handlers.py"))
        body = b' { "t" : "call", "id" : 1, "fn" : "add", "args" : [1, 2] } '
        w.send_raw(len(body).to_bytes(4, "big") + body)
        self.assertOk(w.recv(), 3)

    def test_frames_split_across_writes(self):
        w = self.ready_worker(fixture("handlers.py"))
        data = frame({"t": "call", "id": 1, "fn": "add", "args": [1, 2]})
        for b in data[:-1]:
            w.send_consumed(bytes([b]))  # read by the worker before the next byte is written
        w.send_raw(data[-1:])
        self.assertOk(w.recv(), 3)

    # -- binary payloads ----------------------------------------------------------------------

    def test_binary_round_trip(self):
        w = self.ready_worker(fixture("binary.py"))
        for value in (b"", b"\x00", bytes(range(256)) * 4096, b"x" * 3000000):
            self.assertOk(w.call("echo", value), value)
        nested = {"image": b"\x89PNG", "meta": {"w": 1, "parts": [b"a", b"", [b"\xff" * 70000]]}}
        self.assertOk(w.call("echo", nested), nested)
        self.assertOk(w.call("size", b"abc"), {"type": "bytes", "len": 3})
        self.assertOk(
            w.call("types", b"a", 1, "s", [b"b", {"k": b"c"}], None),
            ["bytes", "int", "str", ["bytes", {"k": "bytes"}], "NoneType"],
        )
        self.assertOk(w.call("reversed_", b"abc"), b"cba")
        self.assertOk(w.call("add", 1, 2), 3)

    def test_binary_wire_format(self):
        w = self.ready_worker(fixture("binary.py"))
        w.start_call("echo", [b"ab", {"k": b""}])
        msg = w.recv(raw=True)
        self.assertEqual(
            msg,
            {
                "t": "ok",
                "id": 1,
                "v": [{"__pyvisor_bytes__": 0}, {"k": {"__pyvisor_bytes__": 1}}],
                "b": 2,
                "attachments": [b"ab", b""],
            },
        )
        # Without binary values nothing changes: no "b", no escaping.
        w.start_call("echo", {"__pyvisor_bytes__": 0})
        self.assertEqual(w.recv(raw=True), {"t": "ok", "id": 2, "v": {"__pyvisor_bytes__": 0}})

    def test_binary_results(self):
        w = self.ready_worker(fixture("binary.py"))
        self.assertOk(
            w.call("nested", 2),
            {"data": b"\x00\x01\x02" * 2, "n": 2, "parts": [b"a", b"", {"deep": [b"\xff"]}]},
        )
        self.assertOk(w.call("mutable", 100000), b"\x07" * 100000)
        self.assertOk(w.call("view", 3), [b"\x01\x02\x03", bytes([0, 2, 4, 6])])
        self.assertOk(w.call("big_bytes", 5000000), b"z" * 5000000)

    def test_binary_many_attachments(self):
        w = self.ready_worker(fixture("binary.py"))
        many = [bytes([i % 256]) * 20000 for i in range(700)] + [b"s%d" % i for i in range(1500)]
        self.assertOk(w.call("echo", many), many)

    def test_binary_reserved_key_is_escaped(self):
        w = self.ready_worker(fixture("binary.py"))
        self.assertOk(
            w.call("reserved"), {"__pyvisor_bytes__": 0, "bin": b"xyz", "s": "__pyvisor_bytes__"}
        )
        w.start_call("reserved")
        msg = w.recv(raw=True)
        self.assertEqual(msg["v"]["__pyvisor_bytes__"], "escape")
        self.assertEqual(msg["attachments"], [b"xyz"])
        arg = {"__pyvisor_bytes__": [b"q", {"__pyvisor_bytes__": 1}], "x": b"r"}
        self.assertOk(w.call("echo", arg), arg)
        self.assertOk(w.call("types", arg), [{"__pyvisor_bytes__": ["bytes", {"__pyvisor_bytes__": "int"}], "x": "bytes"}])

    def test_binary_stream(self):
        w = self.ready_worker(fixture("binary.py"))
        cid = w.start_call("chunks", 5, 70000, stream=True, credit=2)
        self.assertEqual([w.recv()["v"] for _ in range(2)], [b"\x00" * 70000, b"\x01" * 70000])
        w.wait_blocked()  # waiting for credit
        self.assertEqual(w.barrier(), [], "item sent beyond credit")
        w.send({"t": "credit", "id": cid, "n": 10})
        self.assertEqual([w.recv()["v"][:1] for _ in range(3)], [b"\x02", b"\x03", b"\x04"])
        self.assertEqual(w.recv(), {"t": "end", "id": cid})
        self.assertOk(w.call("chunks", 2, 1), [b"\x00", b"\x01"])

    def test_binary_max_message(self):
        w = self.ready_worker(fixture("binary.py"), env={"PYVISOR_MAX_MESSAGE": "2000"})
        self.assertOk(w.call("big_bytes", 2000), b"z" * 2000)
        msg = w.call("big_bytes", 2001)
        self.assertErr(msg, "serialization", "ValueError")
        self.assertIn("2001-byte binary value", msg["message"])
        self.assertOk(w.call("echo", [b"y" * 1500, b"y" * 1500]), [b"y" * 1500, b"y" * 1500])
        self.assertOk(w.call("add", 1, 2), 3)
        # An incoming attachment over the limit is a protocol error.
        w.send_raw(binary_frames({"t": "call", "id": 9, "fn": "echo", "args": [b"z" * 2001]}))
        self.assertEqual(w.wait_exit(), 3)

    def test_binary_args_nested_too_deeply(self):
        w = self.ready_worker(fixture("binary.py"))
        depth = 100000
        body = (
            '{"t":"call","id":7,"fn":"echo","args":[' + "[" * depth + '{"__pyvisor_bytes__":0}'
            + "]" * depth + '],"b":2}'
        ).encode()
        w.send_raw(len(body).to_bytes(4, "big") + body + b"\x00\x00\x00\x02hi" + b"\x00\x00\x00\x00")
        msg = w.recv()
        self.assertEqual(msg["id"], 7)
        self.assertErr(msg, "serialization", "RecursionError")
        self.assertOk(w.call("echo", b"after"), b"after")

    def test_binary_protocol_errors_exit_3(self):
        def att(b):
            return len(b).to_bytes(4, "big") + b

        cases = [
            # placeholder index out of range
            frame({"t": "call", "id": 1, "fn": "echo", "args": [{"__pyvisor_bytes__": 1}], "b": 1}) + att(b"a"),
            # an attachment nobody refers to
            frame({"t": "call", "id": 1, "fn": "echo", "args": [{"__pyvisor_bytes__": 0}], "b": 2}) + att(b"a") + att(b"b"),
            # the same attachment twice
            frame({"t": "call", "id": 1, "fn": "echo", "args": [{"__pyvisor_bytes__": 0}, {"__pyvisor_bytes__": 0}], "b": 1}) + att(b"a"),
            # a malformed placeholder
            frame({"t": "call", "id": 1, "fn": "echo", "args": [{"__pyvisor_bytes__": "x"}], "b": 1}) + att(b"a"),
            frame({"t": "call", "id": 1, "fn": "echo", "args": [], "b": -1}),
            frame({"t": "call", "id": 1, "fn": "echo", "args": [], "b": "1"}),
            frame({"t": "ping", "id": 1, "b": 1}) + att(b"a"),
        ]
        for data in cases:
            self.assertProtocolError(fixture("binary.py"), data)

    def test_binary_eof_between_attachments_is_a_protocol_error(self):
        w = self.ready_worker(fixture("binary.py"))
        data = binary_frames({"t": "call", "id": 1, "fn": "echo", "args": [b"a", b"b" * 100000]})
        w.send_raw(data[:-50000])
        w.close_requests()
        self.assertEqual(w.wait_exit(), 3)

    def test_binary_split_across_writes(self):
        w = self.ready_worker(fixture("binary.py"))
        data = binary_frames({"t": "call", "id": 1, "fn": "echo", "args": [[b"ab", b"c" * 70000]]})
        for i in range(0, 200):
            w.send_consumed(data[i : i + 1])
        w.send_raw(data[200:])
        self.assertOk(w.recv(), [b"ab", b"c" * 70000])

    def test_binary_garbage_hooks(self):
        w = self.ready_worker(fixture("binary.py"))
        w.start_call("bad_binary", "index")
        msg = w.recv(raw=True)
        self.assertEqual(msg["v"], {"__pyvisor_bytes__": 5})
        self.assertEqual(msg["attachments"], [b"abc"])
        self.assertEqual(w.recv()["v"], "not reached")


class EpollReaderTests(Base, unittest.TestCase):
    READER = None


class ThreadReaderTests(Base, unittest.TestCase):
    READER = "thread"


class LockInterruptTest(unittest.TestCase):
    """The credit wait relies on lock acquisition being interruptible by signals (POSIX)."""

    def test_lock_acquire_interrupted_by_signal(self):
        # The signal is sent once the main thread sits in acquire(): seen on that line twice,
        # with a sleep in between that hands it the GIL (so it cannot be merely waiting for the
        # GIL there). An acquire() that signals could not interrupt would hang: check_output's
        # timeout fails the test.
        code = r"""
import _thread, signal, sys, threading, time
class Boom(BaseException): pass
def handler(s, f): raise Boom()
signal.signal(signal.SIGUSR1, handler)
main = threading.get_ident()
line = [-1]
def signal_when_blocked():
    seen = 0
    while seen < 2:
        time.sleep(0.001)
        frame = sys._current_frames().get(main)
        seen = seen + 1 if frame is not None and frame.f_lineno == line[0] else 0
    signal.pthread_kill(main, signal.SIGUSR1)
lock = _thread.allocate_lock(); lock.acquire()
threading.Thread(target=signal_when_blocked, daemon=True).start()
try:
    line[0] = sys._getframe().f_lineno + 1
    lock.acquire()
except Boom:
    print("interrupted")
"""
        out = subprocess.check_output([PYTHON, "-c", code], timeout=30).decode()
        self.assertEqual(out, "interrupted\n")


class ApiTest(unittest.TestCase):
    def test_decorators_outside_a_worker(self):
        sys.path.insert(0, os.path.dirname(HERE))
        try:
            import pyvisor
        finally:
            sys.path.pop(0)
        self.assertIsNone(pyvisor.current_call())
        self.assertTrue(issubclass(pyvisor.Cancelled, BaseException))
        self.assertFalse(issubclass(pyvisor.Cancelled, Exception))

        def f():
            return 1

        self.assertIs(pyvisor.handler(name="__api_test_f")(f), f)
        with self.assertRaises(ValueError):
            pyvisor.handler(name="__api_test_f")(f)
        self.assertIn("__api_test_f", pyvisor._handlers)
        # Importing pyvisor loads none of the runtime (current_call() only looks it up).
        self.assertEqual([m for m in sys.modules if m.startswith("pyvisor._")], [])


if __name__ == "__main__":
    unittest.main()

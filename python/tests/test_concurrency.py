"""Tests of pipelined calls, the persistent event loop and loop mode (PYVISOR_CONCURRENCY > 1),
driving real worker processes over fds 3/4 (see test_runtime.py for the conventions).

    python3 -m unittest discover -s python/tests            (from the repository root)

Like test_runtime.py, every test runs in both reader modes, and no test sleeps to let something
happen: handlers announce themselves on stderr ("started <id>", see fixtures/overlap.py), pings
serve as barriers, and calls that must overlap wait on an asyncio.Event that a later call sets.
Time bounds are generous: they only catch a hang (or calls run one after another), never measure
speed.
"""

import os
import shutil
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _worker import HERE, Worker, WorkerAsserts  # noqa: E402

OVERLAP = os.path.join(HERE, "fixtures", "overlap.py")
SYNC_ONLY = os.path.join(HERE, "fixtures", "sync_only.py")
IS_LINUX = sys.platform.startswith("linux")
TP = "00-0af7651916cd43dd8448eb211c80319c-%016x-01"


class Base(WorkerAsserts):
    READER = None
    CONCURRENCY = None  # None: the variable is not set (serial mode)

    def worker(self, script=None, env=None, concurrency="default", **kw):
        kw.setdefault("capture", True)
        e = dict(env or {})
        if self.READER:
            e["PYVISOR_READER"] = self.READER
        c = self.CONCURRENCY if concurrency == "default" else concurrency
        if c is not None:
            e["PYVISOR_CONCURRENCY"] = str(c)
        w = Worker(script or OVERLAP, env=e, **kw)
        self.addCleanup(w.close)
        return w

    def recv_all(self, w, n, timeout=10.0):
        """The next n frames, by id (a dict id -> list of frames)."""
        out = {}
        for _ in range(n):
            msg = w.recv(timeout)
            out.setdefault(msg.get("id"), []).append(msg)
        return out

    def stderr_text(self, w):
        with w._output:
            return b"".join(w.stderr).decode()


class CommonTests(Base):
    """Behaviour that is the same in serial mode and loop mode."""

    def test_ready_reports_concurrency_and_async(self):
        w = self.ready_worker()
        self.assertEqual(w.ready_msg["concurrency"], self.CONCURRENCY or 1)
        handlers = {h["name"]: h for h in w.ready_msg["handlers"]}
        self.assertEqual(handlers["loop_id"], {"name": "loop_id", "stream": False, "async": True})
        self.assertEqual(
            handlers["agen_count"], {"name": "agen_count", "stream": True, "async": True}
        )
        self.assertEqual(
            handlers["gen_count"], {"name": "gen_count", "stream": True, "async": False}
        )
        self.assertEqual(handlers["add"], {"name": "add", "stream": False, "async": False})
        # A plain function that returns a coroutine is not an async handler (it is run like one).
        self.assertIs(handlers["returns_coroutine"]["async"], False)

    def test_async_handlers_share_one_loop_with_async_init(self):
        w = self.ready_worker()
        ids = {w.call("loop_id")["v"] for _ in range(5)}
        self.assertEqual(len(ids), 1)
        self.assertEqual(ids, {w.call("init_loop_id")["v"]})
        self.assertOk(w.call("returns_coroutine", 21), 42)
        self.assertEqual(ids, {w.call("loop_id")["v"]})

    def test_init_objects_and_background_task_are_usable(self):
        # The async @on_init made a Lock and two Queues on the loop and started a task that
        # doubles what it reads: all of them work in later calls, sync calls in between.
        w = self.ready_worker()
        for x in range(5):
            self.assertOk(w.call("use_init", x), 2 * x)
            self.assertOk(w.call("add", x, 1), x + 1)

    def test_ping_during_async_init(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        gate = os.path.join(tmp, "gate")
        w = self.worker(env={"PYVISOR_TEST_INIT_GATE": gate})
        w.wait_stderr(b"init started\n")
        for i in (1, 2):
            w.send({"t": "ping", "id": i})
            self.assertEqual(w.recv(), {"t": "pong", "id": i})  # init cannot end before `gate`
        open(gate, "w").close()
        self.assertEqual(w.ready()["t"], "ready")
        self.assertOk(w.call("use_init", 4), 8)

    def test_current_call_in_async_code(self):
        w = self.ready_worker()
        msg = w.call("async_info", tp=TP % 7)
        want = {"id": msg["id"], "fn": "async_info", "tp": TP % 7}
        self.assertOk(msg, {"here": want, "task": want, "thread": want})
        msg = w.call("sync_info_thread", tp=TP % 8)
        want = {"id": msg["id"], "fn": "sync_info_thread", "tp": TP % 8}
        self.assertOk(msg, {"here": want, "thread": want})
        msg = w.call("context")
        self.assertOk(msg, {"id": msg["id"], "fn": "context", "traceparent": None})

    def test_cancel_async_call_cancels_its_task(self):
        w = self.ready_worker()
        cid = w.start_call("tracked_async_sleep", 60)
        w.wait_started(cid)
        w.send({"t": "cancel", "id": cid})
        msg = w.recv()  # within 10 s, long before the 60 s sleep would end
        self.assertEqual(msg["id"], cid)
        self.assertErr(msg, "cancelled", "Cancelled")
        self.assertNotIn("before it started", msg["message"])
        self.assertIn("tracked_async_sleep", msg["traceback"])
        events = w.call("events")["v"]
        self.assertIn("CancelledError %d" % cid, events)  # seen inside the coroutine
        self.assertIn("finally %d" % cid, events)
        # The loop is fine afterwards: the same loop, async calls and init objects work.
        self.assertEqual(w.call("loop_id")["v"], w.call("init_loop_id")["v"])
        self.assertOk(w.call("use_init", 5), 10)
        self.assertOk(w.call("tracked_async_sleep", 0.01), 0.01)

    def test_swallowed_async_cancel_replies_normally(self):
        w = self.ready_worker()
        cid = w.start_call("swallow_async", 60)
        w.wait_started(cid)
        w.send({"t": "cancel", "id": cid})
        w.send({"t": "cancel", "id": cid})  # ignored: at most one cancel per call
        self.assertOk(w.recv(), "swallowed")
        self.assertOk(w.call("async_nap", 0), w.next_id - 1)

    def test_cancel_sync_handler_still_raises_cancelled(self):
        w = self.ready_worker()
        cid = w.start_call("sync_tracked_block", 60)
        w.wait_started(cid)
        w.wait_blocked()
        w.send({"t": "cancel", "id": cid})
        msg = w.recv()
        self.assertEqual(msg["id"], cid)
        self.assertErr(msg, "cancelled", "Cancelled")
        self.assertIn("Cancelled %d" % cid, w.call("events")["v"])
        self.assertOk(w.call("add", 1, 2), 3)
        self.assertOk(w.call("async_nap", 0), w.next_id - 1)

    def test_async_stream_cancel_runs_finally(self):
        w = self.ready_worker()
        # Cancelled while waiting for credit: its finally runs.
        cid = w.start_call("agen_count", 100, "credit", stream=True, credit=1)
        self.assertEqual(w.recv(), {"t": "item", "id": cid, "v": 0})
        w.send({"t": "cancel", "id": cid})
        msg = w.recv()
        self.assertEqual(msg["id"], cid)
        self.assertErr(msg, "cancelled", "Cancelled")
        self.assertIn("agen finally credit", w.call("events")["v"])
        # Cancelled inside the generator, at an await: CancelledError there, finally runs.
        cid = w.start_call("agen_then_wait", "await", stream=True, credit=5)
        self.assertEqual(w.recv(), {"t": "item", "id": cid, "v": 0})
        w.wait_stderr(b"agen waiting await\n")
        w.send({"t": "cancel", "id": cid})
        msg = w.recv()
        self.assertEqual(msg["id"], cid)
        self.assertErr(msg, "cancelled", "Cancelled")
        events = w.call("events")["v"]
        self.assertIn("agen CancelledError await", events)
        self.assertIn("agen finally await", events)
        self.assertOk(w.call("use_init", 1), 2)

    def test_sync_stream_cancel_at_yield(self):
        w = self.ready_worker()
        cid = w.start_call("gen_count", 100, "g", stream=True, credit=1)
        self.assertEqual(w.recv(), {"t": "item", "id": cid, "v": 0})
        w.send({"t": "cancel", "id": cid})
        self.assertErr(w.recv(), "cancelled", "Cancelled")
        events = w.call("events")["v"]
        self.assertIn("gen Cancelled g", events)
        self.assertIn("gen finally g", events)

    def test_streams_of_every_kind(self):
        w = self.ready_worker()
        for fn, args in (("count", [4]), ("gen_count", [4, "x"]), ("agen_count", [4, "y"])):
            cid = w.start_call(fn, *args, stream=True, credit=2)
            self.assertEqual([w.recv()["v"] for _ in range(2)], [0, 1])
            self.assertEqual(w.barrier(), [], "item sent beyond credit")
            w.send({"t": "credit", "id": cid, "n": 5})
            self.assertEqual([w.recv()["v"] for _ in range(2)], [2, 3])
            self.assertEqual(w.recv(), {"t": "end", "id": cid})
            self.assertOk(w.call(fn, *args), [0, 1, 2, 3])
        msg = w.call("loop_id", stream=True, credit=1)
        self.assertErr(msg, "python", "TypeError")

    def test_errors_and_unknown_handlers(self):
        w = self.ready_worker()
        self.assertErr(w.call("nope"), "unknown_handler", "UnknownHandler")
        self.assertErr(w.call("fail", "x"), "python", "ValueError")
        self.assertErr(w.call("loop_id", 1), "python", "TypeError")
        self.assertErr(w.call("unserializable"), "serialization")
        self.assertOk(w.call("add", 1, 2), 3)

    def test_cancel_of_unknown_or_finished_call_is_ignored(self):
        w = self.ready_worker()
        cid = w.start_call("add", 1, 2)
        self.assertOk(w.recv(), 3)
        w.send({"t": "cancel", "id": cid})
        w.send({"t": "cancel", "id": 999999})
        self.assertEqual(w.barrier(), [])
        self.assertOk(w.call("async_nap", 0), w.next_id - 1)

    def test_many_async_calls_with_cancels(self):
        """Cancels around the start and end of async calls: every call gets one reply, the loop
        keeps working."""
        w = self.ready_worker()
        for i in range(60):
            cid = w.start_call("async_nap", (i % 4) * 0.001)
            if i % 3:
                w.send({"t": "cancel", "id": cid})
            msg = w.recv()
            self.assertEqual(msg["id"], cid)
            if msg["t"] == "err":
                self.assertEqual(msg["kind"], "cancelled", msg)
            else:
                self.assertOk(msg, cid)
            self.assertOk(w.call("use_init", i), 2 * i)
        self.assertEqual(w.barrier(), [])

    def test_cancel_race_stress(self):
        """Many calls in flight, sync and async, cancels landing at every moment: every call gets
        exactly one terminal reply, right or cancelled, and the worker keeps working."""
        w = self.ready_worker()
        expected = {}
        for i in range(200):
            k = i % 5
            if k == 0:
                cid = w.start_call("async_nap", (i % 7) * 0.001)
                expected[cid] = cid
            elif k == 1:
                cid = w.start_call("sleep", (i % 3) * 0.0005)
                expected[cid] = (i % 3) * 0.0005
            elif k == 2:
                cid = w.start_call("sync_block", 30 if i % 20 == 2 else 0)
                expected[cid] = 0
            elif k == 3:
                cid = w.start_call("tracked_async_sleep", 30 if i % 20 == 8 else 0.001)
                expected[cid] = 0.001
            else:
                cid = w.start_call("add", i, 1)
                expected[cid] = i + 1
            if i % 4 != 3:  # (the 30 s calls are among the cancelled ones)
                w.send({"t": "cancel", "id": cid})
        replies = self.recv_all(w, len(expected), timeout=20)
        self.assertEqual(set(replies), set(expected))
        for cid, msgs in replies.items():
            self.assertEqual(len(msgs), 1, msgs)
            msg = msgs[0]
            if msg["t"] == "err":
                self.assertEqual(msg["kind"], "cancelled", msg)
            else:
                self.assertOk(msg, expected[cid])
        self.assertEqual(w.barrier(), [])
        self.assertOk(w.call("use_init", 3), 6)
        self.assertOk(w.call("add", 1, 1), 2)


class SerialTests(CommonTests):
    """Serial mode (concurrency 1): pipelined calls, the loop run per call."""

    def test_pipelined_calls_run_in_order(self):
        w = self.ready_worker()
        first = w.start_call("sync_block", 0.2)
        ids = [w.start_call("record", i) for i in range(20)]
        ids += [w.start_call("async_nap", 0)]
        replies = [w.recv() for _ in range(len(ids) + 1)]
        self.assertEqual([m["id"] for m in replies], [first] + ids)
        self.assertEqual(replies[20]["v"], list(range(20)))
        self.assertOk(replies[-1], ids[-1])

    def test_pipelined_call_cancelled_while_first_runs(self):
        w = self.ready_worker()
        first = w.start_call("sync_block", 60)
        second = w.start_call("marker", "second")
        w.wait_started(first)
        w.wait_blocked()
        w.send({"t": "cancel", "id": second})
        msg = w.recv()  # at once: the first call still sleeps for a minute
        self.assertEqual(msg["id"], second)
        self.assertErr(msg, "cancelled", "Cancelled")
        self.assertEqual(msg["message"], "call %d was cancelled before it started" % second)
        w.send({"t": "cancel", "id": first})
        msg = w.recv()
        self.assertEqual(msg["id"], first)
        self.assertErr(msg, "cancelled", "Cancelled")
        # Calls run in order, so a third call that ran means the second would have run by now.
        self.assertOk(w.call("marker", "third"), "third")
        w.wait_stderr(b"ran third\n")
        self.assertNotIn("ran second", self.stderr_text(w))

    def test_pipelined_call_cancelled_while_async_call_runs(self):
        w = self.ready_worker()
        first = w.start_call("tracked_async_sleep", 60)
        second = w.start_call("marker", "second")
        w.wait_started(first)
        w.send({"t": "cancel", "id": second})
        msg = w.recv()
        self.assertEqual(msg["id"], second)
        self.assertIn("before it started", msg["message"])
        w.send({"t": "cancel", "id": first})
        self.assertErr(w.recv(), "cancelled", "Cancelled")
        self.assertOk(w.call("marker", "third"), "third")
        w.wait_stderr(b"ran third\n")
        self.assertNotIn("ran second", self.stderr_text(w))

    def test_asyncio_is_not_imported_for_sync_handlers(self):
        w = self.ready_worker(SYNC_ONLY)
        self.assertEqual(w.ready_msg["concurrency"], 1)
        self.assertOk(w.call("square", 3), 9)
        cid = w.start_call("square", 4)
        w.send({"t": "cancel", "id": cid})
        self.assertEqual(w.recv()["id"], cid)
        self.assertOk(w.call("asyncio_imported"), {"at_init": False, "now": False})


class LoopModeTests(CommonTests):
    """Loop mode: calls run as tasks on the loop, side by side."""

    CONCURRENCY = 100

    def test_keyword_arguments(self):
        w = self.ready_worker()
        msg = w.call("async_nap", {"seconds": 0}, kw=True)
        self.assertOk(msg, msg["id"])  # it returns current_call().id
        msg = w.call("async_nap", {"secs": 0}, kw=True)
        self.assertErr(msg, "python", "TypeError")

    def test_async_calls_overlap(self):
        w = self.ready_worker()
        ids = [w.start_call("gate_wait", "g", tp=TP % i) for i in range(30)]
        for cid in ids:
            w.wait_started(cid)  # all 30 wait at once
        opener = w.start_call("gate_open", "g")
        replies = self.recv_all(w, 31)
        self.assertOk(replies[opener][0], "opened")
        for i, cid in enumerate(ids):
            want = {"id": cid, "fn": "gate_wait", "tp": TP % i}
            want["thread"] = dict(want)
            self.assertOk(replies[cid][0], want)  # current_call() is right in every task

    def test_hundred_sleeps_take_about_one(self):
        w = self.ready_worker()
        t0 = time.monotonic()
        ids = [w.start_call("async_nap", 0.2) for _ in range(100)]
        replies = self.recv_all(w, 100)
        self.assertLess(time.monotonic() - t0, 5.0)  # one after another: 20 s
        for cid in ids:
            self.assertOk(replies[cid][0], cid)

    def test_cancel_one_task_others_finish(self):
        w = self.ready_worker()
        ids = [w.start_call("gate_wait", "c") for _ in range(5)]
        victim = w.start_call("tracked_async_sleep", 60)
        for cid in ids + [victim]:
            w.wait_started(cid)
        w.send({"t": "cancel", "id": victim})
        msg = w.recv()
        self.assertEqual(msg["id"], victim)
        self.assertErr(msg, "cancelled", "Cancelled")
        opener = w.start_call("gate_open", "c")
        replies = self.recv_all(w, 6)
        self.assertEqual(set(replies), set(ids) | {opener})
        for cid in ids:
            self.assertEqual(replies[cid][0]["t"], "ok")
        events = w.call("events")["v"]
        self.assertIn("CancelledError %d" % victim, events)
        self.assertIn("finally %d" % victim, events)

    def test_ping_and_cancel_while_sync_handler_blocks_the_loop(self):
        w = self.ready_worker()
        waiter = w.start_call("gate_wait", "p")
        w.wait_started(waiter)
        blocker = w.start_call("sync_tracked_block", 60)
        w.wait_started(blocker)
        w.wait_blocked()
        # The loop is blocked in time.sleep: the helper thread answers pings anyway.
        for i in range(3):
            w.send({"t": "ping", "id": i})
            self.assertEqual(w.recv(), {"t": "pong", "id": i})
        # A call that arrives now is scheduled but cannot begin: its cancel is answered at once.
        late = w.start_call("marker", "late")
        w.send({"t": "cancel", "id": late})
        msg = w.recv()
        self.assertEqual(msg["id"], late)
        self.assertEqual(msg["message"], "call %d was cancelled before it started" % late)
        # The blocking sync handler is interrupted by SIGUSR1, as in serial mode.
        w.send({"t": "cancel", "id": blocker})
        msg = w.recv()
        self.assertEqual(msg["id"], blocker)
        self.assertErr(msg, "cancelled", "Cancelled")
        self.assertIn("Cancelled %d" % blocker, w.call("events")["v"])
        # The other call carried on.
        opener = w.start_call("gate_open", "p")
        replies = self.recv_all(w, 2)
        self.assertEqual(set(replies), {waiter, opener})
        self.assertOk(w.call("marker", "after"), "after")
        w.wait_stderr(b"ran after\n")
        self.assertNotIn("ran late", self.stderr_text(w))

    def test_sync_handlers_in_loop_mode(self):
        w = self.ready_worker()
        waiter = w.start_call("gate_wait", "s")
        w.wait_started(waiter)
        self.assertOk(w.call("add", 2, 3), 5)
        self.assertOk(w.call("count", 3), [0, 1, 2])
        self.assertOk(w.call("echo", [1]), [1])
        self.assertOk(w.call("sync_block", 0.01), 0.01)
        opener = w.start_call("gate_open", "s")
        self.assertEqual(set(self.recv_all(w, 2)), {waiter, opener})

    def test_two_async_streams_with_their_own_credit(self):
        w = self.ready_worker()
        a = w.start_call("agen_count", 6, "a", stream=True, credit=1)
        b = w.start_call("agen_count", 6, "b", stream=True, credit=1)
        first = self.recv_all(w, 2)
        self.assertEqual(
            first, {a: [{"t": "item", "id": a, "v": 0}], b: [{"t": "item", "id": b, "v": 0}]}
        )
        self.assertEqual(w.barrier(), [], "item sent beyond credit")
        w.send({"t": "credit", "id": b, "n": 2})
        self.assertEqual(
            [w.recv() for _ in range(2)],
            [{"t": "item", "id": b, "v": 1}, {"t": "item", "id": b, "v": 2}],
        )
        self.assertEqual(w.barrier(), [], "a sent an item without credit")
        w.send({"t": "credit", "id": a, "n": 10})
        self.assertEqual([w.recv()["v"] for _ in range(5)], [1, 2, 3, 4, 5])
        self.assertEqual(w.recv(), {"t": "end", "id": a})
        self.assertEqual(w.barrier(), [])
        w.send({"t": "credit", "id": b, "n": 10})
        self.assertEqual([w.recv()["v"] for _ in range(3)], [3, 4, 5])
        self.assertEqual(w.recv(), {"t": "end", "id": b})

    def test_sync_and_async_streams_interleaved(self):
        w = self.ready_worker()
        s = w.start_call("gen_count", 3, "s", stream=True, credit=0)
        a = w.start_call("agen_count", 3, "a", stream=True, credit=0)
        self.assertEqual(w.barrier(), [])
        w.send({"t": "credit", "id": s, "n": 1})
        self.assertEqual(w.recv(), {"t": "item", "id": s, "v": 0})
        w.send({"t": "credit", "id": a, "n": 1})
        self.assertEqual(w.recv(), {"t": "item", "id": a, "v": 0})
        self.assertEqual(w.barrier(), [])
        w.send({"t": "credit", "id": a, "n": 5})
        w.send({"t": "credit", "id": s, "n": 5})
        replies = self.recv_all(w, 6)
        self.assertEqual([m["t"] for m in replies[s]], ["item", "item", "end"])
        self.assertEqual([m["t"] for m in replies[a]], ["item", "item", "end"])

    def test_stream_cancel_leaves_other_stream_running(self):
        w = self.ready_worker()
        a = w.start_call("agen_count", 100, "ca", stream=True, credit=1)
        b = w.start_call("gen_count", 3, "cb", stream=True, credit=1)
        self.assertEqual(set(self.recv_all(w, 2)), {a, b})
        w.send({"t": "cancel", "id": a})
        msg = w.recv()
        self.assertEqual(msg["id"], a)
        self.assertErr(msg, "cancelled", "Cancelled")
        self.assertIn("agen finally ca", w.call("events")["v"])
        w.send({"t": "credit", "id": b, "n": 10})
        self.assertEqual([w.recv()["v"] for _ in range(2)], [1, 2])
        self.assertEqual(w.recv(), {"t": "end", "id": b})

    def test_exit_waits_for_calls_in_flight(self):
        w = self.ready_worker()
        ids = [w.start_call("gate_wait", "x") for _ in range(3)]
        opener = w.start_call("open_later", "x", 0.3)
        for cid in ids:
            w.wait_started(cid)
        w.send({"t": "exit"})
        after = w.start_call("marker", "after-exit")  # not taken: the worker is exiting
        replies = self.recv_all(w, 4)
        self.assertEqual(set(replies), set(ids) | {opener})
        for msgs in replies.values():
            self.assertEqual(msgs[0]["t"], "ok", msgs)
        self.assertEqual(w.wait_exit(), 0)
        self.assertRaises(EOFError, w.recv)  # nothing more: `after` got no reply
        w.finish_output()
        self.assertNotIn("ran after-exit", self.stderr_text(w))
        self.assertNotIn(after, replies)
        self.assertNotIn("Task was destroyed", self.stderr_text(w))

    def test_exit_right_away_and_eof(self):
        w = self.ready_worker()
        w.send({"t": "exit"})
        self.assertEqual(w.wait_exit(), 0)
        w = self.ready_worker()
        w.start_call("gate_wait", "never")
        w.close_requests()
        self.assertEqual(w.wait_exit(), 0)

    def test_bad_concurrency_exits_2(self):
        for bad in ("0", "10001", "abc", "", "1.5", " 4", "-3", "²"):
            w = self.worker(concurrency=bad)
            self.assertEqual(w.wait_exit(), 2, bad)
            w.finish_output()
            self.assertIn("PYVISOR_CONCURRENCY", self.stderr_text(w), bad)
        w = self.ready_worker(concurrency=10000)
        self.assertEqual(w.ready_msg["concurrency"], 10000)
        w = self.ready_worker(concurrency=1)
        self.assertEqual(w.ready_msg["concurrency"], 1)


class SerialEpollTests(SerialTests, unittest.TestCase):
    READER = None


class SerialThreadTests(SerialTests, unittest.TestCase):
    READER = "thread"


class LoopModeTests100(LoopModeTests, unittest.TestCase):
    # Loop mode always reads with the helper thread (PYVISOR_READER does not apply), so it runs
    # once, not once per reader mode.
    READER = "thread"


class LoopModeSmallTests(LoopModeTests, unittest.TestCase):
    """Loop mode at concurrency 4 (Node never sends more than 4 calls at once then, but the
    runtime does not depend on it)."""

    CONCURRENCY = 4


if __name__ == "__main__":
    unittest.main()

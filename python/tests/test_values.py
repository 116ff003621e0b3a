"""Tests of values from the Python data world (docs/protocol.md "Binary values"): pyvisor.encoder,
NaN and infinities (float placeholders, both ways), NumPy arrays (ndarray placeholders, both
ways) and scalars, and the built-in conversions (sets, dataclasses, enums, datetimes, Decimal,
UUID, item()/tolist()/model_dump() duck typing).

The NumPy tests run when the worker's Python can import numpy (with `site`); duck-typed
stand-ins (python/tests/fixtures/values.py) cover the same code paths everywhere.
"""

import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _worker import (  # noqa: E402
    HERE,
    PYTHON,
    PYTHON_DIR,
    NDArray,
    Worker,
    WorkerAsserts,
    frame,
)

VALUES = os.path.join(HERE, "fixtures", "values.py")
NAN = float("nan")
INF = float("inf")
BK = "__pyvisor_bytes__"


def _numpy_importable():
    if PYTHON == sys.executable and "site" in sys.modules:
        import importlib.util

        return importlib.util.find_spec("numpy") is not None  # without importing it
    try:
        return subprocess.call([PYTHON, "-c", "import numpy"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=60) == 0
    except Exception:
        return False


HAVE_NUMPY = _numpy_importable()


def canon(v):
    """v with non-finite floats as strings and tuples as lists, so that assertEqual works."""
    if isinstance(v, float) and v - v != 0.0:
        return "<NaN>" if v != v else ("<+inf>" if v > 0 else "<-inf>")
    if isinstance(v, NDArray):
        return ("NDArray", v.dtype, v.shape, v.data)
    if isinstance(v, (list, tuple)):
        return [canon(x) for x in v]
    if isinstance(v, dict):
        return {k: canon(x) for k, x in v.items()}
    return v


def fph(name):
    return {BK: "float", "v": name}


def att(b):
    return len(b).to_bytes(4, "big") + b


def call_frame(args, b, cid=1, fn="describe"):
    return frame({"t": "call", "id": cid, "fn": fn, "args": args, "b": b})


class Base(WorkerAsserts):
    SITE = False  # start workers with `site` (numpy lives in site-packages)
    _shared = None

    def worker(self, script=None, env=None, **kw):
        kw.setdefault("capture", True)
        kw.setdefault("site", self.SITE)
        w = Worker(script or VALUES, env=env, **kw)
        self.addCleanup(w.close)
        return w

    def shared_worker(self):
        """One ready worker for the tests of a class that leave it as they found it (a worker
        start costs more than most tests); each test checks that nothing is left unread."""
        cls = type(self)
        if cls._shared is None or cls._shared.proc.poll() is not None:
            if cls._shared is not None:
                cls._shared.close()
            cls._shared = Worker(VALUES, capture=True, site=self.SITE)
            cls._shared.ready()
        w = cls._shared
        self.addCleanup(lambda: self.assertEqual(w.barrier(), [], "frames left unread"))
        return w

    @classmethod
    def tearDownClass(cls):
        if cls._shared is not None:
            cls._shared.close()
            cls._shared = None

    def assertValue(self, msg, expected):
        self.assertEqual(msg["t"], "ok", msg)
        self.assertEqual(canon(msg["v"]), canon(expected))

    def assertProtocolError(self, data, **kw):
        w = self.ready_worker(**kw)
        w.send_raw(data)
        self.assertEqual(w.wait_exit(), 3, data)
        w.finish_output()
        self.assertIn(b"protocol error", b"".join(w.stderr), data)


class FloatTests(Base, unittest.TestCase):
    def test_non_finite_results(self):
        w = self.shared_worker()
        for kind, name in (("nan", "NaN"), ("inf", "Infinity"), ("ninf", "-Infinity")):
            w.start_call("value", kind)
            msg = w.recv(raw=True)
            self.assertEqual(msg, {"t": "ok", "id": msg["id"], "v": fph(name), "b": 0,
                                   "attachments": []})
        self.assertValue(w.call("value", "nested_nan"),
                         {"a": [1, NAN, {"b": INF}], "c": "x", "d": [-INF, 2.5]})
        w.start_call("value", "nested_nan")
        self.assertEqual(w.recv(raw=True)["v"], {
            "a": [1, fph("NaN"), {"b": fph("Infinity")}], "c": "x", "d": [fph("-Infinity"), 2.5]})
        # Non-finite keys are named as JavaScript names them.
        self.assertValue(w.call("value", "nan_key"), {"NaN": 1, "Infinity": 2, "k": -INF})
        # Plain values are untouched: no "b".
        w.start_call("echo", 1.5, [2, "x"])
        self.assertEqual(w.recv(raw=True)["v"], [1.5, [2, "x"]])

    def test_nan_with_binary_values_and_the_reserved_key(self):
        w = self.shared_worker()
        w.start_call("value", "nan_binary_escape")
        msg = w.recv(raw=True)
        self.assertEqual(msg["b"], 1)
        self.assertEqual(msg["attachments"], [b"ab"])
        self.assertEqual(msg["v"], {BK: "escape", "v": {BK: 1, "x": {BK: 0}, "f": fph("NaN")}})
        self.assertValue(w.call("value", "nan_binary_escape"), {BK: 1, "x": b"ab", "f": NAN})

    def test_stream_items(self):
        w = self.shared_worker()
        cid = w.start_call("stream", ["nan", 1.0, "nested_nan", "nan_binary_escape", "duck_scalars"],
                           stream=True, credit=10)
        items = [w.recv() for _ in range(5)]
        self.assertEqual([m["t"] for m in items], ["item"] * 5)
        self.assertEqual(canon([m["v"] for m in items]), canon([
            NAN, 1.0, {"a": [1, NAN, {"b": INF}], "c": "x", "d": [-INF, 2.5]},
            {BK: 1, "x": b"ab", "f": NAN}, [7, True, NAN, 1.5, -INF],
        ]))
        self.assertEqual(w.recv(), {"t": "end", "id": cid})

    def test_args(self):
        w = self.shared_worker()
        self.assertOk(w.call("describe", NAN, [INF, {"k": -INF}], 1.0),
                      [{"float": "nan"}, [{"float": "inf"}, {"k": {"float": "-inf"}}],
                       {"float": "1.0"}])
        self.assertValue(w.call("echo", NAN, b"x", {BK: INF}), [NAN, b"x", {BK: INF}])
        # A frame with "b": 0 is walked for placeholders, and nothing more is read for it.
        w.send_raw(call_frame([fph("NaN"), {"x": [fph("-Infinity")]}], 0, cid=50))
        self.assertOk(w.recv(), [{"float": "nan"}, {"x": [{"float": "-inf"}]}])
        w.send_raw(call_frame([1, {BK: "escape", "v": {BK: fph("Infinity")}}], 0, cid=51))
        self.assertOk(w.recv(), [{"int": 1}, {BK: {"float": "inf"}}])
        w.send_raw(call_frame([2], 0, cid=52, fn="echo"))
        self.assertOk(w.recv(), [2])
        self.assertOk(w.call("echo", 3), [3])

    def test_args_in_loop_mode(self):
        w = self.ready_worker(env={"PYVISOR_CONCURRENCY": "4"})
        self.assertValue(w.call("async_value", "nested_nan"),
                         {"a": [1, NAN, {"b": INF}], "c": "x", "d": [-INF, 2.5]})
        self.assertValue(w.call("echo", NAN, [b"y"]), [NAN, [b"y"]])
        self.assertEqual(w.call("value", "duck_arrays")["v"][0],
                         NDArray("float64", [3], struct.pack("<3d", 1.0, 2.5, NAN)))

    def test_circular_with_nan_is_an_error(self):
        w = self.shared_worker()
        msg = w.call("value", "circular_nan")
        self.assertErr(msg, "serialization", "ValueError")
        self.assertIn("Circular reference", msg["message"])
        self.assertOk(w.call("echo", 1), [1])


class ConversionTests(Base, unittest.TestCase):
    def test_stdlib_and_duck_conversions(self):
        w = self.shared_worker()
        self.assertOk(w.call("value", "stdlib"), {
            "set": [3],
            "frozenset": ["a"],
            "tuple": [1, [2, 3]],
            "datetime": "2024-01-02T03:04:05.006000",
            "aware": "2024-01-02T03:04:00+00:00",
            "date": "2024-01-02",
            "time": "13:14:15",
            "decimal": "3.14159265358979323846",
            "uuid": "12345678-1234-5678-1234-567812345678",
            "enum": ["red", 2, 3],
            "point": {"x": 1, "y": {"x": 2, "y": [4], "label": "p"}, "label": "p"},
            "model": {"name": "m", "tags": ["a"], "when": "2024-02-29"},
            "lone": "\udc00 surrogate",
        })
        msg = w.call("value", "stdlib_nan")
        self.assertEqual(canon(msg["v"][0]), canon({"x": NAN, "y": "NaN", "label": "p"}))
        self.assertEqual(sorted(canon(msg["v"][1]), key=str), [1.5, "<NaN>"])
        self.assertValue(w.call("value", "duck_scalars"), [7, True, NAN, 1.5, -INF])
        self.assertValue(w.call("value", "duck_tolist"), [[1, NAN, [2]], [[0.5, -INF]]])

    def test_duck_arrays(self):
        w = self.shared_worker()
        w.start_call("value", "duck_arrays")
        msg = w.recv(raw=True)
        self.assertEqual(msg["b"], 2)
        self.assertEqual(msg["v"], [
            {BK: "ndarray", "dtype": "float64", "shape": [3], "data": 0},
            {BK: "ndarray", "dtype": "int32", "shape": [2, 3], "data": 1},
            [1, 2],  # float16: its tolist()
            [1.0, fph("Infinity")],  # no buffer: its tolist()
        ])
        self.assertEqual(msg["attachments"][0], struct.pack("<3d", 1.0, 2.5, NAN))
        self.assertEqual(msg["attachments"][1], struct.pack("<6i", 1, -2, 3, 4, 5, 6))

    def test_encoders(self):
        w = self.shared_worker()
        self.assertOk(w.call("value", "money"), [{"amount": "1.25", "currency": "EUR"},
                                                 {"amount": "0.01", "currency": "USD"}])
        self.assertOk(w.call("value", "later"), {"v": "later"})  # registered in @on_init
        self.assertValue(w.call("value", "weird"), {"s": ["1.5"], "f": NAN})
        msg = w.call("value", "boom")
        self.assertErr(msg, "serialization", "ValueError")
        self.assertEqual(msg["message"], "the result of handler 'value' cannot be encoded: the "
                         "encoder registered for values.Boom raised ValueError: no boom today")
        msg = w.call("value", "loop")
        self.assertErr(msg, "serialization")
        self.assertIn("Circular reference", msg["message"])
        self.assertOk(w.call("echo", 1), [1])

    def test_unencodable_types_name_the_type_and_the_hook(self):
        w = self.shared_worker()
        msg = w.call("value", "unknown")
        self.assertErr(msg, "serialization", "TypeError")
        self.assertEqual(msg["message"], "the result of handler 'value' cannot be encoded: Object "
                         "of type values.Unknown is not JSON serializable (register an encoder "
                         "with @pyvisor.encoder(Unknown))")
        msg = w.call("value", "local")
        self.assertIn("values._local_instance.<locals>.Local is not JSON serializable (register "
                      "an encoder with @pyvisor.encoder(Local))", msg["message"])
        msg = w.call("value", "complex")
        self.assertIn("Object of type complex is not JSON serializable", msg["message"])
        cid = w.start_call("stream", [1, "unknown"], stream=True, credit=5)
        self.assertEqual(w.recv(), {"t": "item", "id": cid, "v": 1})
        msg = w.recv()
        self.assertErr(msg, "serialization", "TypeError")
        self.assertIn("the item of handler 'stream' cannot be encoded", msg["message"])

    def test_fallback_encoder_for_object(self):
        w = self.ready_worker()
        self.assertOk(w.call("register_fallback"), True)
        self.assertOk(w.call("value", "unknown"), {"k": "fallback:Unknown"})
        # The built-in conversions still come first.
        self.assertValue(w.call("value", "duck_scalars"), [7, True, NAN, 1.5, -INF])
        self.assertEqual(w.call("echo", b"x")["v"], [b"x"])

    def test_encoder_api(self):
        sys.path.insert(0, PYTHON_DIR)
        try:
            import pyvisor
        finally:
            sys.path.pop(0)
        self.assertIn("encoder", pyvisor.__all__)

        class T(object):
            pass

        def enc(t):
            return 1

        try:
            self.assertIs(pyvisor.encoder(T)(enc), enc)
            self.assertIs(pyvisor._encoders[T], enc)
            self.assertIs(pyvisor.encoder(T, len), len)
            self.assertIs(pyvisor._encoders[T], len)
        finally:
            pyvisor._encoders.pop(T, None)
        import collections

        for native in (dict, collections.OrderedDict, list, tuple, str, int, bool, float,
                       type(None)):
            with self.assertRaises(TypeError):
                pyvisor.encoder(native, enc)
        with self.assertRaises(TypeError):
            pyvisor.encoder("T", enc)
        with self.assertRaises(TypeError):
            pyvisor.encoder(T, 3)
        self.assertNotIn(T, pyvisor._encoders)
        self.assertEqual([m for m in sys.modules if m.startswith("pyvisor._")], [])

    def test_numpy_is_not_imported_at_start(self):
        w = self.ready_worker(site=True)
        for kind in ("stdlib", "duck_arrays", "duck_scalars", "nested_nan", "money"):
            self.assertEqual(w.call("value", kind)["t"], "ok")
        self.assertValue(w.call("echo", NAN, b"x"), [NAN, b"x"])
        self.assertOk(w.call("numpy_loaded"), False)


# Runs _codec._restore on each case (a JSON list: args, attachments as hex) in one process, with
# _protocol_error raising instead of exiting: prints the message of each case, or null.
RESTORE_CASES = r"""
import json, sys
from pyvisor import _codec
class PE(Exception): pass
def pe(msg): raise PE(msg)
_codec._protocol_error = pe
out = []
for args, atts in json.loads(sys.stdin.read()):
    try:
        _codec._restore(args, [bytes.fromhex(a) for a in atts])
        out.append(None)
    except PE as e:
        out.append(str(e))
print(json.dumps(out))
"""


class ProtocolErrorTests(Base, unittest.TestCase):
    def test_malformed_placeholders(self):
        f64 = struct.pack("<2d", 1, 2).hex()
        nd = {BK: "ndarray", "dtype": "float64", "shape": [2], "data": 0}

        def with_(**kw):
            d = dict(nd)
            d.update(kw)
            return {k: v for k, v in d.items() if v is not None}

        cases = [
            ([fph("nan")], []),
            ([fph(1)], []),
            ([fph(["NaN"])], []),
            ([{BK: "float", "v": "NaN", "x": 1}], []),
            ([{BK: "float"}], []),
            ([{BK: "complex", "v": "1"}], []),
            ([{BK: None}], []),
            ([with_(dtype="float16")], ["00" * 4]),
            ([with_(dtype="complex128")], ["00" * 32]),
            ([with_(dtype=None)], [f64]),
            ([with_(dtype=["float64"])], [f64]),
            ([with_(shape=[-2])], [f64]),
            ([with_(shape=["2"])], [f64]),
            ([with_(shape=[2.0])], [f64]),
            ([with_(shape=[True, 2])], [f64]),
            ([with_(shape=2)], [f64]),
            ([with_(shape=None)], [f64]),
            ([with_(shape=[3])], [f64]),  # length mismatch
            ([with_(shape=[1])], [f64]),
            ([with_(data=1)], [f64]),  # out of range
            ([with_(data=-1)], [f64]),
            ([with_(data="0")], [f64]),
            ([with_(data=None)], [f64]),
            ([dict(with_(), extra=1)], [f64]),
            ([nd, {BK: 0}], [f64]),  # the attachment used twice
            ([nd, nd], [f64]),
            ([nd], [f64, f64]),  # an attachment nobody refers to
            ([{BK: 0}], []),
        ]
        good = [
            ([nd, fph("NaN"), [fph("Infinity")], {"k": fph("-Infinity")}], [f64]),
            ([with_(shape=[]), {BK: 1}], ["00" * 8, "ff"]),
            ([with_(shape=[0, 5])], [""]),
            ([{BK: "escape", "v": {BK: fph("NaN")}}], []),
        ]
        out = subprocess.run(
            [PYTHON, "-S", "-c", RESTORE_CASES],
            input=json.dumps(cases + good).encode(),
            stdout=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=PYTHON_DIR),
            check=True,
            timeout=60,
        ).stdout
        results = json.loads(out)
        for case, result in zip(cases, results):
            self.assertIsNotNone(result, case)
            self.assertTrue(result.startswith(("bad binary placeholder", "1 attachments announced",
                                               "2 attachments announced")), (case, result))
        self.assertEqual(results[len(cases):], [None] * len(good))

    def test_malformed_placeholders_exit_3(self):
        f64 = struct.pack("<2d", 1, 2)
        nd = {BK: "ndarray", "dtype": "float64", "shape": [3], "data": 0}
        for data in (call_frame([fph("nan")], 0), call_frame([nd], 1) + att(f64)):
            self.assertProtocolError(data)

    def test_length_mismatch_with_numpy(self):
        if not HAVE_NUMPY:
            self.skipTest("numpy is not importable")
        nd = {BK: "ndarray", "dtype": "int16", "shape": [2, 2], "data": 0}
        self.assertProtocolError(call_frame([nd], 1) + att(b"\x00" * 6), site=True)


@unittest.skipUnless(HAVE_NUMPY, "numpy is not importable by %s" % PYTHON)
class NumpyTests(Base, unittest.TestCase):
    SITE = True

    def raw(self, w, kind):
        w.start_call("numpy_value", kind)
        return w.recv(raw=True)

    def assertArray(self, w, kind, dtype, shape, data):
        msg = self.raw(w, kind)
        self.assertEqual(msg["t"], "ok", msg)
        self.assertEqual(msg["b"], 1)
        self.assertEqual(msg["v"], {BK: "ndarray", "dtype": dtype, "shape": shape, "data": 0})
        self.assertEqual(msg["attachments"], [data])

    def test_arrays_out(self):
        w = self.shared_worker()
        self.assertArray(w, "f64", "float64", [2, 3], struct.pack("<6d", 0, .5, 1, 1.5, 2, 2.5))
        self.assertArray(w, "big_endian", "int32", [3], struct.pack("<3i", 0, 1, 2))
        self.assertArray(w, "big_endian_f8", "float64", [2], struct.pack("<2d", 1.5, -2))
        self.assertArray(w, "strided", "int16", [4], struct.pack("<4h", 0, 3, 6, 9))
        self.assertArray(w, "fortran", "uint8", [2, 3], bytes([0, 1, 2, 3, 4, 5]))
        self.assertArray(w, "zero_d", "float64", [], struct.pack("<d", 2.5))
        self.assertArray(w, "bool", "bool", [2, 2], bytes([1, 0, 0, 1]))
        self.assertArray(w, "int64", "int64", [3], struct.pack("<3q", -(2 ** 63), 2 ** 63 - 1, 0))
        self.assertArray(w, "uint64", "uint64", [1], struct.pack("<Q", 2 ** 64 - 1))
        self.assertArray(w, "float32", "float32", [3], struct.pack("<3f", 1.5, NAN, INF))
        self.assertArray(w, "empty", "int8", [0, 3], b"")

    def test_other_arrays_and_scalars(self):
        w = self.shared_worker()
        self.assertValue(w.call("numpy_value", "float16"), [1.5, NAN])
        self.assertOk(w.call("numpy_value", "object"), [1, "a", None])
        self.assertOk(w.call("numpy_value", "str"), ["a", "bc"])
        self.assertOk(w.call("numpy_value", "datetime64"), ["2024-01-02T03:04:05"])
        self.assertOk(w.call("numpy_value", "masked"), [1, None, 3])
        msg = w.call("numpy_value", "complex")
        self.assertErr(msg, "serialization", "TypeError")
        self.assertIn("Object of type complex is not JSON serializable", msg["message"])
        self.assertValue(w.call("numpy_value", "scalars"),
                         [7, 0.5, 1.25, True, 255, NAN, -INF, "s"])
        msg = self.raw(w, "mixed")
        self.assertEqual(msg["b"], 3)
        self.assertEqual(msg["v"], {
            "a": {BK: "ndarray", "dtype": "uint32", "shape": [3], "data": 0},
            "b": [{BK: "ndarray", "dtype": "float64", "shape": [2], "data": 1}, {BK: 2}],
            "n": fph("NaN"),
        })
        self.assertEqual(msg["attachments"],
                         [struct.pack("<3I", 0, 1, 2), struct.pack("<2d", 0, 1), b"x"])
        self.assertValue(w.call("numpy_value", "in_dataclass"),
                         {"x": NDArray("int8", [2], b"\x00\x01"), "y": 3.0, "label": "p"})

    def test_stream_of_arrays(self):
        w = self.ready_worker(env={"PYVISOR_CONCURRENCY": "3"})
        cid = w.start_call("numpy_stream", ["zero_d", "mixed", "scalars"], stream=True, credit=5)
        items = [w.recv()["v"] for _ in range(3)]
        self.assertEqual(w.recv(), {"t": "end", "id": cid})
        self.assertEqual(items[0], NDArray("float64", [], struct.pack("<d", 2.5)))
        self.assertEqual(canon(items[1]["n"]), "<NaN>")
        self.assertEqual(canon(items[2]), canon([7, 0.5, 1.25, True, 255, NAN, -INF, "s"]))

    def test_arrays_in(self):
        w = self.ready_worker()
        self.assertOk(w.call("numpy_loaded"), False)
        arg = NDArray("float64", [2, 2], struct.pack("<4d", 1, 2, 3, NAN))
        msg = w.call("describe", arg, [NDArray("bool", [3], b"\x01\x00\x01")])
        self.assertValue(msg, [
            {"ndarray": "float64", "order": "=", "shape": [2, 2], "writeable": True,
             "list": [[1.0, 2.0], [3.0, NAN]]},
            [{"ndarray": "bool", "order": "|", "shape": [3], "writeable": True,
              "list": [True, False, True]}],
        ])
        self.assertOk(w.call("numpy_loaded"), True)
        msg = w.call("describe", NDArray("int64", [], struct.pack("<q", -5)),
                     NDArray("uint16", [0, 4], b""), NDArray("int8", [1, 1, 2], b"\x01\xff"))
        self.assertOk(msg, [
            {"ndarray": "int64", "order": "=", "shape": [], "writeable": True, "list": -5},
            {"ndarray": "uint16", "order": "=", "shape": [0, 4], "writeable": True, "list": []},
            {"ndarray": "int8", "order": "|", "shape": [1, 1, 2], "writeable": True,
             "list": [[[1, -1]]]},
        ])
        # Round trips, and in-place work on an argument.
        for a in (NDArray("float32", [3], struct.pack("<3f", 1, NAN, -INF)),
                  NDArray("uint64", [2], struct.pack("<2Q", 1, 2 ** 64 - 1)),
                  NDArray("int32", [2, 1], struct.pack("<2i", -1, 7))):
            self.assertValue(w.call("echo", a, b"z"), [a, b"z"])
        self.assertValue(w.call("add_one", NDArray("int16", [2], struct.pack("<2h", 1, -1))),
                         NDArray("int16", [2], struct.pack("<2h", 2, 0)))

    def test_arrays_in_without_numpy_are_bytes(self):
        with tempfile.TemporaryDirectory() as block:
            with open(os.path.join(block, "numpy.py"), "w") as f:
                f.write("raise ImportError('numpy is blocked for this test')\n")
            w = self.ready_worker(env={"PYTHONPATH": PYTHON_DIR + os.pathsep + block})
            data = struct.pack("<2d", 1, 2)
            self.assertOk(w.call("describe", NDArray("float64", [2], data), NAN),
                          [{"bytes": data.hex()}, {"float": "nan"}])
            self.assertOk(w.call("describe", NDArray("bool", [1], b"\x01")), [{"bytes": "01"}])
            self.assertOk(w.call("numpy_loaded"), False)


if __name__ == "__main__":
    unittest.main()

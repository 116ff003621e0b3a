"""Encoding and decoding of values: JSON via the C accelerator, binary values (attachments and
their placeholders), and the bodies of ok/item/err frames.

Placeholders (call args; ok/item values; docs/protocol.md "Binary values"): a JSON frame with a
field "b": K (K >= 0) is followed by K attachment frames (same 4-byte length, raw bytes as the
body) and is walked for objects that have the key "__pyvisor_bytes__":

  {"__pyvisor_bytes__": i}                     attachment i (bytes; from bytes, bytearray,
                                               memoryview)
  {"__pyvisor_bytes__": "float", "v": "NaN" | "Infinity" | "-Infinity"}
                                               a non-finite float (JSON has none)
  {"__pyvisor_bytes__": "ndarray", "dtype": D, "shape": [n0, ...], "data": i}
                                               a numeric array: attachment i holds its C-order
                                               little-endian elements; D is bool, (u)int8..64,
                                               float32 or float64 (_NUMERIC)
  {"__pyvisor_bytes__": "escape", "v": dict}   a user dict that has the key itself

Each attachment is referenced exactly once (by an index or a "data"). Frames without "b" are
not walked, and are byte for byte what they were before placeholders existed.

Outgoing values (results and stream items) take the C encoder's fast path; its `default` hook,
reached only for objects JSON cannot hold, converts them (_convert: pyvisor.encoder functions,
binary values and numeric arrays to placeholders, NumPy scalars, sets, dataclasses, pydantic
models, enums, datetimes, Decimal, UUID). The C encoder cannot hook floats: when a value holds a
NaN or an infinity it fails with "Out of range float values", and _prepared_body walks the value
once more in Python (_prepare), building a JSON-ready copy with every placeholder in it. It does
the same when a user dict has the placeholder key (to escape it). Incoming ndarray placeholders
become numpy.ndarray objects when numpy can be imported (tried once, only when one arrives), else
bytes.

Everything here builds bodies (bytes, or lists/tuples of parts for _send); nothing writes to a
pipe. Encoding an ok/item value is main-thread only (one shared encoder); _dict_body and
_err_body may be used from any thread.
"""

import os
import sys

import pyvisor as _api

from ._fatal import _protocol_error
from ._state import state as _st

_Cancelled = _api.Cancelled
_encoders = _api._encoders  # pyvisor.encoder() registrations (type -> function)
_modules = sys.modules
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))

# --------------------------------------------------------------------------------------------
# JSON, via the C accelerator directly: `import json` costs 10-15 ms on 3.9/3.13 because
# json.decoder imports and compiles `re`. Same behaviour as json.dumps(obj, separators=(",",
# ":"), ensure_ascii=False, allow_nan=False) and json.loads (the full json module is imported
# only for frames the fast scanner does not accept, e.g. with surrounding whitespace).


def _json_default(o):
    raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)


_BKEY = "__pyvisor_bytes__"  # placeholder key of binary values (see the module docstring)
_BKEY_JSON = '"__pyvisor_bytes__"'
_BINARY = (bytes, bytearray, memoryview)
# Attachments (binary values, array data) met by _value_default during one _dumps (main thread
# only). Scratch space of the main encoder, like its circularity markers, so it lives here and
# not in the worker's state.
_attach = []


def _value_default(o):
    """The main encoder's hook for values JSON cannot hold (see _convert)."""
    if not _encoders and isinstance(o, _BINARY):  # the common case, inlined
        _attach.append(o)
        return {_BKEY: len(_attach) - 1}
    return _convert(o, _attach)


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


# --------------------------------------------------------------------------------------------
# Outgoing values: the bodies of ok/item frames.


class _SerializationError(Exception):
    def __init__(self, type_name, message):
        Exception.__init__(self, message)
        self.type_name = type_name
        self.message = message


class _EncoderFailed(Exception):
    """A pyvisor.encoder function raised (type_name: what it raised)."""

    def __init__(self, type_name, message):
        Exception.__init__(self, message)
        self.type_name = type_name
        self.message = message


_OUT_OF_RANGE = "Out of range float values"  # the C encoder's error for NaN and infinities


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
        if exc.__class__ is ValueError and _safe_str(exc).startswith(_OUT_OF_RANGE):
            return _prepared_body(t, cid, v, name)  # a NaN or an infinity somewhere in v
        raise _cannot_encode(t, name, exc)
    if _attach:
        try:
            return _binary_body(t, cid, v, s, name)
        finally:
            del _attach[:]
    if len(s) < 65536:
        try:
            body = ('{"t":"%s","id":%d,"v":%s}' % (t, cid, s)).encode()
        except UnicodeEncodeError:
            body = ('{"t":"%s","id":%d,"v":%s}' % (t, cid, _ascii_again(t, v, name))).encode()
        if len(body) <= _st.max_message:
            return body
        size = len(body)
    else:
        try:
            sb = s.encode()
        except UnicodeEncodeError:
            sb = _ascii_again(t, v, name).encode()
        del s
        head = ('{"t":"%s","id":%d,"v":' % (t, cid)).encode()
        size = len(head) + len(sb) + 1
        if size <= _st.max_message:
            return [head, sb, b"}"]
    raise _too_large("result" if t == "ok" else "item", name, size)


def _ascii_again(t, v, name):
    """v (which has no attachments) encoded once more with ASCII escapes: it has lone surrogates
    (valid in Python and JavaScript strings, not in UTF-8)."""
    try:
        return _dumps_any(v, True, _convert_only)
    except _Cancelled:
        raise
    except BaseException as exc:
        raise _cannot_encode(t, name, exc)


def _convert_only(o):
    return _convert(o, [])


def _cannot_encode(t, name, exc):
    what = "result" if t == "ok" else "item"
    if isinstance(exc, _EncoderFailed):
        return _SerializationError(
            exc.type_name, "the %s of handler %r cannot be encoded: %s" % (what, name, exc.message)
        )
    return _SerializationError(
        type(exc).__name__,
        "the %s of handler %r cannot be encoded: %s" % (what, name, _safe_str(exc)),
    )


def _too_large(what, name, size):
    return _SerializationError(
        "ValueError",
        "the %s of handler %r is too large: its frame would be %d bytes, the limit is %d "
        "(PYVISOR_MAX_MESSAGE)" % (what, name, size, _st.max_message),
    )


_INLINE = 16384  # attachments smaller than this are copied next to their header (fewer iovecs)


def _binary_body(t, cid, v, s, name):
    """The frames of an ok/item value whose encoding s met attachments (_attach, filled by
    _dumps): a tuple of parts (headers included) for _send. Raises _SerializationError."""
    if s.count(_BKEY_JSON) != len(_attach):
        # The key (or a string equal to it) occurs in the value itself: escape user dicts that
        # have the key, so Node cannot mistake them for placeholders. (Each placeholder made by
        # _convert holds the key once and has one attachment.)
        return _prepared_body(t, cid, v, name)
    try:
        try:
            sb = s.encode()
        except UnicodeEncodeError:
            del _attach[:]
            sb = _dumps_any(v, True, _value_default).encode()  # refills _attach, same order
        del s
        return _frames(t, cid, sb, _attach, name)
    except (_SerializationError, _Cancelled):
        raise
    except BaseException as exc:
        raise _cannot_encode(t, name, exc)


def _prepared_body(t, cid, v, name):
    """The slow path: the frames of v once walked by _prepare (NaN or infinities in it, or user
    dicts that have the placeholder key), with "b" even if there are no attachments."""
    atts = []
    try:
        ready = _prepare(v, atts, set())
        s = _dumps_any(ready, False)
        try:
            sb = s.encode()
        except UnicodeEncodeError:
            sb = _dumps_any(ready, True).encode()
        del s, ready
        return _frames(t, cid, sb, atts, name)
    except (_SerializationError, _Cancelled):
        raise
    except BaseException as exc:
        raise _cannot_encode(t, name, exc)


def _frames(t, cid, sb, atts, name):
    """The ok/item frame around the JSON sb, with "b" and the attachments atts, as a tuple of
    parts for _send. Raises _SerializationError if a frame is over the limit."""
    what = "result" if t == "ok" else "item"
    limit = _st.max_message
    head = ('{"t":"%s","id":%d,"v":' % (t, cid)).encode()
    tail = b',"b":%d}' % len(atts)
    size = len(head) + len(sb) + len(tail)
    if size > limit:
        raise _too_large(what, name, size)
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
        if n > limit:
            raise _SerializationError(
                "ValueError",
                "the %s of handler %r holds a %d-byte binary value, over the limit of %d "
                "bytes (PYVISOR_MAX_MESSAGE)" % (what, name, n, limit),
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


# --------------------------------------------------------------------------------------------
# Conversions of outgoing values JSON cannot hold (the encoder's `default` hook, and _prepare).

# The dtypes sent as ndarray placeholders: name -> (dtype.kind, itemsize). Other arrays (float16,
# complex, object, str, datetime64...) are sent as their tolist().
_NUMERIC = {
    "bool": ("b", 1),
    "int8": ("i", 1),
    "uint8": ("u", 1),
    "int16": ("i", 2),
    "uint16": ("u", 2),
    "int32": ("i", 4),
    "uint32": ("u", 4),
    "int64": ("i", 8),
    "uint64": ("u", 8),
    "float32": ("f", 4),
    "float64": ("f", 8),
}
_LITTLE = sys.byteorder == "little"
_NOT_ARRAY = object()  # _from_array: o only has an attribute called dtype


def _type_label(t):
    """A type's name for messages: qualified with its module unless it is a builtin."""
    qualname = getattr(t, "__qualname__", None) or getattr(t, "__name__", "?")
    module = getattr(t, "__module__", None)
    if not module or module == "builtins":
        return qualname
    return "%s.%s" % (module, qualname)


def _unencodable(o):
    t = type(o)
    hint = getattr(t, "__qualname__", "") or "?"
    if "<" in hint:  # a class defined in a function: "f.<locals>.C"
        hint = getattr(t, "__name__", "?")
    return TypeError(
        "Object of type %s is not JSON serializable (register an encoder with "
        "@pyvisor.encoder(%s))" % (_type_label(t), hint)
    )


def _call_encoder(fn, o, cls):
    try:
        return fn(o)
    except Exception as exc:
        raise _EncoderFailed(
            type(exc).__name__,
            "the encoder registered for %s raised %s: %s"
            % (_type_label(cls), type(exc).__name__, _safe_str(exc)),
        )


def _convert(o, atts):
    """One conversion step for a value JSON cannot hold (never a dict, list, tuple, str, int,
    float, bool or None, nor an instance of their subclasses). Binary values and numeric arrays
    become placeholders (their data appended to atts); anything else becomes a value closer to
    JSON, which is encoded in turn (it may need converting again). Raises TypeError if nothing
    applies."""
    t = type(o)
    if _encoders:
        for c in t.__mro__:
            fn = _encoders.get(c)
            if fn is not None and c is not object:  # an encoder for object is the fallback
                return _call_encoder(fn, o, c)
    if isinstance(o, _BINARY):
        atts.append(o)
        return {_BKEY: len(atts) - 1}
    mods = _modules
    try:
        dt = o.dtype
    except Exception:
        dt = None
    if dt is not None:
        r = _from_array(o, t, dt, atts, mods)
        if r is not _NOT_ARRAY:
            return r
    if isinstance(o, (set, frozenset)):
        return list(o)
    m = mods.get("datetime")
    if m is not None and isinstance(o, (m.date, m.time)):  # datetime is a date
        return o.isoformat()
    m = mods.get("decimal")
    if m is not None and isinstance(o, m.Decimal):
        return str(o)
    m = mods.get("uuid")
    if m is not None and isinstance(o, m.UUID):
        return str(o)
    m = mods.get("enum")
    if m is not None and isinstance(o, m.Enum):
        return o.value
    if getattr(t, "__dataclass_fields__", None) is not None and "dataclasses" in mods:
        return {f.name: getattr(o, f.name) for f in mods["dataclasses"].fields(o)}  # shallow
    if callable(getattr(t, "model_dump", None)):  # pydantic v2 models
        return o.model_dump()
    if callable(getattr(t, "tolist", None)):  # array-likes (tolist() of a scalar is a scalar)
        return o.tolist()
    if callable(getattr(t, "item", None)):  # scalar-likes
        return o.item()
    fn = _encoders.get(object)
    if fn is not None:
        return _call_encoder(fn, o, object)
    raise _unencodable(o)


def _from_array(o, t, dt, atts, mods):
    """An object with a dtype: NumPy-like numeric arrays become ndarray placeholders, scalars
    (shape (), not a numpy.ndarray) o.item(), other arrays o.tolist(); _NOT_ARRAY if o does not
    look like an array."""
    try:
        name = dt.name
        kind = dt.kind
        size = dt.itemsize
        shape = [int(n) for n in o.shape]
    except Exception:
        return _NOT_ARRAY
    np = mods.get("numpy")
    is_nd = np is not None and isinstance(o, np.ndarray)
    if not shape and not is_nd and callable(getattr(t, "item", None)):
        return o.item()  # a NumPy scalar (np.float32, np.int64, np.bool_...)
    if not callable(getattr(t, "tolist", None)):
        return _NOT_ARRAY
    if name.__class__ is str and _NUMERIC.get(name) == (kind, size):
        data = _array_data(o, dt, name, size, shape, np, is_nd, mods)
        if data is not None:
            atts.append(data)
            return {_BKEY: "ndarray", "dtype": name, "shape": shape, "data": len(atts) - 1}
    return o.tolist()


def _array_data(o, dt, name, size, shape, np, is_nd, mods):
    """The C-order little-endian bytes of a numeric array as a buffer (the array's own memory
    when it is already laid out so), or None (then it is sent as its tolist())."""
    nbytes = size
    for n in shape:
        nbytes *= n
    try:
        if is_nd or (np is not None and isinstance(dt, np.dtype)):  # pandas Series too
            ma = mods.get("numpy.ma")
            if ma is not None and isinstance(o, ma.MaskedArray):
                return None  # tolist() has None for the masked elements
            order = dt.byteorder
            if is_nd and o.flags.c_contiguous and (order in "|<" or (order == "=" and _LITTLE)):
                a = o  # the common case: no copy
            else:
                a = np.ascontiguousarray(o, dtype=dt.newbyteorder("<"))
                if a.dtype.name != name:
                    return None
            data = memoryview(a)
        else:
            # Not numpy: an object that exports a C-contiguous buffer in native order.
            order = getattr(dt, "byteorder", "=")
            if order == ">" or (order != "<" and size > 1 and not _LITTLE):
                return None
            data = memoryview(o)
            if not data.c_contiguous:
                return None
        if data.nbytes != nbytes:
            return None
        return data
    except Exception:
        return None


def _placeholder_float(x):
    return {_BKEY: "float", "v": "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")}


def _prepare(v, atts, active):
    """A copy of v ready for a plain JSON encoder: binary values and numeric arrays become
    placeholders (their data appended to atts), non-finite floats float placeholders, dicts that
    have the placeholder key are escaped, and everything else JSON cannot hold is converted
    (_convert). The slow path: used only when a NaN or an infinity is in v, or the key is."""
    c = v.__class__
    if c is str or c is int or c is bool or v is None:
        return v
    if c is float:
        return v if v - v == 0.0 else _placeholder_float(v)  # inf - inf and nan - nan are nan
    if isinstance(v, dict):
        i = id(v)
        if i in active:
            raise ValueError("Circular reference detected")
        active.add(i)
        out = {}
        for k, x in v.items():
            if k.__class__ is not str and isinstance(k, float) and k - k != 0.0:
                k = "NaN" if k != k else ("Infinity" if k > 0 else "-Infinity")  # as JS names it
            out[k] = _prepare(x, atts, active)
        active.discard(i)
        return {_BKEY: "escape", "v": out} if _BKEY in v else out
    if isinstance(v, (list, tuple)):
        i = id(v)
        if i in active:
            raise ValueError("Circular reference detected")
        active.add(i)
        out = [_prepare(x, atts, active) for x in v]
        active.discard(i)
        return out
    if isinstance(v, (str, int)):
        return v
    if isinstance(v, float):  # np.float64 is a float
        return v if v - v == 0.0 else _placeholder_float(v)
    i = id(v)
    if i in active:  # an encoder's result holds the value itself
        raise ValueError("Circular reference detected")
    n = len(atts)
    r = _convert(v, atts)
    if len(atts) != n:
        return r  # a placeholder
    active.add(i)
    try:
        return _prepare(r, atts, active)
    finally:
        active.discard(i)


# --------------------------------------------------------------------------------------------
# Error bodies (from any thread).


def _safe_str(exc):
    try:
        return str(exc)
    except BaseException:
        return "<exception str() failed>"


def _clip(text):
    limit = min(1 << 20, max(256, _st.max_message // 16))
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
    limit = _st.max_message
    if len(body) > limit:  # tiny PYVISOR_MAX_MESSAGE: drop the traceback, then clip
        d["traceback"] = ""
        d["message"] = message[: max(0, limit - len(body) + len(message) - len(tb) - 32)]
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
# Incoming binary values: call frames whose attachments have been read (see _connection.py).


_FLOATS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_numpy = None  # the numpy module once an ndarray placeholder arrived (False: not importable)
_np_dtypes = {}  # dtype name -> numpy.dtype of little-endian elements


def _numpy_module():
    global _numpy
    if _numpy is None:
        try:
            import numpy

            _numpy = numpy if hasattr(numpy, "frombuffer") else False  # not a namespace package
        except Exception:  # not installed (or broken): ndarray placeholders arrive as bytes
            _numpy = False
    return _numpy


def _ndarray(x, data):
    """The value of an ndarray placeholder x whose attachment is data: a numpy.ndarray (its own,
    writable memory) if numpy can be imported, else data itself; None if x is malformed."""
    name = x.get("dtype")
    shape = x.get("shape")
    spec = _NUMERIC.get(name) if name.__class__ is str else None
    if spec is None or shape.__class__ is not list:
        return None
    n = spec[1]
    for d in shape:
        if d.__class__ is not int or d < 0:
            return None
        n *= d
    if n != len(data):
        return None
    np = _numpy_module()
    if not np:
        return data
    try:
        dt = _np_dtypes.get(name)
        if dt is None:
            dt = np.dtype(name)  # native order ("=") on little-endian machines
            if not _LITTLE:
                dt = dt.newbyteorder("<")
            _np_dtypes[name] = dt
        if not n:
            return np.zeros(shape, dt)
        return np.frombuffer(bytearray(data), dt).reshape(shape)
    except Exception:  # e.g. more dimensions than numpy allows
        return None


def _restore(args, atts):
    """Replace the placeholders in args (in place) by their values; unescape dicts."""
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
                    if i == "float" and len(x) == 2 and inner.__class__ is str and inner in _FLOATS:
                        c[k] = _FLOATS[inner]
                        continue
                    if i == "ndarray" and len(x) == 4:
                        j = x.get("data")
                        if j.__class__ is int and 0 <= j < n and not used[j]:
                            a = _ndarray(x, atts[j])
                            if a is not None:
                                used[j] = 1
                                count += 1
                                c[k] = a
                                continue
                    _protocol_error("bad binary placeholder %r" % (x,))
                push(x)
            elif xc is list:
                push(x)
    if count != n:
        _protocol_error("%d attachments announced, %d referenced" % (n, count))

"""Encoding and decoding of values: JSON via the C accelerator, binary values (attachments and
their placeholders), and the bodies of ok/item/err frames.

Binary values (call args; ok/item values): a JSON frame with a field "b": K is followed by K
attachment frames (same 4-byte length, raw bytes as the body); in the JSON, attachment i is the
placeholder {"__pyvisor_bytes__": i}, and a user dict that has the key "__pyvisor_bytes__" is
escaped as {"__pyvisor_bytes__": "escape", "v": dict}. Attachments arrive as bytes; bytes,
bytearray and memoryview results are sent as attachments. Frames without "b" are unchanged.

Everything here builds bodies (bytes, or lists/tuples of parts for _send); nothing writes to a
pipe. Encoding an ok/item value is main-thread only (one shared encoder); _dict_body and
_err_body may be used from any thread.
"""

import os

import pyvisor as _api

from ._fatal import _protocol_error
from ._state import state as _st

_Cancelled = _api.Cancelled
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
# Binary values met by _value_default during one _dumps (main thread only). Scratch space of the
# main encoder, like its circularity markers, so it lives here and not in the worker's state.
_attach = []


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


# --------------------------------------------------------------------------------------------
# Outgoing values: the bodies of ok/item frames.


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
        if len(body) <= _st.max_message:
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
        if size <= _st.max_message:
            return [head, sb, b"}"]
    raise _too_large("result" if t == "ok" else "item", name, size)


def _too_large(what, name, size):
    return _SerializationError(
        "ValueError",
        "the %s of handler %r is too large: its frame would be %d bytes, the limit is %d "
        "(PYVISOR_MAX_MESSAGE)" % (what, name, size, _st.max_message),
    )


_INLINE = 16384  # attachments smaller than this are copied next to their header (fewer iovecs)


def _binary_body(t, cid, v, s, name):
    """The frames of an ok/item value holding binary values (_attach, filled by _dumps): a
    tuple of parts (headers included) for _send. Raises _SerializationError."""
    what = "result" if t == "ok" else "item"
    limit = _st.max_message
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

"""pyvisor: Python handlers called from a Node.js pool of supervised worker processes.

A handler file is an ordinary Python module::

    from pyvisor import handler, on_init, encoder, Cancelled, current_call

    @handler
    def add(a, b):
        return a + b

    @handler(name="numbers")
    def count(n):            # a generator function is a streaming handler
        for i in range(n):
            yield i

    @handler
    async def fetch(url):    # runs on the worker's one event loop
        ...

    @on_init
    def load():              # runs once per worker, before it reports ready
        ...

    @encoder(Money)          # how results of a type JSON cannot hold are sent to Node
    def money(m):
        return {"amount": str(m.amount), "currency": m.currency}

The Node side starts each worker as ``python3 -u <pyvisor>/python/pyvisor/__main__.py
/abs/path/to/handlers.py`` (``python3 -m pyvisor handlers.py`` does the same); the runtime that
talks to Node lives in ``pyvisor._runtime`` (and the private modules it imports) and is only
imported by the worker.
Importing this module is cheap and has no side effects, so handler files can also be imported
from plain Python (unit tests, notebooks): the decorators then only record the functions. Put
the directory that ``npx pyvisor python-path`` prints on ``PYTHONPATH`` for that.
"""

import sys as _sys

__all__ = ["handler", "on_init", "encoder", "Cancelled", "CallInfo", "current_call"]
__version__ = "0.1.0"

# Handler kinds, decided once at registration from the code flags (no `inspect` import).
_PLAIN, _GEN, _ASYNC, _AGEN = 0, 1, 2, 3
_CO_GENERATOR = 0x20
_CO_COROUTINE = 0x80
_CO_ASYNC_GENERATOR = 0x200

_handlers = {}  # name -> (function, kind), in registration order
_init_funcs = []  # @on_init functions, in registration order
_encoders = {}  # type -> function, registered with encoder(); read by the runtime (_codec.py)
# Values of these types (and of their subclasses) are written by the JSON encoder itself.
_JSON_NATIVE = (dict, list, tuple, str, int, float, type(None))


class Cancelled(BaseException):
    """Raised inside a running handler when Node cancels its call.

    It derives from BaseException (like KeyboardInterrupt) so that ``except Exception:`` blocks
    in handler code do not swallow it by accident. It is raised at most once per call. A handler
    that lets it propagate produces an ``err`` reply of kind ``cancelled``; a handler that catches
    it may clean up and re-raise, or carry on (its eventual result is then discarded by Node).
    """


class CallInfo(object):
    """What :func:`current_call` returns: the call running on this worker right now."""

    __slots__ = ("id", "fn", "traceparent")

    def __init__(self, id, fn, traceparent):
        self.id = id  # the call id chosen by Node (int)
        self.fn = fn  # the handler name that was called
        self.traceparent = traceparent  # W3C traceparent sent by Node, or None

    def __repr__(self):
        return "CallInfo(id=%r, fn=%r, traceparent=%r)" % (self.id, self.fn, self.traceparent)


def current_call():
    """Return a :class:`CallInfo` for the call running now, or None outside a call.

    In an async handler (and in tasks it creates, and in ``asyncio.to_thread`` threads it
    starts) this is that handler's own call, even when many calls run at once on the worker's
    event loop. In a synchronous handler it is the call being run by the worker's main thread;
    a thread started by a handler sees the call that runs on the main thread at that moment.
    Outside a pyvisor worker this always returns None.
    """
    # Looked up, not imported: outside a worker the runtime's modules are never loaded.
    st = _sys.modules.get("pyvisor._state")
    if st is None:
        return None
    var = st.call_var  # a ContextVar once the worker's event loop exists
    msg = var.get(None) if var is not None else None
    if msg is None:
        msg = st.state.current_msg
        if msg is None:
            return None
    tp = msg.get("tp")
    if not isinstance(tp, str):
        tp = None
    return CallInfo(msg["id"], msg["fn"], tp)


def _kind_of(fn):
    flags = getattr(getattr(fn, "__code__", None), "co_flags", 0)
    if flags & _CO_ASYNC_GENERATOR:
        return _AGEN
    if flags & _CO_GENERATOR:
        return _GEN
    if flags & _CO_COROUTINE:
        return _ASYNC
    return _PLAIN


def _register(fn, name):
    if not callable(fn):
        raise TypeError("@handler must decorate a function, got %r" % (fn,))
    if name is None:
        name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or not name:
        raise ValueError("handler name must be a non-empty string, got %r" % (name,))
    if name in _handlers:
        other = _handlers[name][0]
        raise ValueError(
            "duplicate handler name %r: %s.%s is already registered under that name"
            % (
                name,
                getattr(other, "__module__", "?"),
                getattr(other, "__qualname__", getattr(other, "__name__", "?")),
            )
        )
    _handlers[name] = (fn, _kind_of(fn))
    return fn


def handler(fn=None, *, name=None):
    """Register a function as a handler Node can call by name.

    Usable as ``@handler``, ``@handler()``, ``@handler(name="other")`` or ``@handler("other")``.
    Generator functions (and async generator functions) are streaming handlers. Coroutine
    functions and async generator functions run on the worker's one event loop, created on first
    use and kept for the worker's life (never ``asyncio.run``), so clients made by an async
    ``@on_init`` can be used by every call. With concurrency 1 calls run one at a time; with
    more (``PYVISOR_CONCURRENCY``, set by Node) async handlers overlap on that loop, and a
    synchronous handler blocks the loop while it runs (use ``asyncio.to_thread`` for blocking
    work in async code). When Node cancels a call, an async handler sees
    ``asyncio.CancelledError`` where it awaits; a synchronous one gets :class:`Cancelled`.
    The function is returned unchanged. Registering a name twice raises ValueError at import
    time.
    """
    if isinstance(fn, str) and name is None:
        fn, name = None, fn
    if fn is None:
        return lambda f: _register(f, name)
    return _register(fn, name)


def on_init(fn=None):
    """Register a function to run once per worker, after the handler file is imported and
    before the worker reports ready. If it raises, the worker reports an init error and exits.
    Usable as ``@on_init`` or ``@on_init()``. Coroutine functions run on the worker's one event
    loop (the loop async handlers run on, kept for the worker's life), so what they create
    (clients, sessions, queues, background tasks) is usable by every later async call."""
    if fn is None:
        return on_init
    if not callable(fn):
        raise TypeError("@on_init must decorate a function, got %r" % (fn,))
    _init_funcs.append(fn)
    return fn


def encoder(cls, fn=None):
    """Register how values of type ``cls`` are sent to Node when a handler returns or yields
    them: ``fn(value)`` returns something that can be sent (JSON-able values, bytes, NumPy
    arrays, or anything else that has a conversion, an encoder included: it is converted in
    turn, recursively)::

        @pyvisor.encoder(Money)
        def money(m):
            return {"amount": str(m.amount), "currency": m.currency}

        pyvisor.encoder(Point, lambda p: [p.x, p.y])   # same, without the decorator

    Encoders are looked up along ``type(value).__mro__``, so an encoder for a class also serves
    its subclasses (the nearest registered class wins), and they take precedence over the
    built-in conversions: binary values (``bytes``, ``bytearray``, ``memoryview``) and NumPy
    numeric arrays are sent as attachments; NumPy scalars and other objects with an ``item()``
    or ``tolist()`` method are converted with it; sets become lists; dataclass instances become
    a dict of their fields, pydantic models ``model_dump()``; enum members their ``value``;
    ``datetime``/``date``/``time`` ``isoformat()``; ``Decimal`` and ``UUID`` ``str()``. An
    encoder registered for ``object`` is the fallback, tried only after all of those. A value
    nothing applies to is an ``ERR_SERIALIZATION`` error that names its type.

    Values JSON holds natively (``dict``, ``list``, ``tuple``, ``str``, ``int``, ``float``,
    ``bool``, ``None`` and instances of their subclasses, e.g. ``OrderedDict`` or an
    ``IntEnum``) are written by the JSON encoder directly and never reach an encoder: registering
    one for such a type raises TypeError. Encoders apply to results and stream items, not to
    call arguments. If an encoder raises, the call fails with ``ERR_SERIALIZATION`` carrying its
    message. Register at import time or in an ``@on_init`` function; registering a type again
    replaces its encoder. Returns ``fn`` (unchanged), so it works as a decorator.
    """
    if not isinstance(cls, type):
        raise TypeError("pyvisor.encoder() takes a class, got %r" % (cls,))
    if issubclass(cls, _JSON_NATIVE):
        raise TypeError(
            "pyvisor.encoder(%s): values of type %s are written as JSON directly and never reach "
            "an encoder (convert them in the handler instead)" % (cls.__name__, cls.__name__)
        )

    def register(f):
        if not callable(f):
            raise TypeError("pyvisor.encoder(%s) needs a function, got %r" % (cls.__name__, f))
        _encoders[cls] = f
        return f

    if fn is None:
        return register
    return register(fn)

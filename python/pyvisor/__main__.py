"""Worker entry point, started by pyvisor's Node side as

    python3 -u -m pyvisor /abs/path/to/handlers.py        (PYTHONPATH contains <repo>/python)

or, equivalently and faster to start on Python 3.9/3.10 (where ``-m`` imports runpy ->
importlib.util -> typing, ~20 ms), as

    python3 -u /abs/path/to/<repo>/python/pyvisor/__main__.py /abs/path/to/handlers.py

The request pipe must be fd 3 and the reply pipe fd 4 (see docs/protocol.md). With
PYVISOR_FORKSERVER set, the process is a fork server's template instead (see _forkserver.py).
"""

import sys


def _cache_own_bytecode():
    """Import the runtime with bytecode caching on, even under PYTHONDONTWRITEBYTECODE.

    Compiling pyvisor's own ~1000 lines costs 10-15 ms on every start-up when no .pyc exists,
    more than everything else the worker does before `ready`. So the package's own modules are
    always cached in pyvisor/__pycache__ (silently skipped if that directory is read-only);
    the user's handler files keep the interpreter's setting.
    """
    saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = False
    try:
        import pyvisor._runtime  # binds `pyvisor` too

        if saved:
            # __init__ and this file were compiled before we got control (without writing a
            # cache, under PYTHONDONTWRITEBYTECODE): cache them for the next start-up.
            import os

            try:
                from _frozen_importlib_external import SourceFileLoader, cache_from_source
            except ImportError:  # pragma: no cover
                from importlib.machinery import SourceFileLoader
                from importlib.util import cache_from_source

            for name, path in (("pyvisor", pyvisor.__file__), ("__main__", __file__)):
                try:
                    path = os.path.abspath(path)
                    cached = cache_from_source(path)
                    if not os.path.exists(cached) or os.path.getmtime(cached) < os.path.getmtime(
                        path
                    ):
                        SourceFileLoader(name, path).get_code(name)  # compiles, writes the .pyc
                except Exception:
                    pass
    finally:
        sys.dont_write_bytecode = saved


def _entry():
    # Is sys.path[0] the entry Python added implicitly (the cwd for -m, this directory for a
    # script)? It is dropped so that the handler file sees the sys.path of `python3 handlers.py`.
    implicit = bool(sys.path) and not (
        getattr(sys.flags, "safe_path", False) or sys.flags.isolated
    )
    if not __package__:
        # Run as a script: sys.path[0] is this package's own directory, which must not stay on
        # sys.path (it would expose _runtime etc. as top-level modules). Import the package from
        # its parent directory, kept at the end of sys.path.
        import os

        parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if implicit:
            del sys.path[0]
            implicit = False
        if parent not in sys.path:
            sys.path.append(parent)
    _cache_own_bytecode()
    from pyvisor._runtime import main

    import os

    if os.environ.get("PYVISOR_FORKSERVER"):
        # The fork server's template (startMethod 'forkserver'): serve() returns only in a
        # forked child, which then runs as a worker whose script is already imported.
        from pyvisor._forkserver import serve

        main(serve(sys.argv[1:], implicit), False, imported=True)
    main(sys.argv[1:], implicit)


_entry()

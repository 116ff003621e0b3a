"""Fatal exits of the worker, with the exit codes of docs/protocol.md.

Messages go straight to fd 2 (sys.stderr may have been replaced by user code), and the process
ends with os._exit: a non-daemon thread started by user code must not keep it alive.
"""

import os


def _die(code, message):
    try:
        os.write(2, ("pyvisor worker %d: %s\n" % (os.getpid(), message)).encode("utf-8", "replace"))
    except BaseException:
        pass
    os._exit(code)


def _protocol_error(message):
    _die(3, "protocol error: %s; exiting" % message)


def _internal_error():
    try:
        import traceback

        text = traceback.format_exc()
    except BaseException:
        text = "(no traceback)"
    _die(4, "internal error in the pyvisor runtime, please report it:\n" + text)


def _reply_pipe_broken(exc):
    if getattr(exc, "errno", None) == 32:  # EPIPE: Node closed its end, it is gone
        os._exit(0)
    _die(3, "cannot write to the reply pipe (%s)" % (exc,))

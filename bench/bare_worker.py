"""The bare baseline of bench/run.ts: a minimal length-prefixed echo worker (stdlib only).

    python3 -u bench/bare_worker.py [json|raw]

Same pipes as a pyvisor worker: requests on fd 3, replies on fd 4, each frame a 4-byte big-endian
length and a body. No library, no threads, no cancellation, no validation: the floor a pyvisor
worker is compared with.

  json (default)  body = {"t":"call","id":N,"fn":F,"args":[...]}  ->  {"t":"ok","id":N,"v":R}
                  F is "echo" (R = args[0]) or "add" (R = args[0] + args[1])
  raw             the body is echoed back unchanged (reference for binary payloads)

The first frame, written as soon as the interpreter runs this file (before `import json`), is
{"t":"ready"}: the start-up baseline is the interpreter's own cold start to a first frame.
"""

import os
import sys

IN_FD, OUT_FD = 3, 4
os.write(OUT_FD, b'\x00\x00\x00\x0d{"t":"ready"}')

RAW = len(sys.argv) > 1 and sys.argv[1] == "raw"

if not RAW:
    import json

    _loads = json.loads
    _dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    HANDLERS = {"echo": lambda x: x, "add": lambda a, b: a + b}

_read = os.read
_readv = os.readv
_writev = os.writev


def read_frame(buf):
    """Return (body, rest) for the next frame; body is a bytearray (None on EOF)."""
    while len(buf) < 4:
        data = _read(IN_FD, 65536)
        if not data:
            return None, buf
        buf += data
    n = int.from_bytes(buf[:4], "big")
    have = len(buf) - 4
    if have >= n:
        return buf[4 : 4 + n], buf[4 + n :]
    # Large frame: read the rest straight into one buffer (no re-concatenation).
    body = bytearray(n)
    body[:have] = buf[4:]
    view = memoryview(body)
    while have < n:
        k = _readv(IN_FD, [view[have:]])
        if k == 0:
            return None, b""
        have += k
    return body, b""


def write_frame(parts):
    n = 0
    for p in parts:
        n += len(p)
    parts.insert(0, n.to_bytes(4, "big"))
    total = n + 4
    done = _writev(OUT_FD, parts)
    if done == total:
        return
    data = memoryview(b"".join(parts))[done:]  # partial write (rare): finish it
    while data:
        data = data[os.write(OUT_FD, data) :]


def main():
    buf = bytearray()
    while True:
        body, buf = read_frame(buf)
        if body is None:
            os._exit(0)
        if RAW:
            write_frame([body])
            continue
        msg = _loads(body)
        v = HANDLERS[msg["fn"]](*msg["args"])
        write_frame([b'{"t":"ok","id":%d,"v":' % msg["id"], _dumps(v).encode(), b"}"])


main()

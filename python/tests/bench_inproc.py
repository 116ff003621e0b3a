"""In-process micro-benchmark of the runtime's per-call path (no scheduling noise).

    python3 python/tests/bench_inproc.py

Runs the real _serve() loop of the runtime (pyvisor/_serve.py) on the main thread of this
process, fed by a pre-filled request pipe, and compares it with a bare read/loads/add/dumps/write
loop over the same kind of pipes. Both loops pay the same syscalls for reading and writing;
pyvisor also pays two epoll_ctl() per call (arming the helper) and its bookkeeping.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import pyvisor  # noqa: E402
from pyvisor import _runtime  # noqa: E402, F401  (imports the runtime as the worker does)
from pyvisor._serve import _serve  # noqa: E402
from pyvisor._state import state as st  # noqa: E402

N = 20000
BODY = json.dumps({"t": "call", "id": 12345, "fn": "add", "args": [1, 2]}, separators=(",", ":"))
FRAME = len(BODY).to_bytes(4, "big") + BODY.encode()
BATCH = 500  # frames per refill: fits in a 64 KiB pipe


@pyvisor.handler
def add(a, b):
    return a + b


def bare_loop(in_fd, out_fd, n):
    buf = bytearray()
    loads = json.loads
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    for _ in range(n):
        while len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
            buf += os.read(in_fd, 65536)
        k = int.from_bytes(buf[:4], "big")
        m = loads(buf[4 : 4 + k])
        del buf[: 4 + k]
        b = b'{"t":"ok","id":%d,"v":' % m["id"] + dumps(m["args"][0] + m["args"][1]).encode() + b"}"
        os.writev(out_fd, [len(b).to_bytes(4, "big"), b])


def run(kind):
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    os.set_blocking(rep_r, False)
    total = 0.0
    done = 0
    if kind != "bare":
        import select

        st.in_fd, st.out_fd = req_r, rep_w
        st.buf.clear()
        if kind == "epoll":
            st.ep = select.epoll()
            st.ep.register(req_r, 0)
            st.ep_modify = st.ep.modify
            st.epollin = select.EPOLLIN
        else:  # no helper arming: the bare bookkeeping of the runtime
            st.ep = object()
            st.ep_modify = lambda fd, ev: None
    while done < N:
        os.write(req_w, FRAME * BATCH)
        if kind == "bare":
            t0 = time.perf_counter()
            bare_loop(req_r, rep_w, BATCH)
            total += time.perf_counter() - t0
        else:
            # Serve exactly BATCH calls, then leave _serve through an `exit` frame.
            os.write(req_w, b'\x00\x00\x00\x0c{"t":"exit"}')
            st.rlock.acquire()
            t0 = time.perf_counter()
            _serve()
            total += time.perf_counter() - t0
            st.rlock.release()
        done += BATCH
        try:  # drain replies
            while os.read(rep_r, 1 << 20):
                pass
        except BlockingIOError:
            pass
    for fd in (req_r, req_w, rep_r, rep_w):
        os.close(fd)
    return total / done * 1e6


def main():
    import statistics

    st.main_ident = None
    res = {"bare": [], "runtime, no epoll_ctl": [], "runtime (epoll mode)": []}
    kinds = {"bare": "bare", "runtime, no epoll_ctl": "noep", "runtime (epoll mode)": "epoll"}
    for _ in range(5):
        for label, kind in kinds.items():
            res[label].append(run(kind))
    base = min(res["bare"])
    for label, v in res.items():
        print("%-24s min %5.2f us/call  median %5.2f  (%+5.2f vs bare, min)"
              % (label, min(v), statistics.median(v), min(v) - base))


if __name__ == "__main__":
    main()

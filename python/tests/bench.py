"""Benchmarks of the Python side against bare baselines over the same pipes (stdlib only).

    python3 python/tests/bench.py [--python /path/to/python3] [--runs 20] [--calls 20000]

start-up: spawn -> first frame read by the parent, median of --runs:
    bare    python3 -u -c "<write one frame to fd 4>"
    -m      python3 -u -m pyvisor test/fixtures/handlers.py           (ready frame)
    script  python3 -u python/pyvisor/__main__.py test/fixtures/handlers.py
per call: round trips of {"t":"call","fn":"add","args":[1,2]} from this process:
    bare    a single-threaded Python loop: read frame, json.loads, add, json.dumps, write frame
    pyvisor the runtime, epoll reader (default on Linux) and reader-thread fallback
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker import Worker, fixture, frame  # noqa: E402

BARE_FRAME = (
    "import os; b=b'{\"t\":\"ready\"}'; os.write(4, len(b).to_bytes(4,'big')+b)"
)
BARE_ECHO = r"""
import os, json
buf = b""
while True:
    while len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
        d = os.read(3, 65536)
        if not d: os._exit(0)
        buf += d
    n = int.from_bytes(buf[:4], "big")
    m = json.loads(buf[4:4+n]); buf = buf[4+n:]
    b = json.dumps({"t":"ok","id":m["id"],"v":m["args"][0]+m["args"][1]}, separators=(",",":")).encode()
    os.write(4, len(b).to_bytes(4, "big") + b)
"""


def spawn(python, mode, reader=None):
    env = {"PYVISOR_READER": reader} if reader else {}
    if mode == "bare":
        return Worker(None, python=python, code=BARE_FRAME)
    if mode == "bare_echo":
        return Worker(None, python=python, code=BARE_ECHO)
    return Worker(fixture("handlers.py"), env=env, python=python, use_m=(mode == "-m"))


def startup(python, modes, runs):
    """spawn -> first frame (ready, or the bare frame): wall time, and the child's CPU time
    (user+sys from wait4 after it exits on EOF; steadier than wall time on a busy machine).
    Modes are interleaved run by run so that machine noise hits them alike."""
    times = {m: [] for m in modes}
    cpus = {m: [] for m in modes}
    for _ in range(runs):
        for mode in modes:
            t0 = time.perf_counter()
            w = spawn(python, mode)
            w.recv(30)
            times[mode].append((time.perf_counter() - t0) * 1000)
            w.close_requests()
            _, _, ru = os.wait4(w.proc.pid, 0)
            w.proc.returncode = 0
            cpus[mode].append((ru.ru_utime + ru.ru_stime) * 1000)
            w.close()
    return {
        m: (statistics.median(times[m]), min(times[m]), statistics.median(cpus[m]))
        for m in modes
    }


def per_call(python, mode, n, reader=None):
    w = spawn(python, mode, reader)
    if mode != "bare_echo":
        w.ready()
    body = [frame({"t": "call", "id": i, "fn": "add", "args": [1, 2]}) for i in range(n)]
    for i in range(2000):  # warm up
        w.send_raw(body[i % n])
        w.recv()
    c0 = cpu_seconds(w.proc.pid)
    t0 = time.perf_counter()
    for b in body:
        w.send_raw(b)
        w.recv()
    us = (time.perf_counter() - t0) / n * 1e6
    cpu = (cpu_seconds(w.proc.pid) - c0) / n * 1e6
    w.close()
    return us, cpu


def cpu_seconds(pid):
    """CPU time of a process, all threads, from /proc/<pid>/task/*/schedstat (ns resolution,
    Linux); falls back to /proc/<pid>/stat (clock ticks); 0 elsewhere."""
    total = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(") ", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3, help="per-call rounds (0: skip)")
    a = ap.parse_args()
    print("python: %s" % a.python)
    res = startup(a.python, ("bare", "-m", "script"), a.runs)
    for mode, (med, best, cpu) in res.items():
        print(
            "start-up %-7s median %6.1f ms (%+5.1f vs bare)   min %6.1f ms (%+5.1f)   "
            "child CPU %5.1f ms (%+5.1f)"
            % (mode, med, med - res["bare"][0], best, best - res["bare"][1], cpu,
               cpu - res["bare"][2])
        )
    if a.rounds <= 0:
        return
    results = {"bare_echo": [], "epoll": [], "thread": []}
    for _ in range(a.rounds):  # interleaved, to spread machine noise evenly
        results["bare_echo"].append(per_call(a.python, "bare_echo", a.calls))
        results["epoll"].append(per_call(a.python, "-m", a.calls))
        results["thread"].append(per_call(a.python, "-m", a.calls, reader="thread"))
    base = statistics.median(x[0] for x in results["bare_echo"])
    base_cpu = statistics.median(x[1] for x in results["bare_echo"])
    for k, v in results.items():
        med = statistics.median(x[0] for x in v)
        cpu = statistics.median(x[1] for x in v)
        print(
            "round trip %-9s median %6.1f us (%+5.1f vs bare)   worker CPU/call %5.1f us (%+5.1f)"
            "   runs: %s"
            % (k, med, med - base, cpu, cpu - base_cpu, " ".join("%.1f" % x[0] for x in v))
        )


if __name__ == "__main__":
    main()

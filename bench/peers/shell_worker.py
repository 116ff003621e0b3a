"""python-shell peer of bench/run.ts: a long-lived script in JSON mode (one JSON line per
message on stdin/stdout), doing the same work as bench/bare_worker.py."""

import json
import sys

HANDLERS = {"echo": lambda x: x, "add": lambda a, b: a + b}
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_out = sys.stdout

_out.write('{"t":"ready"}\n')
_out.flush()
for line in sys.stdin:
    msg = json.loads(line)
    _out.write('{"t":"ok","id":%d,"v":%s}\n' % (msg["id"], _dumps(HANDLERS[msg["fn"]](*msg["args"]))))
    _out.flush()

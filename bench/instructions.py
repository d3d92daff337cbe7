"""CPU instructions per request of the HTTP protocol object, counted by valgrind.

Wall-clock figures on a shared or virtual machine move by tens of percent from one minute
to the next; instruction counts do not. This feeds requests straight into HttpProtocol
(no sockets, as bench/protocol_cost.py does) under ``valgrind --tool=callgrind`` twice, with
few and with many requests, and prints the difference per request: the interpreter's
start-up and the app's set-up cancel out. The same pair of runs with every read handed to
a C builtin instead of the protocol is subtracted too, so that making the reads and the
loop over them are not counted as the server's. With ``--against REF`` the same is measured on
a git revision (checked out in a temporary worktree) and the change is printed.

    python bench/instructions.py                          # every workload, this tree
    python bench/instructions.py --workloads get,plugins --against HEAD~3
    python bench/instructions.py --workloads get,pipelined --yardsticks  # + ceiling, floor

Each read is a new bytes object (as from a socket); in ``pattern-cold`` each also names a
path not asked for before (the pattern memo misses every time).

Needs valgrind (``apt-get install valgrind``). One workload takes about two minutes.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)

# What each workload sends, one request per data_received() (x16: 16 in one read).
GET = b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
WORKLOADS: dict[str, tuple[str, bytes, int]] = {
    # name: (app, request, requests per read)
    "get": ("plain", GET, 1),
    "pipelined": ("plain", GET, 16),
    "pattern": ("pattern", b"GET /users/4711 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n", 1),
    # Every read a path not seen before: what the pattern table's memo cannot save.
    "pattern-cold": ("pattern", b"GET /users/%d HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n", 1),
    "plugins": ("plugins", b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
                           b"Origin: https://example.com\r\n\r\n", 1),
}
FEW, MANY = 500, 2500  # reads fed in the two runs

# Runs inside valgrind, in the tree measured (its path is argv[1]).
_FEEDER = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from bench.packetron_apps import build_pattern, build_plugins
from packetron import Packetron
from packetron.http.protocol import HttpProtocol

class Sink(asyncio.Transport):
    def write(self, data): pass
    def is_closing(self): return False
    def get_write_buffer_size(self): return 0
    def get_write_buffer_limits(self): return (16384, 65536)
    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 50000) if name == "peername" else default
    def close(self): pass

def plain(host, port):
    server = Packetron(host=host, port=port, workers=1)
    server.get("api/status", lambda q, s: s.send_json({"status": "ok"}))
    return server

server = sys.argv[2]
payload = bytes.fromhex(sys.argv[3]) * int(sys.argv[4])
# A new bytes object per read, as a socket gives: some checks are skipped for a read
# already seen, which feeding one object again and again would measure instead.
# (The template test is made once: "in" with a bytes needle costs about 1,500 instructions,
# which would be counted as the server's.)
holes = payload.count(b"%d")
reads = [payload % ((n,) * holes) if holes else bytes(bytearray(payload))
         for n in range(int(sys.argv[5]))]
if server.startswith(("ceiling", "floor")):  # the yardsticks of bench/http.py, same reads
    if server == "ceiling":
        from bench.ceiling_server import BatchingProtocol as Batched, CeilingProtocol as Single
    else:
        from bench import floor_server
        from bench.floor_server import BatchingFloorProtocol as Batched, FloorProtocol as Single
        if server == "floor:pattern":
            floor_server.use_pattern_routes()
        elif server == "floor:plugins":
            floor_server.ROUTES[b"/api/status"][b"GET"] = floor_server.with_plugins(
                floor_server.status)
    protocol = (Batched if int(sys.argv[4]) > 1 else Single)()
else:
    app = {"plain": plain, "pattern": build_pattern, "plugins": build_plugins}[server]
    protocol = HttpProtocol(app("127.0.0.1", 0).serving_state(), asyncio.new_event_loop())
protocol.connection_made(Sink())
# The baseline run hands each read to a C builtin instead: what remains is the loop and
# the making of the reads, which per_request() subtracts.
feed = len if sys.argv[6] == "baseline" else protocol.data_received
for data in reads:
    feed(data)
"""


def count(tree: str, workload: str, reads: int, mode: str = "serve",
          server: str | None = None) -> int:
    """Instructions valgrind counted for one run of the feeder (`mode` "baseline": the
    reads are made and looped over but not served; `server` "ceiling" or "floor": that
    bench server's protocol instead of packetron's)."""
    app, payload, per_read = WORKLOADS[workload]
    app = server or app
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         "-c", _FEEDER, tree, app, payload.hex(), str(per_read), str(reads), mode],
        capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONHASHSEED": "0"})  # the same dict layouts every run
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{workload}: the feeder failed in {tree}:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_request(tree: str, workload: str, server: str | None = None) -> float:
    per_read = WORKLOADS[workload][2]
    served = count(tree, workload, MANY, server=server) - count(tree, workload, FEW,
                                                                server=server)
    feeding = count(tree, workload, MANY, "baseline") - count(tree, workload, FEW, "baseline")
    return (served - feeding) / ((MANY - FEW) * per_read)


def worktree(ref: str, into: str) -> str:
    subprocess.run(["git", "worktree", "add", "--detach", into, ref], cwd=REPO_ROOT,
                   check=True, capture_output=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--against", metavar="REF", help="also measure this git revision")
    parser.add_argument("--yardsticks", action="store_true",
                        help="also count bench/floor_server.py (and, for get and "
                             "pipelined, bench/ceiling_server.py) on the same reads")
    args = parser.parse_args()
    workloads = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = [name for name in workloads if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads: {', '.join(unknown)}")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed: apt-get install valgrind")
    scratch = tempfile.mkdtemp(prefix="packetron-instructions-")
    other = worktree(args.against, os.path.join(scratch, "tree")) if args.against else None
    try:
        print(f"{'workload':<12}{'this tree':>12}" + (f"{args.against:>14}{'change':>9}"
                                                      if other else ""))
        for name in workloads:
            ours = per_request(REPO_ROOT, name)
            line = f"{name:<12}{ours:>12,.0f}"
            if other:
                theirs = per_request(other, name)
                line += f"{theirs:>14,.0f}{(ours - theirs) / theirs:>+9.1%}"
            print(line, flush=True)
            if args.yardsticks:
                app = WORKLOADS[name][0]
                for server in ("ceiling", "floor") if app == "plain" else (f"floor:{app}",):
                    theirs = per_request(REPO_ROOT, name, server)
                    print(f"  {server:<14}{theirs:>8,.0f}  (packetron {ours / theirs:.2f}x)",
                          flush=True)
        print("(instructions per request, valgrind callgrind)")
    finally:
        if other:
            subprocess.run(["git", "worktree", "remove", "--force", other], cwd=REPO_ROOT,
                           check=False, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

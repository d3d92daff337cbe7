"""Soak test: a multi-worker packetron server under mixed load for minutes, watched for leaks.

It starts a real server (``Packetron.run()`` with ``--workers 2`` by default, the code path
of ``packetron serve``) as a subprocess: this script again, with ``--serve``. Its app has
three routes:

- ``GET /api/status``: a small JSON answer;
- ``POST /api/echo`` (``JSON_BODY``): echoes a ~200-byte JSON body, after checking it;
- ``POST /upload`` (``MULTIPART_FORM_DATA``): a text field and a 4 KiB file streamed to a
  temporary directory; the handler checks the stored file's bytes, then deletes it.

A wrong body gets a 422, so corruption shows as an error, not as a served request. ``wrk``
(one thread, ``--connections`` keep-alive connections) sends a fixed cycle of the three
requests, 70/20/10 by default (``--mix``), for ``--minutes``; its Lua script counts every
answer outside 2xx by status. The server is pinned to one CPU and wrk to another
(``taskset``), when there are two.

Every ``--interval`` seconds it reads the RSS (``VmRSS``) and the open fds
(``/proc/PID/fd``) of each server process: the server, the pool process that forks the
workers, and the workers. It prints:

- requests, requests/s and how many of each kind were sent;
- errors: wrk's socket errors (connect, read, write, timeout) and non-2xx answers by status;
- RSS summed over the processes after the warm-up (``--warmup``: 10 s or 5 % of the run,
  whichever is shorter) and at the end of the load, and the drift between them in %;
- per process, RSS start/end and fd counts: idle before the load, at the start and the end
  of the load, and idle again after it;
- whether the worker PIDs changed (a worker that died and was replaced is a finding);
- the files left in the upload directory (0 expected).

Exit status: 0 when clean; 1 when there were errors, the workers changed, a process has
more fds idle after the load than idle before it, or upload files were left; 2 when the
soak could not run (wrk missing, the server did not start or answered wrongly).

Usage (from the repository root; needs ``wrk``: ``sudo apt-get install wrk``)::

    .venv/bin/python bench/soak.py                      # 5 minutes, 2 workers, 64 connections
    .venv/bin/python bench/soak.py --minutes 0.5 --json
    .venv/bin/python bench/soak.py --minutes 30 --workers 4 --mix 50,30,20 --interval 30
"""
from __future__ import annotations

import os
import sys

# Run as ``python bench/soak.py``, Python puts bench/ first on sys.path, where bench/http.py
# would shadow the standard library's ``http`` package. The repository root takes bench/'s
# place, so that ``bench.procs`` and ``packetron`` import (from this tree).
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == BENCH_DIR:
    sys.path[0] = REPO_ROOT

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import IO, Any  # noqa: E402

# The POST body is bench/http.py's: ~200 bytes of ordinary JSON.
from bench.http import ECHO_BODY, ECHO_OBJECT  # noqa: E402
from bench.procs import (HOST, NotReady, choose_cpus, free_port, git_state, pinned,  # noqa: E402
                         wait_ready)

STATUS_PATH = "/api/status"
ECHO_PATH = "/api/echo"
UPLOAD_PATH = "/upload"
KINDS = ("get", "post", "upload")

BOUNDARY = "----packetronSoakBoundary7c1e9a"
UPLOAD_NOTE = "soak"

STARTUP_TIMEOUT_S = 30.0
# SIGTERM first, SIGKILL after this long; the graceful stop needs a moment per worker.
STOP_TIMEOUT_S = 15.0
# The last sample is taken this long before wrk's end, while the load still runs.
END_MARGIN_S = 1.0
# After the load, how long the server gets to close its connections before the idle fds
# are counted.
IDLE_SETTLE_S = 5.0
# wrk gets this much time on top of its duration before it is considered hung.
WRK_GRACE_S = 30.0


# --------------------------------------------------------------------------- the server


def upload_content(size: int) -> bytes:
    """The uploaded file: printable ASCII, so it goes into a Lua string unescaped."""
    pattern = bytes(range(33, 127))
    return (pattern * (size // len(pattern) + 1))[:size]


def serve(port: int, workers: int, uploads: str, upload_bytes: int) -> None:
    """The server under test (the --serve mode): three routes, run until SIGTERM."""
    from packetron import HandlerFlags, Packetron, Request, Response

    expected = upload_content(upload_bytes)
    server = Packetron(port=port, host=HOST, workers=workers)

    @server.get("api/status")
    def status(request: Request, response: Response) -> None:
        response.send_json({"status": "ok"})

    @server.post("api/echo", flags=HandlerFlags.JSON_BODY)
    def echo(request: Request, response: Response) -> None:
        if request.body != ECHO_OBJECT:
            response.send_json({"error": "unexpected body"}, status=422)
            return
        response.send_json(request.body)

    @server.post("upload", flags=HandlerFlags.MULTIPART_FORM_DATA,
                 multipart_options={"file_storage_directory": uploads})
    async def upload(request: Request, response: Response) -> None:
        fields = await request.get_body()
        files = await request.get_files()
        entries = [e for value in files.values()
                   for e in (value if isinstance(value, list) else [value])]
        try:
            entry = files.get("file")
            good = (fields.get("note") == UPLOAD_NOTE and isinstance(entry, dict)
                    and not entry["truncated"] and _read(entry["path"]) == expected)
        finally:
            # Deleted whatever the verdict, so that hours of uploads do not fill the disk.
            for e in entries:
                os.unlink(e["path"])
        if not good:
            response.send_json({"error": "unexpected upload"}, status=422)
            return
        response.send_json({"size": len(expected)})

    server.run()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# --------------------------------------------------------------------------- the load


def upload_body(size: int) -> bytes:
    """A multipart/form-data body: the text field "note", then the file part "file"."""
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n"
        f"{UPLOAD_NOTE}\r\n"
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
        f"filename=\"soak.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode() + upload_content(size) + f"\r\n--{BOUNDARY}--\r\n".encode()


def mix_cycle(weights: tuple[int, ...]) -> list[str]:
    """One cycle of request kinds in proportion to weights, spread evenly (smooth weighted
    round robin), so that any stretch of the run has about the same mix."""
    divisor = math.gcd(*weights)
    weights = tuple(w // divisor for w in weights)
    credit = [0] * len(weights)
    cycle = []
    for _ in range(sum(weights)):
        credit = [c + w for c, w in zip(credit, weights)]
        best = credit.index(max(credit))
        credit[best] -= sum(weights)
        cycle.append(KINDS[best])
    return cycle


def lua_string(data: str) -> str:
    """A quoted Lua string literal. (A long bracket string would turn CRLF into LF.)"""
    escaped = data.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r", "\\r").replace("\n", "\\n") + '"'


WRK_SCRIPT = """\
-- Written by bench/soak.py: GET, POST JSON and multipart uploads in a fixed cycle; every
-- answer outside 2xx counted by status. done() prints the totals as one JSON line.
local prepared = {}
local cycle = {%(cycle)s}
local position = 0
local threads = {}
-- Globals, so that done() can read each thread's copy with thread:get().
sent = {}
non_2xx = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   prepared.get = wrk.format("GET", "%(status_path)s")
   prepared.post = wrk.format("POST", "%(echo_path)s",
                              {["Content-Type"] = "application/json"}, %(echo)s)
   prepared.upload = wrk.format("POST", "%(upload_path)s",
                                {["Content-Type"] = %(content_type)s}, %(upload)s)
   for kind in pairs(prepared) do
      sent[kind] = 0
   end
end

function request()
   position = position %% #cycle + 1
   local kind = cycle[position]
   sent[kind] = sent[kind] + 1
   return prepared[kind]
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non_2xx[status] = (non_2xx[status] or 0) + 1
   end
end

local function counts(table_of_counts)
   local parts = {}
   for key, count in pairs(table_of_counts) do
      parts[#parts + 1] = string.format('"%%s": %%.0f', tostring(key), count)
   end
   return "{" .. table.concat(parts, ", ") .. "}"
end

local function add(into, from)
   for key, count in pairs(from) do
      into[key] = (into[key] or 0) + count
   end
end

function done(summary, latency, requests)
   local all_sent, all_non_2xx = {}, {}
   for _, thread in ipairs(threads) do
      add(all_sent, thread:get("sent"))
      add(all_non_2xx, thread:get("non_2xx"))
   end
   local e = summary.errors
   io.write(string.format(
      'SOAK-RESULT {"requests": %%.0f, "duration_us": %%.0f, "bytes": %%.0f, ' ..
      '"socket_errors": {"connect": %%.0f, "read": %%.0f, "write": %%.0f, "timeout": %%.0f}, ' ..
      '"sent": %%s, "non_2xx": %%s}\\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.timeout, counts(all_sent), counts(all_non_2xx)))
end
"""


def write_wrk_script(directory: str, cycle: list[str], upload_bytes: int) -> str:
    path = os.path.join(directory, "soak.lua")
    with open(path, "w") as f:
        f.write(WRK_SCRIPT % {
            "cycle": ", ".join(f'"{kind}"' for kind in cycle),
            "status_path": STATUS_PATH,
            "echo_path": ECHO_PATH,
            "upload_path": UPLOAD_PATH,
            "echo": lua_string(ECHO_BODY),
            "content_type": lua_string(f"multipart/form-data; boundary={BOUNDARY}"),
            "upload": lua_string(upload_body(upload_bytes).decode("ascii")),
        })
    return path


@dataclasses.dataclass
class WrkResult:
    requests: int
    seconds: float
    socket_errors: dict[str, int]
    non_2xx: dict[str, int]
    sent: dict[str, int]

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values()) + sum(self.non_2xx.values())


def parse_wrk(output: str) -> WrkResult:
    """The line the Lua script's done() printed.

    Raises:
        ValueError: there is no such line (wrk failed before the end).
    """
    for line in output.splitlines():
        if line.startswith("SOAK-RESULT "):
            data = json.loads(line.partition(" ")[2])
            return WrkResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                socket_errors={k: int(v) for k, v in data["socket_errors"].items()},
                non_2xx={k: int(v) for k, v in sorted(data["non_2xx"].items())},
                sent={kind: int(data["sent"].get(kind, 0)) for kind in KINDS},
            )
    raise ValueError("wrk printed no result line:\n" + output)


# --------------------------------------------------------------------------- processes


def children(pid: int) -> list[int]:
    """pid's child processes (each thread has its own list: a fork from any one counts)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(child) for child in f.read().split())
    except OSError:
        pass  # it has just exited
    return found


def server_processes(root: int) -> dict[int, str]:
    """Every process of the server and its role: "server" (root), "worker" (a descendant
    with no children), "pool" (the process between them that forks the workers)."""
    roles: dict[int, str] = {}
    stack = [(root, True)]
    while stack:
        pid, is_root = stack.pop()
        kids = children(pid)
        roles[pid] = "server" if is_root else "pool" if kids else "worker"
        stack.extend((kid, False) for kid in kids)
    return roles


def worker_pids(roles: dict[int, str]) -> list[int]:
    """The processes that serve: the workers, or the server itself with --workers 1."""
    return sorted(pid for pid, role in roles.items() if role == "worker") or \
        [pid for pid, role in roles.items() if role == "server"]


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])  # always in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@dataclasses.dataclass
class Sample:
    """RSS (KiB) and open fds of every server process at one moment of the run."""

    at_s: float
    roles: dict[int, str]
    rss_kib: dict[int, int]
    fds: dict[int, int]

    @property
    def total_rss_kib(self) -> int:
        return sum(self.rss_kib.values())


def take_sample(root: int, at_s: float) -> Sample:
    roles = server_processes(root)
    rss = {pid: kib for pid in roles if (kib := rss_kib(pid)) is not None}
    fds = {pid: n for pid in roles if (n := fd_count(pid)) is not None}
    return Sample(at_s, roles, rss, fds)


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat): tells a PID reused apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


# --------------------------------------------------------------------------- server control


class SoakFailed(Exception):
    """The soak could not run: the server did not start, or answered wrongly before it."""


class Server:
    """The server subprocess: started pinned, in its own session, its output in a file."""

    def __init__(self, port: int, workers: int, uploads: str, upload_bytes: int,
                 cpu: int | None, log: IO[bytes]) -> None:
        self.port = port
        self.log = log
        command = [sys.executable, os.path.abspath(__file__), "--serve", "--port", str(port),
                   "--workers", str(workers), "--uploads", uploads,
                   "--upload-bytes", str(upload_bytes)]
        # Its own session: a Ctrl-C in the terminal reaches this script, which then stops
        # the server gracefully in its finally block.
        self.proc = subprocess.Popen(pinned(cpu, command), cwd=REPO_ROOT,
                                     stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid  # taskset execs the command: the PID is the server's own

    def log_tail(self, lines: int = 20) -> str:
        self.log.seek(0)
        text = self.log.read().decode("utf-8", "replace").rstrip()
        return "\n".join("    | " + line for line in text.splitlines()[-lines:])

    def wait_ready(self, workers: int) -> float:
        """Poll until it answers HTTP and all its workers are forked; the seconds it took."""
        started = time.monotonic()
        try:
            wait_ready(self.proc, lambda: request(self.port, "GET", STATUS_PATH),
                       STARTUP_TIMEOUT_S, errors=(OSError, http.client.HTTPException))
            # The port answers as soon as one worker serves: wait for the others too.
            wait_ready(self.proc,
                       lambda: len(worker_pids(server_processes(self.pid))) >= workers,
                       STARTUP_TIMEOUT_S)
        except NotReady as exc:
            raise SoakFailed(f"the server {exc}\n{self.log_tail()}") from None
        return time.monotonic() - started

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the server by its PID (it stops its workers gracefully); SIGKILL it after
        STOP_TIMEOUT_S, and then any of its processes still alive, by PID."""
        family = {pid: _start_time(pid) for pid in server_processes(self.pid) if pid != self.pid}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for pid, started in family.items():
            while _start_time(pid) == started and time.monotonic() < deadline:
                time.sleep(0.05)
            if started is not None and _start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)  # still the same process: it holds the port
                except ProcessLookupError:
                    pass


def request(port: int, method: str, path: str, body: bytes | None = None,
            content_type: str | None = None) -> tuple[int, bytes]:
    """One request on a new connection; (status, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5.0)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def check_routes(server: Server, uploads: str, upload_bytes: int) -> None:
    """Each route answers right once before the load: a broken server fails in a second,
    not after minutes of errors."""
    expected = {
        "GET": (request(server.port, "GET", STATUS_PATH), {"status": "ok"}),
        "POST JSON": (request(server.port, "POST", ECHO_PATH, ECHO_BODY.encode(),
                              "application/json"), ECHO_OBJECT),
        "upload": (request(server.port, "POST", UPLOAD_PATH, upload_body(upload_bytes),
                           f"multipart/form-data; boundary={BOUNDARY}"),
                   {"size": upload_bytes}),
    }
    for name, ((status, body), wanted) in expected.items():
        try:
            answer = json.loads(body)
        except ValueError:
            answer = body[:200]
        if status != 200 or answer != wanted:
            raise SoakFailed(f"{name}: expected 200 {wanted}, got {status} {answer!r}\n"
                             f"{server.log_tail()}")
    if os.listdir(uploads):
        raise SoakFailed(f"the upload handler left files in {uploads}: {os.listdir(uploads)}")


# --------------------------------------------------------------------------- the run


def sample_times(duration_s: int, warmup_s: float, interval_s: float) -> list[float]:
    """When to sample, in seconds after wrk started: after the warm-up, every interval, and
    once more just before the end (the last sample is the run's end value)."""
    last = max(warmup_s, duration_s - END_MARGIN_S)
    times = []
    at = warmup_s
    while at < last - interval_s / 2:  # not a near-duplicate of the last one
        times.append(at)
        at += interval_s
    return times + [last]


def run_load(server: Server, args: argparse.Namespace, script: str, client_cpu: int | None,
             duration_s: int) -> tuple[WrkResult, list[Sample], set[int]]:
    """wrk for duration_s while the server is sampled; the result, the samples, and every
    worker PID seen during the load."""
    command = ["wrk", "-t1", f"-c{args.connections}", f"-d{duration_s}s", "-s", script,
               f"http://{HOST}:{server.port}{STATUS_PATH}"]
    samples: list[Sample] = []
    seen: set[int] = set()
    started = time.monotonic()
    wrk = subprocess.Popen(pinned(client_cpu, command), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for at in sample_times(duration_s, args.warmup, args.interval):
            try:
                wrk.wait(timeout=max(0.0, started + at - time.monotonic()))
                break  # wrk ended early: no more samples under load
            except subprocess.TimeoutExpired:
                pass
            sample = take_sample(server.pid, time.monotonic() - started)
            samples.append(sample)
            seen.update(worker_pids(sample.roles))
            print_progress(sample, samples[0])
        try:
            output, _ = wrk.communicate(timeout=duration_s + WRK_GRACE_S)
        except subprocess.TimeoutExpired:
            raise SoakFailed(f"wrk did not end {WRK_GRACE_S:g} s after its duration") from None
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    if wrk.returncode != 0:
        raise SoakFailed(f"wrk exited with {wrk.returncode}:\n{output}")
    try:
        return parse_wrk(output), samples, seen
    except ValueError as exc:
        raise SoakFailed(str(exc)) from None


def settled_sample(root: int) -> Sample:
    """A sample once the fd counts hold still for a moment (the checks' connections are
    closed), or after IDLE_SETTLE_S."""
    deadline = time.monotonic() + IDLE_SETTLE_S
    sample = take_sample(root, 0.0)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        previous, sample = sample, take_sample(root, 0.0)
        if sample.fds == previous.fds:
            break
    return sample


def idle_fds(root: int, before: dict[int, int]) -> Sample:
    """A sample once the server has closed wrk's connections: polled until no process has
    more fds than before the load, or IDLE_SETTLE_S passed."""
    deadline = time.monotonic() + IDLE_SETTLE_S
    while True:
        sample = take_sample(root, 0.0)
        grown = [pid for pid, n in sample.fds.items() if n > before.get(pid, 0)]
        if not grown or time.monotonic() > deadline:
            return sample
        time.sleep(0.1)


def wait_for_empty(directory: str) -> int:
    """The number of files left in directory, polled for up to IDLE_SETTLE_S until 0."""
    deadline = time.monotonic() + IDLE_SETTLE_S
    while (left := len(os.listdir(directory))) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _workers(count: int) -> str:
    return f"{count} worker" + ("s" if count != 1 else "")


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def _drift_pct(start_kib: int, end_kib: int) -> float | None:
    return (end_kib - start_kib) / start_kib * 100 if start_kib else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f} %"


def print_progress(sample: Sample, first: Sample) -> None:
    """One line per sample, so a long run shows that it is alive and how memory moves."""
    drift = _drift_pct(first.total_rss_kib, sample.total_rss_kib)
    fds = " ".join(f"{sample.roles[pid]}:{n}" for pid, n in sorted(sample.fds.items()))
    print(f"  [{sample.at_s:6.0f} s] RSS {_mib(sample.total_rss_kib)} MiB ({_pct(drift)})  "
          f"fds {fds}", flush=True)


def process_rows(idle_before: Sample, start: Sample, end: Sample,
                 idle_after: Sample) -> list[dict[str, Any]]:
    """One row per process seen: role, PID, RSS start/end, fds at the four moments."""
    roles = {**idle_after.roles, **end.roles, **start.roles, **idle_before.roles}
    pids = sorted(roles, key=lambda pid: (("server", "pool", "worker").index(roles[pid]), pid))
    return [{
        "pid": pid,
        "role": roles[pid],
        "rss_start_kib": start.rss_kib.get(pid),
        "rss_end_kib": end.rss_kib.get(pid),
        "fds_idle_before": idle_before.fds.get(pid),
        "fds_start": start.fds.get(pid),
        "fds_end": end.fds.get(pid),
        "fds_idle_after": idle_after.fds.get(pid),
    } for pid in pids]


def findings(result: WrkResult, rows: list[dict[str, Any]], workers_changed: bool,
             files_left: int, server_alive: bool) -> list[str]:
    """What makes the soak fail, in words (empty: it passed)."""
    found = []
    if result.errors:
        found.append(f"{result.errors:,} errors")
    if workers_changed:
        found.append("the worker PIDs changed (a worker died and was replaced)")
    grown = [f"{row['role']} {row['pid']} ({row['fds_idle_before']} -> {row['fds_idle_after']})"
             for row in rows if row["fds_idle_before"] is not None
             and (row["fds_idle_after"] or 0) > row["fds_idle_before"]]
    if grown:
        found.append("more fds idle after the load than before: " + ", ".join(grown))
    if files_left:
        found.append(f"{files_left} upload file(s) left on disk")
    if not server_alive:
        found.append("the server process exited during the soak")
    return found


def print_report(summary: dict[str, Any]) -> None:
    config, wrk = summary["config"], summary["wrk"]
    rss, workers = summary["rss"], summary["workers"]
    sent = ", ".join(f"{kind} {count:,}" for kind, count in wrk["sent"].items())
    print()
    print(f"duration      {wrk['seconds']:.1f} s (warm-up {config['warmup_s']:g} s), "
          f"{_workers(config['workers'])}, wrk -t1 -c{config['connections']}")
    print(f"requests      {wrk['requests']:,} ({wrk['requests_per_s']:,.0f} req/s); sent: {sent}")
    socket_errors = ", ".join(f"{k} {v:,}" for k, v in wrk["socket_errors"].items())
    non_2xx = ", ".join(f"{k}: {v:,}" for k, v in wrk["non_2xx"].items()) or "none"
    print(f"errors        {wrk['errors']:,} (socket: {socket_errors}; non-2xx: {non_2xx})")
    print(f"RSS           {_mib(rss['start_kib'])} MiB at {rss['start_at_s']:.0f} s -> "
          f"{_mib(rss['end_kib'])} MiB at {rss['end_at_s']:.0f} s: {_pct(rss['drift_pct'])} "
          "(summed over the server's processes)")
    print()
    print(f"  {'process':<8} {'pid':>8} {'RSS start':>10} {'RSS end':>8} {'fds: idle':>10} "
          f"{'start':>6} {'end':>6} {'idle after':>11}")
    for row in summary["processes"]:
        cells = [row[key] for key in ("fds_idle_before", "fds_start", "fds_end",
                                      "fds_idle_after")]
        idle, start, end, after = ("-" if n is None else str(n) for n in cells)
        print(f"  {row['role']:<8} {row['pid']:>8} {_mib(row['rss_start_kib']):>10} "
              f"{_mib(row['rss_end_kib']):>8} {idle:>10} {start:>6} {end:>6} {after:>11}")
    print("  (RSS in MiB; fds idle before the load, at its start and end, idle after it)")
    print()
    if workers["changed"]:
        print(f"workers       CHANGED: {workers['before']} before, {workers['after']} after, "
              f"seen {workers['seen']}")
    else:
        print(f"workers       unchanged: {', '.join(map(str, workers['before']))}")
    print(f"upload dir    {summary['upload_files_left']} files left")
    if summary["findings"]:
        print("result        FAILED: " + "; ".join(summary["findings"]))
    else:
        print("result        passed: no errors, same workers, no fd growth, no files left")


def summarize(args: argparse.Namespace, duration_s: int, cpus: tuple[int | None, int | None],
              state: dict[str, Any], result: WrkResult, samples: list[Sample], idle_before: Sample,
              idle_after: Sample, seen: set[int], files_left: int,
              server_alive: bool) -> dict[str, Any]:
    start, end = samples[0], samples[-1]
    rows = process_rows(idle_before, start, end, idle_after)
    before, after = worker_pids(idle_before.roles), worker_pids(idle_after.roles)
    changed = before != after or not seen <= set(before)
    return {
        "config": {
            "duration_s": duration_s,
            "workers": args.workers,
            "connections": args.connections,
            "mix": dict(zip(KINDS, args.mix)),
            "upload_bytes": args.upload_bytes,
            "interval_s": args.interval,
            "warmup_s": args.warmup,
            "server_cpu": cpus[0],
            "client_cpu": cpus[1],
            "python": sys.version.split()[0],
            **state,
        },
        "wrk": {**dataclasses.asdict(result), "errors": result.errors,
                "requests_per_s": result.requests / result.seconds if result.seconds else 0.0},
        "rss": {
            "start_kib": start.total_rss_kib,
            "end_kib": end.total_rss_kib,
            "start_at_s": round(start.at_s, 1),
            "end_at_s": round(end.at_s, 1),
            "drift_pct": _drift_pct(start.total_rss_kib, end.total_rss_kib),
        },
        "processes": rows,
        "workers": {"before": before, "after": after, "seen": sorted(seen), "changed": changed},
        "upload_files_left": files_left,
        "samples": [{"at_s": round(s.at_s, 1), "rss_kib": s.rss_kib, "fds": s.fds}
                    for s in samples],
        "findings": findings(result, rows, changed, files_left, server_alive),
    }


def packetron_state() -> dict[str, Any]:
    """The packetron measured: version, where it was imported from, commit, local edits."""
    import packetron

    return {"packetron": packetron.__version__,
            "packetron_path": os.path.dirname(packetron.__file__),
            **git_state(REPO_ROOT)}


def soak(args: argparse.Namespace, duration_s: int) -> int:
    cpus = choose_cpus(args.server_cpu, args.client_cpu)
    state = packetron_state()
    edits = (f", uncommitted changes in {', '.join(state['packetron_uncommitted'])}"
             if state["packetron_uncommitted"] else "")
    names = ("GET", "POST JSON", f"upload ({args.upload_bytes}-byte file)")
    mix = ", ".join(f"{name} {weight / sum(args.mix):.0%}"
                    for name, weight in zip(names, args.mix))
    print(f"soak: packetron {state['packetron']} ({state['packetron_path']}, commit "
          f"{state['commit'] or 'unknown'}{edits})\n"
          f"      {_workers(args.workers)} on CPU {cpus[0]}, wrk -t1 -c{args.connections} on "
          f"CPU {cpus[1]}, {duration_s} s: {mix};\n      "
          f"samples every {args.interval:g} s after {args.warmup:g} s of warm-up", flush=True)
    with tempfile.TemporaryDirectory(prefix="packetron-soak-") as scratch, \
            tempfile.TemporaryFile() as log:
        uploads = os.path.join(scratch, "uploads")
        os.mkdir(uploads)
        script = write_wrk_script(scratch, mix_cycle(args.mix), args.upload_bytes)
        server = Server(free_port(), args.workers, uploads, args.upload_bytes, cpus[0], log)
        try:
            took = server.wait_ready(args.workers)
            check_routes(server, uploads, args.upload_bytes)
            idle_before = settled_sample(server.pid)
            print(f"  server {server.pid} ready in {took:.2f} s on port {server.port}, "
                  f"workers {', '.join(map(str, worker_pids(idle_before.roles)))}; "
                  "routes checked", flush=True)
            result, samples, seen = run_load(server, args, script, cpus[1], duration_s)
            if not samples:
                raise SoakFailed("wrk ended before the first sample")
            # Counted once the connections are closed: an upload wrk cut off at its end
            # is the server's to clean up when it sees the client go.
            idle_after = idle_fds(server.pid, idle_before.fds)
            files_left = wait_for_empty(uploads)
            summary = summarize(args, duration_s, cpus, state, result, samples,
                                idle_before, idle_after, seen, files_left, server.alive())
            if not server.alive():
                print(server.log_tail(), file=sys.stderr)
        except SoakFailed as exc:
            print(f"soak could not run: {exc}", file=sys.stderr)
            return 2
        finally:
            server.stop()
    print_report(summary)
    if args.json:
        print(json.dumps(summary))
    return 1 if summary["findings"] else 0


def _mix(text: str) -> tuple[int, int, int]:
    try:
        weights = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("three whole numbers, like 70,20,10") from None
    if len(weights) != 3 or min(weights) < 0 or sum(weights) == 0:
        raise argparse.ArgumentTypeError("three whole numbers >= 0, not all 0, like 70,20,10")
    return weights  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Soak test: a multi-worker packetron server under mixed GET, POST JSON "
        "and upload load; prints requests, errors, RSS drift and fd counts.")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the load (5)")
    parser.add_argument("--workers", type=int, default=2, help="server workers (2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--mix", type=_mix, default=(70, 20, 10),
                        help="weights of GET, POST JSON and upload requests (70,20,10)")
    parser.add_argument("--upload-bytes", type=int, default=4096,
                        help="size of the uploaded file (4096)")
    parser.add_argument("--interval", type=float, default=10.0,
                        help="seconds between RSS and fd samples (10)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of load before the RSS and fds taken as the start "
                        "(10 or 5%% of the run, whichever is shorter)")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU the server is pinned to")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU wrk is pinned to")
    parser.add_argument("--json", action="store_true",
                        help="also print the summary as one JSON object on the last line")
    # The server's own mode: this script started again as the server under test.
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--uploads", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.port, args.workers, args.uploads, args.upload_bytes)
        return 0

    duration_s = max(1, round(args.minutes * 60))
    if args.warmup is None:
        args.warmup = min(10.0, duration_s * 0.05)
    if args.minutes <= 0 or args.workers < 1 or args.connections < 1 or args.interval <= 0:
        parser.error("--minutes, --workers, --connections and --interval must be positive")
    if duration_s < 3:
        parser.error("--minutes must give at least 3 s of load")
    if args.upload_bytes < 1 or not 0 <= args.warmup < duration_s - END_MARGIN_S:
        parser.error(f"--upload-bytes must be positive and --warmup from 0 to less than "
                     f"{duration_s - END_MARGIN_S:g} s (the run less {END_MARGIN_S:g} s)")
    if shutil.which("wrk") is None:
        print("wrk is required and missing. Install it, then run again:\n"
              "    sudo apt-get install wrk        (Debian/Ubuntu)\n"
              "    brew install wrk                (macOS)", file=sys.stderr)
        return 2
    return soak(args, duration_s)


if __name__ == "__main__":
    sys.exit(main())

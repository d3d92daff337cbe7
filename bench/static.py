"""Static file benchmark: packetron's serve() against nginx, in one run.

A 4 KiB and a 1 MiB file of random bytes are served by packetron (one process,
``server.serve(dir)``) and by nginx (one worker, ``sendfile on``, no access log) twice:
as configured by default, and as ``nginx-cached`` with ``open_file_cache`` (descriptors and
stat results kept, as a busy static server is tuned; the counterpart of packetron keeping
small files in memory). All serve
the same directory. Each server is pinned to one CPU with ``taskset -c 0`` and loaded by
``wrk -t1 -c64 --latency`` pinned to CPU 1. Rounds are interleaved and the server order
rotates, so slow drift in machine load hits all alike. It prints median req/s, MB/s,
p99 latency and the server's peak RSS per file, and each server over both nginx setups.

Usage (from the repository root)::

    .venv/bin/python bench/static.py [--duration 5] [--rounds 3]

nginx comes from Debian's ``nginx`` package: when it is missing and the script runs as
root, it is installed with apt-get (its service is not started; the bench runs its own
nginx with a private config on a free port). Target: packetron >= 0.5x nginx on 1 MiB.
"""
from __future__ import annotations

import os
import sys

# Run as ``python bench/static.py``, bench/ comes first on sys.path, where bench/http.py
# would shadow the standard library's ``http`` package (urllib needs it). The repository
# root takes bench/'s place, so that ``bench.procs`` imports.
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == BENCH_DIR:
    sys.path[0] = REPO_ROOT

import argparse  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import urllib.request  # noqa: E402

from bench.procs import HOST, free_port, peak_rss_mb, pinned, stop, wait_ready  # noqa: E402

FILES = {"4 KiB": ("f4k.bin", 4 * 1024), "1 MiB": ("f1m.bin", 1024 * 1024)}
STARTUP_TIMEOUT_S = 20.0
TARGET_1MIB_RATIO = 0.5

PACKETRON_SERVER = """
import sys
from packetron import Packetron
server = Packetron(port=int(sys.argv[1]), host="127.0.0.1", workers=1)
server.serve(sys.argv[2])
server.run()
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  {file_cache}
  keepalive_requests 1000000;
  types {{ application/octet-stream bin; }}
  client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
  uwsgi_temp_path {dir}; scgi_temp_path {dir};
  server {{ listen {host}:{port}; root {root}; }}
}}
"""


def ensure_nginx(install: bool) -> str | None:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if path or not install:
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print("nginx is missing: sudo apt-get install nginx", file=sys.stderr)
        return None
    print("installing nginx (apt-get install -y nginx) ...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], env=env, capture_output=True)
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def fetch(url: str, timeout: float) -> bytes:
    """The body of one GET."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def run_wrk(url: str, duration: int, connections: int, cpu: int) -> tuple[float, float, float]:
    """(req/s, MB/s, p99 ms) of one wrk run."""
    out = subprocess.run(pinned(cpu, ["wrk", "-t1", f"-c{connections}", f"-d{duration}s",
                                      "--latency", url]),
                         capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    scale = {"B": 1e-6, "KB": 1024 / 1e6, "MB": 1024**2 / 1e6, "GB": 1024**3 / 1e6}
    mbps = float(transfer.group(1)) * scale[transfer.group(2)] if transfer else 0.0
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)] if p99 else 0.0
    if re.search(r"Non-2xx|Socket errors", out):
        print(f"  warning: {url}: {' '.join(x.strip() for x in out.splitlines() if 'rror' in x or 'Non-2xx' in x)}",
              file=sys.stderr)
    return rps, mbps, p99_ms


def start_packetron(root: str, cpu: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(pinned(cpu, [sys.executable, "-c", PACKETRON_SERVER, str(port), root]))
    return proc, f"http://{HOST}:{port}"


# nginx-cached: open descriptors and stat results are kept (checked again each second).
NGINX_FILE_CACHE = "open_file_cache max=1000 inactive=60s; open_file_cache_valid 1s;"


def start_nginx(nginx: str, root: str, workdir: str, cpu: int,
                cached: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as file:
        file.write(NGINX_CONF.format(dir=workdir, host=HOST, port=port, root=root,
                                     file_cache=NGINX_FILE_CACHE if cached else ""))
    proc = subprocess.Popen(pinned(cpu, [nginx, "-p", workdir, "-c", conf]))
    return proc, f"http://{HOST}:{port}"


def main() -> int:
    parser = argparse.ArgumentParser(description="static files: packetron vs nginx")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--no-install", action="store_true")
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("taskset"):
        print("needs wrk and taskset (apt-get install wrk util-linux)", file=sys.stderr)
        return 2
    nginx = ensure_nginx(not args.no_install)
    servers = ["packetron"] + (["nginx", "nginx-cached"] if nginx else [])
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    rss: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="packetron-static-bench-") as tmp:
        root, workdir = os.path.join(tmp, "root"), os.path.join(tmp, "nginx")
        os.makedirs(root)
        os.makedirs(workdir)
        # nginx's worker drops root for an unprivileged user; it must read the files.
        for path in (tmp, root):
            os.chmod(path, 0o755)
        digests = {}
        for name, size in FILES.values():
            data = os.urandom(size)
            digests[name] = hashlib.sha256(data).hexdigest()
            with open(os.path.join(root, name), "wb") as file:
                file.write(data)
            os.chmod(os.path.join(root, name), 0o644)
        for round_number in range(args.rounds):
            shift = round_number % len(servers)
            for server in servers[shift:] + servers[:shift]:
                if server == "packetron":
                    proc, base = start_packetron(root, args.server_cpu)
                else:
                    proc, base = start_nginx(nginx, root, workdir, args.server_cpu,  # type: ignore[arg-type]
                                             cached=server == "nginx-cached")
                try:
                    wait_ready(proc, functools.partial(fetch, f"{base}/{FILES['4 KiB'][0]}", 1),
                               STARTUP_TIMEOUT_S)
                    for name, _ in FILES.values():  # a fast wrong answer must not count
                        body = fetch(f"{base}/{name}", 5)
                        assert hashlib.sha256(body).hexdigest() == digests[name]
                    for label, (name, _) in FILES.items():
                        run = run_wrk(f"{base}/{name}", args.duration, args.connections,
                                      args.client_cpu)
                        results.setdefault((server, label), []).append(run)
                        print(f"round {round_number + 1} {server:12} {label}: {run[0]:10.0f} req/s",
                              file=sys.stderr)
                    # nginx's worker is a child of its master: count both.
                    rss[server] = max(rss.get(server, 0.0), peak_rss_mb(
                        proc.pid if server == "packetron" else _nginx_master(workdir, proc.pid),
                        children=True))
                finally:
                    stop(proc)
    print()
    print(f"wrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} rounds, medians; "
          f"server on CPU {args.server_cpu}, wrk on CPU {args.client_cpu}")
    print()
    print("| server | file | req/s | MB/s | p99 ms | peak RSS MB | / nginx | / nginx-cached |")
    print("|---|---|---|---|---|---|---|---|")
    medians = {key: tuple(statistics.median(r[i] for r in runs) for i in range(3))
               for key, runs in results.items()}

    def over(rps: float, peer: str, label: str) -> str:
        return f"{rps / medians[(peer, label)][0]:.2f}" if (peer, label) in medians else "-"

    for label in FILES:
        for server in servers:
            rps, mbps, p99 = medians[(server, label)]
            print(f"| {server} | {label} | {rps:,.0f} | {mbps:,.0f} | {p99:.1f} | "
                  f"{rss.get(server, 0):.1f} | {over(rps, 'nginx', label)} | "
                  f"{over(rps, 'nginx-cached', label)} |")
    if ("nginx", "1 MiB") in medians:
        ratio = medians[("packetron", "1 MiB")][0] / medians[("nginx", "1 MiB")][0]
        verdict = "met" if ratio >= TARGET_1MIB_RATIO else "NOT met"
        print(f"\ntarget packetron >= {TARGET_1MIB_RATIO}x nginx on 1 MiB: {ratio:.2f}x, {verdict}")
    return 0


def _nginx_master(workdir: str, fallback: int) -> int:
    # taskset execs nginx in place, so the Popen pid is nginx's master itself.
    try:
        with open(os.path.join(workdir, "nginx.pid")) as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return fallback


if __name__ == "__main__":
    sys.exit(main())

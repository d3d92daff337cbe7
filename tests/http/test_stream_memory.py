"""STREAM_BODY reads the socket no faster than the handler: a 1 GiB upload to a handler
that pauses now and then leaves the server's memory flat."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import packetron

GIB = 1 << 30
CHUNK = 1 << 20

SERVER = textwrap.dedent("""
    import asyncio, sys
    from packetron import HandlerFlags, Packetron

    server = Packetron(port=0, host="127.0.0.1", workers=1)

    @server.post("sink", flags=HandlerFlags.STREAM_BODY)
    async def sink(request, response):
        total = pieces = 0
        async for chunk in request.stream():
            total += len(chunk)
            pieces += 1
            if pieces % 64 == 0:
                await asyncio.sleep(0.001)  # a slow consumer
        response.send_json({"bytes": total})

    server.start()
    print(server.port, flush=True)
    sys.stdin.read()  # until the test closes our stdin
    server.stop()
""")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_gibibyte_streams_through_with_flat_memory(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    env = {**os.environ, "PYTHONPATH": str(Path(packetron.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        port = int(proc.stdout.readline())
        baseline = rss_kib(proc.pid)
        peak = baseline
        block = b"x" * CHUNK
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % GIB)
            for index in range(GIB // CHUNK):
                sock.sendall(block)
                if index % 64 == 0:
                    peak = max(peak, rss_kib(proc.pid))
            answer = b""
            while b"}" not in answer:
                answer += sock.recv(4096)
        assert answer.endswith(b'{"bytes":%d}' % GIB)
        peak = max(peak, rss_kib(proc.pid))
        assert peak - baseline < 48 * 1024, f"RSS grew by {(peak - baseline) // 1024} MiB"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

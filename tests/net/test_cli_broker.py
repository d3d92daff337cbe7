"""The command line as a real subprocess: `packetron broker`, `packetron serve`."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nethelp import free_port, write_source

LOCAL = "127.0.0.1"
SCRIPT = Path(sys.executable).with_name("packetron")


def start(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "packetron", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_for_port(proc: subprocess.Popen[bytes], port: int, timeout: float = 20.0) -> None:
    """Readiness: poll until the port accepts (or the process died)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((LOCAL, port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"broker exited with {proc.returncode}:\n{out}")
            if time.monotonic() > deadline:
                pytest.fail(f"port {port} never accepted")
            time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes], signum: int) -> tuple[int, str]:
    os.kill(proc.pid, signum)
    try:
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    out = proc.stdout.read().decode() if proc.stdout else ""
    proc.stdout.close()  # type: ignore[union-attr]
    return code, out


def echo(port: int, data: bytes) -> bytes:
    with socket.create_connection((LOCAL, port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_broker_subprocess_serves_and_stops_cleanly_on_signal(tmp_path, signum):
    port = free_port()
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    marker = tmp_path / "closed.txt"
    write_source(handlers / f"echo.tcp.{port}.port.py", f"""
        async def handle(conn, ctx):
            async for chunk in conn:
                conn.write(chunk)

        def close(ctx):
            with open({str(marker)!r}, "w") as f:
                f.write(ctx.signal.reason)
    """)
    manifest = tmp_path / "broker.toml"
    manifest.write_text('[echo]\nallow = ["127.0.0.0/8"]\n')
    proc = start(["broker", str(handlers), "--manifest", str(manifest), "--host", LOCAL], tmp_path)
    try:
        wait_for_port(proc, port)
        assert echo(port, b"through the cli") == b"through the cli"
    finally:
        code, out = stop(proc, signum)
    assert code == 0, out
    assert marker.read_text() == "stop"
    assert f"echo tcp/{port}" in out
    with pytest.raises(OSError):
        socket.create_connection((LOCAL, port), timeout=1).close()


def test_broker_options_may_come_before_the_subcommand(tmp_path):
    port = free_port()
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    write_source(handlers / f"echo.tcp.{port}.port.py", """
        async def handle(conn, ctx):
            async for chunk in conn:
                conn.write(chunk)
    """)
    manifest = tmp_path / "broker.toml"
    manifest.write_text('[echo]\nallow = ["127.0.0.0/8"]\n')
    proc = start(["--host", LOCAL, "--manifest", str(manifest), "--log-level", "debug",
                  "broker", str(handlers)], tmp_path)
    try:
        wait_for_port(proc, port)
        assert echo(port, b"options first") == b"options first"
    finally:
        code, out = stop(proc, signal.SIGTERM)
    assert code == 0, out


def test_broker_with_one_busy_port_serves_the_others(tmp_path):
    free = free_port()
    with socket.socket() as taken:
        taken.bind((LOCAL, 0))
        taken.listen()
        busy = taken.getsockname()[1]
        for port in (free, busy):
            write_source(tmp_path / f"echo{port}.tcp.{port}.port.py", """
                async def handle(conn, ctx):
                    async for chunk in conn:
                        conn.write(chunk)
            """)
        proc = start(["broker", str(tmp_path), "--host", LOCAL], tmp_path)
        try:
            wait_for_port(proc, free)
            assert echo(free, b"still here") == b"still here"
        finally:
            code, out = stop(proc, signal.SIGTERM)
    assert code == 0, out
    assert f"cannot open tcp port {busy}" in out  # the broker's own report, kept


def test_broker_whose_every_port_is_busy_prints_one_line_and_exits_1(tmp_path):
    with socket.socket() as taken:
        taken.bind((LOCAL, 0))
        taken.listen()
        busy = taken.getsockname()[1]
        (tmp_path / f"echo.tcp.{busy}.port.py").write_text("def handle(conn, ctx):\n    pass\n")
        proc = subprocess.run(
            [sys.executable, "-m", "packetron", "broker", str(tmp_path), "--host", LOCAL],
            capture_output=True, text=True, timeout=30,
        )
    assert proc.returncode == 1
    assert proc.stderr == f"cannot listen on 127.0.0.1:{busy}: address already in use\n"


def test_broker_whose_udp_port_another_broker_holds_exits_1(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        # What a running broker holds: before UDP binds stopped setting SO_REUSEADDR,
        # a second broker bound the same port too and ran, taking part of its datagrams.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((LOCAL, 0))
        busy = taken.getsockname()[1]
        (tmp_path / f"stats.udp.{busy}.port.py").write_text("def message(m, r, ctx):\n    pass\n")
        proc = subprocess.run(
            [sys.executable, "-m", "packetron", "broker", str(tmp_path), "--host", LOCAL],
            capture_output=True, text=True, timeout=30,
        )
    assert proc.returncode == 1, proc.stderr
    assert f"127.0.0.1:{busy}" in proc.stderr and "in use" in proc.stderr


def test_broker_with_a_missing_directory_exits_with_status_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "packetron", "broker", str(tmp_path / "nope")],
        capture_output=True, timeout=30,
    )
    assert proc.returncode == 2
    assert b"broker directory not found" in proc.stderr


def test_broker_with_an_invalid_manifest_exits_with_status_2(tmp_path):
    manifest = tmp_path / "bad.toml"
    manifest.write_text("[echo]\nrate = -1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "packetron", "broker", str(tmp_path), "--manifest", str(manifest)],
        capture_output=True, timeout=30,
    )
    assert proc.returncode == 2
    assert b"rate (per second) must be a positive number" in proc.stderr


FAKE_APP = """
import json

class FakeServer:
    def run(self, **options):
        with open("run-options.json", "w") as f:
            json.dump({"options": options}, f)

server = FakeServer()
"""


@pytest.mark.parametrize(
    "extra, expected",
    [
        ([], {}),
        (["--port", "8123"], {"port": 8123}),
        (["--host", "127.0.0.1", "--port", "0", "--workers", "3"],
         {"host": "127.0.0.1", "port": 0, "workers": 3}),
    ],
)
def test_serve_imports_module_attr_from_cwd_and_passes_only_given_options(
    tmp_path, extra, expected
):
    (tmp_path / "fake_app.py").write_text(FAKE_APP)
    proc = subprocess.run(
        [sys.executable, "-m", "packetron", "serve", "fake_app:server", *extra],
        cwd=tmp_path, capture_output=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads((tmp_path / "run-options.json").read_text())
    assert result == {"options": expected}


@pytest.mark.parametrize(
    "spec, message",
    [("fake_app", b"expected MODULE:ATTR"), ("no_such_module:app", b"cannot import"),
     ("fake_app:nothing", b"has no attribute"), ("fake_app:json", b"has no run()")],
)
def test_serve_with_a_bad_target_exits_with_status_2(tmp_path, spec, message):
    (tmp_path / "fake_app.py").write_text(FAKE_APP)
    proc = subprocess.run(
        [sys.executable, "-m", "packetron", "serve", spec],
        cwd=tmp_path, capture_output=True, timeout=30,
    )
    assert proc.returncode == 2
    assert message in proc.stderr


@pytest.mark.skipif(not SCRIPT.exists(), reason="the packetron console script is not installed")
def test_console_script_and_python_dash_m_are_the_same_command_line():
    a = subprocess.run([str(SCRIPT), "--help"], capture_output=True, timeout=30)
    b = subprocess.run(
        [sys.executable, "-m", "packetron", "--help"], capture_output=True, timeout=30
    )
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout
    assert b"broker" in a.stdout and b"serve" in a.stdout

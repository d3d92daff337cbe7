"""The one line a server prints when it starts, from a script's run() and from the CLI."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import packetron

HOST = "127.0.0.1"


def _wait_for_line(proc: subprocess.Popen[str], pattern: str) -> str:
    assert proc.stderr is not None
    for line in proc.stderr:
        if re.search(pattern, line):
            return line
    raise AssertionError(f"the server ended without printing {pattern!r}")


def test_run_from_a_script_prints_the_startup_line(tmp_path: Path) -> None:
    script = tmp_path / "hello.py"
    script.write_text(textwrap.dedent("""
        from packetron import Packetron
        server = Packetron(port=0, host="127.0.0.1", workers=1)
        server.get("hi", lambda request, response: response.send_text_plain("hi"))
        server.run()
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(packetron.__file__).parents[1])})
    try:
        line = _wait_for_line(proc, r"serving http://")
        assert re.search(rf"packetron {re.escape(packetron.__version__)}: serving "
                         r"http://127\.0\.0\.1:\d+ with 1 workers$", line.rstrip()), line
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == 0


def test_a_failing_startup_hook_stops_the_cli_with_one_line_and_status_1(tmp_path: Path) -> None:
    (tmp_path / "badapp.py").write_text(textwrap.dedent("""
        from packetron import Packetron
        server = Packetron(port=0, host="127.0.0.1", workers=2)
        @server.on_startup
        def open_database(app):
            raise RuntimeError("database unreachable")
    """))
    env = {**os.environ, "PYTHONPATH": str(Path(packetron.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-m", "packetron", "serve", "badapp:server"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == ("packetron serve: the server did not start: the workers failed to "
                         "start: RuntimeError: database unreachable")
    # The hook's traceback is logged once per worker, not again by the process plumbing.
    assert done.stderr.count("startup hook open_database failed: database unreachable") == 2
    assert "process" not in done.stderr.replace("processes.py", "")

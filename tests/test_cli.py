"""`packetron serve` and friends as real subprocesses: options, busy ports, TLS, --reload,
and the example app with several workers.

Every process a test starts is stopped by its PID in the `procs` fixture (SIGTERM, wait,
SIGKILL on timeout), whatever the test's outcome.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

import packetron

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOCAL = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0

pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    """A port that was free a moment ago (bound to 0, read, closed)."""
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return sock.getsockname()[1]


def cli(*args: str, cwd: pathlib.Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m packetron ARGS` to completion."""
    return subprocess.run([sys.executable, "-m", "packetron", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


class Proc:
    """A running `python -m packetron ...` whose output lines are collected as they come."""

    def __init__(self, args: list[str], cwd: pathlib.Path, env: dict[str, str] | None) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "packetron", *args], cwd=cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, needle: str, *, after: int = 0,
                      timeout: float = STARTUP_TIMEOUT) -> int:
        """Block until a line after index `after` contains `needle`; returns its index."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(after, len(self.lines)):
                    if needle in self.lines[index]:
                        return index
                left = deadline - time.monotonic()
                if left <= 0 or self.popen.poll() is not None and not self._reader.is_alive():
                    pytest.fail(f"no line with {needle!r}; output:\n{self.output}")
                self._changed.wait(min(left, 0.2))

    def stop(self) -> int:
        """SIGTERM, wait, SIGKILL on timeout; returns the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._reader.join(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return self.popen.returncode


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    """Start `python -m packetron ...` processes; every one is stopped at the end."""
    started: list[Proc] = []

    def start(*args: str, cwd: pathlib.Path = ROOT, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(list(args), cwd, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def wait_until(check: Callable[[], bool], proc: Proc, what: str,
               timeout: float = STARTUP_TIMEOUT) -> None:
    """Poll `check` until it is true; fail early when the process died."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc.popen.poll() is not None:
            pytest.fail(f"exited with {proc.popen.returncode} waiting for {what}:\n{proc.output}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{proc.output}")
        time.sleep(0.05)


def answer(url: str, **kwargs: object) -> requests.Response | None:
    """GET `url` on a fresh connection, or None while nothing answers."""
    try:
        with requests.Session() as session:
            return session.get(url, timeout=5, **kwargs)  # type: ignore[arg-type]
    except requests.ConnectionError:
        return None


def body_of(url: str, **kwargs: object) -> str | None:
    response = answer(url, **kwargs)
    return None if response is None else response.text


APP = '''
from packetron import Packetron

server = Packetron(port={port}, host="127.0.0.1", workers=1)

@server.get("hello")
def hello(request, response):
    response.send_text_plain({text!r})
'''


def write_app(folder: pathlib.Path, text: str, port: int = 3000, name: str = "webapp") -> pathlib.Path:
    path = folder / f"{name}.py"
    path.write_text(APP.format(port=port, text=text))
    return path


# ---------------------------------------------------------------- version and options


def test_version_prints_the_package_version_and_exits_0() -> None:
    for args in (["--version"], ["serve", "--version"], ["broker", "--version"]):
        result = cli(*args)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"packetron {packetron.__version__}\n"
        assert result.stderr == ""


RECORDING_APP = '''
import json, logging
from packetron.options import ServerOptions

class RecordingServer:
    """Writes what the command line gave it instead of serving."""

    def __init__(self):
        self.config = ServerOptions()

    def run(self, **overrides):
        with open("run.json", "w") as f:
            json.dump({"overrides": overrides, "access_log": self.config.access_log,
                       "tls": self.config.tls,
                       "level": logging.getLogger().getEffectiveLevel()}, f)

server = RecordingServer()
'''


@pytest.mark.parametrize("argv", [
    ["--log-level", "debug", "--access-log", "--port", "8123", "--workers", "3",
     "--host", "127.0.0.1", "serve", "rec:server"],
    ["serve", "rec:server", "--log-level", "debug", "--access-log", "--port", "8123",
     "--workers", "3", "--host", "127.0.0.1"],
    ["--log-level", "debug", "--port", "8123", "serve", "--access-log", "rec:server",
     "--workers", "3", "--host", "127.0.0.1"],
])
def test_options_are_accepted_before_and_after_the_subcommand(
        tmp_path: pathlib.Path, argv: list[str]) -> None:
    (tmp_path / "rec.py").write_text(RECORDING_APP)
    result = cli(*argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    recorded = json.loads((tmp_path / "run.json").read_text())
    assert recorded == {"overrides": {"host": "127.0.0.1", "port": 8123, "workers": 3},
                        "access_log": True, "tls": None, "level": 10}


def test_defaults_leave_the_app_alone(tmp_path: pathlib.Path) -> None:
    (tmp_path / "rec.py").write_text(RECORDING_APP)
    result = cli("serve", "rec:server", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    recorded = json.loads((tmp_path / "run.json").read_text())
    assert recorded == {"overrides": {}, "access_log": False, "tls": None, "level": 20}


@pytest.mark.parametrize("argv, message", [
    (["--manifest", "m.toml", "serve", "rec:server"], "--manifest is not an option of serve"),
    (["broker", ".", "--port", "1"], "unrecognized arguments: --port 1"),
    (["serve", "rec:server", "--reload-dir", "."], "--reload-dir needs --reload"),
    (["serve", "rec:server", "--ssl-keyfile", "k.pem"], "--ssl-keyfile needs --ssl-certfile"),
    (["serve", "rec:server", "--ssl-certfile", "missing.pem"], "missing.pem"),
    (["serve", "rec:server", "--workers", "0"], "must be at least 1"),
])
def test_bad_usage_is_one_line_and_status_2(tmp_path: pathlib.Path, argv: list[str],
                                            message: str) -> None:
    (tmp_path / "rec.py").write_text(RECORDING_APP)
    result = cli(*argv, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run.json").exists()


# ---------------------------------------------------------------- busy ports


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other socket is listening on."""
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_busy_port_prints_one_line_and_exits_1(
        tmp_path: pathlib.Path, busy_port: int, workers: str) -> None:
    write_app(tmp_path, "unused")
    result = cli("serve", "webapp:server", "--port", str(busy_port), "--workers", workers,
                 cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"cannot listen on 127.0.0.1:{busy_port}: address already in use\n"


def test_serve_reports_the_apps_own_busy_port(tmp_path: pathlib.Path, busy_port: int) -> None:
    write_app(tmp_path, "unused", port=busy_port)
    result = cli("serve", "webapp:server", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"cannot listen on 127.0.0.1:{busy_port}: address already in use\n"


# ---------------------------------------------------------------- a real server


def test_serve_access_log_writes_a_line_per_answer(tmp_path: pathlib.Path, procs) -> None:
    port = free_port()
    write_app(tmp_path, "hi")
    proc = procs("serve", "webapp:server", "--port", str(port), "--access-log", cwd=tmp_path)
    url = f"http://{LOCAL}:{port}/hello"
    wait_until(lambda: body_of(url) == "hi", proc, "the first answer")
    proc.wait_for_line('"GET /hello HTTP/1.1" 200')
    assert proc.stop() == 0


def test_serve_announces_what_is_served_where(tmp_path: pathlib.Path, procs) -> None:
    port = free_port()
    write_app(tmp_path, "hi")
    proc = procs("serve", "webapp:server", "--port", str(port), "--workers", "2", cwd=tmp_path)
    proc.wait_for_line(f"packetron {packetron.__version__}: serving http://127.0.0.1:{port} "
                       f"with 2 workers")
    assert body_of(f"http://{LOCAL}:{port}/hello") == "hi"
    assert proc.stop() == 0


def test_serve_with_ssl_files_serves_https(tmp_path: pathlib.Path, procs) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port = free_port()
    write_app(tmp_path, "secret")
    proc = procs("serve", "webapp:server", "--port", str(port), "--ssl-certfile", "cert.pem",
                 "--ssl-keyfile", "key.pem", cwd=tmp_path)
    url = f"https://{LOCAL}:{port}/hello"

    def served() -> bool:
        try:
            return body_of(url, verify=str(tmp_path / "ca.pem")) == "secret"
        except requests.exceptions.SSLError:
            return False

    wait_until(served, proc, "an HTTPS answer")
    with pytest.raises(requests.ConnectionError):  # plain HTTP is not spoken there
        requests.get(f"http://{LOCAL}:{port}/hello", timeout=5)


# ---------------------------------------------------------------- --reload


def test_reload_restarts_on_change_and_keeps_serving_through_a_syntax_error(
        tmp_path: pathlib.Path, procs) -> None:
    port = free_port()
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    path = write_app(app_dir, "one")
    proc = procs("serve", "webapp:server", "--port", str(port), "--reload", cwd=app_dir)
    url = f"http://{LOCAL}:{port}/hello"
    wait_until(lambda: body_of(url) == "one", proc, "the first version")

    write_app(app_dir, "two")
    wait_until(lambda: body_of(url) == "two", proc, "the edited version")

    mark = len(proc.lines)
    path.write_text(path.read_text().replace("def hello(request, response):",
                                             "def hello(request, response)"))
    proc.wait_for_line("syntax error, still serving the previous version", after=mark)
    assert body_of(url) == "two"

    write_app(app_dir, "three")
    wait_until(lambda: body_of(url) == "three", proc, "the fixed version")
    assert proc.stop() == 0
    # The watcher took its child down with it: nothing listens any more.
    with pytest.raises(OSError):
        socket.create_connection((LOCAL, port), timeout=1).close()


def test_reload_dir_chooses_what_is_watched(tmp_path: pathlib.Path, procs) -> None:
    port = free_port()
    app_dir, lib_dir = tmp_path / "app", tmp_path / "lib"
    app_dir.mkdir()
    lib_dir.mkdir()
    (lib_dir / "greeting.py").write_text("TEXT = 'hello'\n")
    (app_dir / "webapp.py").write_text(textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(lib_dir)!r})
        import greeting
        from packetron import Packetron

        server = Packetron(port={port}, host="127.0.0.1", workers=1)

        @server.get("hello")
        def hello(request, response):
            response.send_text_plain(greeting.TEXT)
    '''))
    proc = procs("serve", "webapp:server", "--reload", "--reload-dir", str(lib_dir),
                 cwd=app_dir)
    url = f"http://{LOCAL}:{port}/hello"
    wait_until(lambda: body_of(url) == "hello", proc, "the first version")
    (lib_dir / "greeting.py").write_text("TEXT = 'bonjour'\n")
    wait_until(lambda: body_of(url) == "bonjour", proc, "the edited library")


def test_sigint_stops_the_watcher_and_its_child(tmp_path: pathlib.Path, procs) -> None:
    port = free_port()
    write_app(tmp_path, "up")
    proc = procs("serve", "webapp:server", "--port", str(port), "--reload", cwd=tmp_path)
    url = f"http://{LOCAL}:{port}/hello"
    wait_until(lambda: body_of(url) == "up", proc, "the server")
    proc.popen.send_signal(signal.SIGINT)
    assert proc.popen.wait(STOP_TIMEOUT) == 0
    with pytest.raises(OSError):
        socket.create_connection((LOCAL, port), timeout=1).close()


# ---------------------------------------------------------------- the example app


def test_example_app_uploads_are_served_by_every_worker(tmp_path: pathlib.Path, procs) -> None:
    port = free_port()
    env = {**os.environ, "PACKETRON_EXAMPLE_STORAGE": str(tmp_path / "storage")}
    proc = procs("serve", "examples.app:server", "--port", str(port), "--workers", "2",
                 "--log-level", "warning", env=env)
    base = f"http://{LOCAL}:{port}"
    wait_until(lambda: body_of(base + "/api/status") is not None, proc, "the example app")

    content = os.urandom(50_000)
    stored = requests.post(base + "/upload", files={"file": ("report.bin", content)},
                           data={"note": "two workers"}, timeout=10)
    assert stored.status_code == 201, stored.text
    entry = stored.json()["stored"][0]
    assert entry["filename"] == "report.bin" and entry["note"] == "two workers"

    # Fresh connections land on either worker; every one must know the file.
    for _ in range(30):
        got = answer(base + entry["url"])
        assert got is not None and got.status_code == 200 and got.content == content
        listing = answer(base + "/files")
        assert listing is not None
        assert [e["stored_as"] for e in listing.json()] == [entry["stored_as"]]
    missing = answer(base + "/uploads", params={"name": "../../etc/passwd"})
    assert missing is not None and missing.status_code == 404

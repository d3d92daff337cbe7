"""README.md's Python examples: every ```python block compiles, and the ones marked
runnable run.

A block is run when the line just before its fence is `<!-- runnable -->`, or
`<!-- runnable: needs cert.pem key.pem -->` when it reads TLS files (the test creates them).
Each runs in a subprocess, in a fresh folder that sees the repository's examples/ and
README.md. Servers the examples build take an ephemeral loopback port there, and
`server.run()` starts the server, asks each of its routes once (a 5xx answer fails the
block), and stops it: the examples stay as a reader would write them, and no test waits
for Ctrl-C.
"""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RUN_TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(120)

_FENCE = re.compile(r"^```python\s*$")
_MARKER = re.compile(r"^<!--\s*runnable(?::\s*needs\s+(?P<needs>[^>]*?))?\s*-->\s*$")

# Prepended to a runnable block: fixed ports become ephemeral, run() becomes a smoke test.
HARNESS = '''
import http.client as _http
import packetron as _packetron

_init = _packetron.Packetron.__init__


def _ephemeral_init(self, port=0, host="127.0.0.1", *args, **kwargs):
    _init(self, 0, host, *args, **kwargs)


def _ask_every_route(server):
    """One request per route (a small JSON body where a body fits); a 5xx is a failure."""
    for route in server.routes:
        body = b'{"n": 1}' if route.method_name in ("POST", "PUT", "PATCH") else None
        connection = _http.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            connection.request(route.method_name, "/" + route.key, body=body,
                               headers={"Content-Type": "application/json"} if body else {})
            status = connection.getresponse().status
        finally:
            connection.close()
        if status >= 500:
            raise SystemExit(f"{route.method_name} /{route.key} answered {status}")


def _smoke_run(self, host=None, port=None, workers=None):
    if workers is not None:
        self.workers = workers
    self.start()
    try:
        _ask_every_route(self)
    finally:
        self.stop(timeout=2)


_packetron.Packetron.__init__ = _ephemeral_init
_packetron.Packetron.run = _smoke_run
'''


@dataclass(frozen=True)
class Block:
    """One ```python block of the README."""

    line: int  # of the opening fence, 1-based
    source: str
    runnable: bool
    needs: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


def python_blocks(text: str) -> list[Block]:
    """Every ```python block, with the runnable marker of the line before it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        if not _FENCE.match(lines[index]):
            index += 1
            continue
        marker = _MARKER.match(lines[index - 1]) if index > 0 else None
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"README.md:{index + 1}: unterminated ```python block")
        needs = tuple((marker.group("needs") or "").split()) if marker else ()
        blocks.append(Block(index + 1, "\n".join(lines[index + 1:end]) + "\n",
                            marker is not None, needs))
        index = end + 1
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))
RUNNABLE = [block for block in BLOCKS if block.runnable]


def test_the_readme_has_python_examples_and_runs_some() -> None:
    assert len(BLOCKS) >= 10
    assert len(RUNNABLE) >= len(BLOCKS) // 2


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_block_compiles(block: Block) -> None:
    compile(block.source, block.id, "exec", dont_inherit=True)


def _write_tls_files(folder: pathlib.Path, names: tuple[str, ...]) -> None:
    trustme = pytest.importorskip("trustme")
    cert = trustme.CA().issue_cert("127.0.0.1", "localhost")
    for name in names:
        if "key" in name:
            cert.private_key_pem.write_to_path(str(folder / name))
        else:
            cert.cert_chain_pems[0].write_to_path(str(folder / name))


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.id for block in RUNNABLE])
def test_runnable_block_runs(block: Block, tmp_path: pathlib.Path) -> None:
    # Relative paths in the examples (examples/site, README.md) resolve as in a checkout.
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    (tmp_path / "README.md").symlink_to(README)
    _write_tls_files(tmp_path, block.needs)
    (tmp_path / "readme_harness.py").write_text(HARNESS)
    script = tmp_path / "example.py"
    # Padded so that tracebacks give the block's own README line numbers.
    script.write_text("import readme_harness  # noqa: F401\n" + "\n" * (block.line - 1)
                      + block.source)
    try:
        result = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                                capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.id} still running after {RUN_TIMEOUT} s:\n{exc.stderr}")
    assert result.returncode == 0, f"{block.id} failed:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr

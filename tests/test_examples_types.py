"""Every example type-checks under `mypy --strict`: they are what people copy from.

Only errors in examples/ count: packetron itself is imported with --follow-imports=silent
(its types are used, its own findings are tests/test_types.py's business).

The broker's handler folder is checked on its own: its entry files import their support
package (`from chatroom import ...`) with the folder as import root, and their dotted
names (chat.tcp.7010.port) must not share a module namespace with examples/chat.py.
"""
from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
HANDLERS = "examples/handlers"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None,
    reason="mypy is not installed (it comes with the test extra: pip install -e .[test])",
)


@pytest.mark.parametrize("targets", [
    pytest.param(["examples", "--exclude", f"^{HANDLERS}/"], id="examples"),
    pytest.param([HANDLERS], id="handlers"),
])
def test_examples_pass_mypy_strict(targets: list[str], tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--cache-dir", str(tmp_path / "cache"), *targets],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert result.stdout.startswith("Success: no issues found"), output

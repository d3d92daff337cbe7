"""The net layer's wire formats and decisions stay sans-I/O: no socket, loop or clock inside."""
from __future__ import annotations

import ast
import pathlib

import pytest

import packetron.net

NET = pathlib.Path(packetron.net.__file__).parent

SANS_IO_MODULES = [
    "framing.py",
    "screening.py",
    "manifest.py",
    "packetstream/codec.py",
    "packetstream/machine.py",
    "packetstream/errorobjects.py",
]
IO_MODULES = {"asyncio", "socket", "ssl", "time", "selectors"}


def module_level_imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("relative", SANS_IO_MODULES)
def test_sans_io_module_imports_no_io_at_module_level(relative: str) -> None:
    path = NET / relative
    assert path.exists(), f"{relative} moved: update this list"
    assert module_level_imports(path) & IO_MODULES == set()

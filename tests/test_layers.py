"""The package's shape: public exports match __all__, and imports only point downwards."""
from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

import packetron

ROOT = pathlib.Path(packetron.__file__).parent

CONTRACT_NAMES = ["Packetron", "ServerFlags", "HandlerFlags", "FileRouterFlags", "RequestMethod",
                  "Plugin", "PluginPriority", "HttpResponseCode", "Request", "Response", "Route"]

# Layer of each top-level part; a module may import only its own layer or lower ones.
LAYERS = {"flags": 0, "status": 0, "errors": 0, "log": 0, "options": 0, "globaldata": 0,
          "net": 1, "http": 2, "workers": 3, "supervisor": 3, "testing": 3, "cli": 4,
          "__main__": 5, "__init__": 5}

# Modules that must stay sans-I/O.
PURE_MODULES = ["http/router.py", "http/wire.py", "http/bodies.py", "http/cookies.py",
                "http/limits.py", "net/framing.py", "net/psc.py", "net/psmachine.py",
                "net/screening.py", "net/manifest.py", "http/mime.py"]
IO_MODULES = {"asyncio", "socket", "ssl", "time", "selectors"}


def layer_of(path: pathlib.Path) -> int:
    part = path.relative_to(ROOT).parts[0].removesuffix(".py")
    return LAYERS[part]


def module_level_imports(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in tree.body:  # module level only: lazy imports inside functions are seams
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_contract_names_are_exported() -> None:
    for name in CONTRACT_NAMES:
        assert name in packetron.__all__
        assert getattr(packetron, name) is not None


@pytest.mark.parametrize("module", ["packetron", "packetron.http", "packetron.net"])
def test_all_matches_attributes(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert missing == []


def test_lower_layers_never_import_higher_ones() -> None:
    offenders = []
    for path in ROOT.rglob("*.py"):
        own = layer_of(path)
        for name in module_level_imports(path):
            if not name.startswith("packetron."):
                continue
            target = name.split(".")[1]
            if target in LAYERS and LAYERS[target] > own:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


@pytest.mark.parametrize("relative", PURE_MODULES)
def test_sans_io_modules_import_no_io(relative: str) -> None:
    path = ROOT / relative
    if not path.exists():
        pytest.skip(f"{relative} not present")
    imported = {name.split(".")[0] for name in module_level_imports(path)}
    assert imported & IO_MODULES == set()

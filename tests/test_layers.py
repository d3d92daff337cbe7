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

# Layer of each top-level part, in DESIGN.md's order; a module may import only its own
# layer or lower ones, at module level and inside functions alike.
LAYERS = {"flags": 0, "status": 0, "errors": 0, "log": 0, "options": 0, "version": 0,
          "net": 1, "globaldata": 2, "http": 3, "plugins": 4, "server": 5, "testing": 6,
          "cli": 7, "__main__": 8, "__init__": 8}

# Modules that must stay sans-I/O.
PURE_MODULES = ["http/router.py", "http/wire.py", "http/bodies.py", "http/cookies.py",
                "http/limits.py", "net/framing.py", "net/packetstream/codec.py",
                "net/packetstream/machine.py", "net/packetstream/errorobjects.py",
                "http/patterns.py", "http/errorpages.py", "http/requestline.py",
                "http/accesslog.py",
                "net/screening.py", "net/manifest.py", "http/mime.py",
                "http/static/conditional.py", "http/multipart/limits.py",
                "http/websocket/handshake.py", "http/websocket/extensions.py",
                "http/websocket/frames.py",
                "http/channels/codec.py"]
IO_MODULES = {"asyncio", "socket", "ssl", "time", "selectors"}


def layer_of(path: pathlib.Path) -> int:
    part = path.relative_to(ROOT).parts[0].removesuffix(".py")
    return LAYERS[part]


def _imported_names(nodes: list[ast.stmt] | list[ast.AST]) -> list[str]:
    names = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            # `from packetron import server` names a layer through the alias
            if node.module == "packetron":
                names.extend(f"packetron.{alias.name}" for alias in node.names)
    return names


def module_level_imports(path: pathlib.Path) -> list[str]:
    return _imported_names(ast.parse(path.read_text()).body)


def all_imports(path: pathlib.Path) -> list[str]:
    """Every import of the module: module level, inside functions, under TYPE_CHECKING."""
    return _imported_names(list(ast.walk(ast.parse(path.read_text()))))


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
        for name in all_imports(path):
            if not name.startswith("packetron."):
                continue
            target = name.split(".")[1]
            if target in LAYERS and LAYERS[target] > own:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_the_layer_check_sees_imports_inside_functions(tmp_path: pathlib.Path) -> None:
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from packetron.server import Packetron\n"
                      "    import packetron.cli\n")
    assert all_imports(module) == ["packetron.server", "packetron.cli"]


def test_every_top_level_part_has_a_layer() -> None:
    parts = {path.relative_to(ROOT).parts[0].removesuffix(".py") for path in ROOT.rglob("*.py")}
    assert parts - set(LAYERS) == set()


DESIGN_NAMES = {
    "packetron": ["Packetron", "ServerFlags", "HandlerFlags", "FileRouterFlags",
                  "RequestMethod", "Plugin", "PluginPriority", "HttpResponseCode", "HttpError",
                  "Request", "Response", "Route", "WebSocket", "PacketronError",
                  "GlobalDataDisabled", "WebSocketClosed"],
    "packetron.plugins": ["cors", "security_headers", "csrf", "request_id", "sessions",
                          "compress"],
    "packetron.testing": ["TestClient", "AsyncTestClient"],
    "packetron.errors": ["PacketronError", "HttpError", "FrameTooLarge", "BufferFull",
                         "RpcTimeout", "ConnectionClosed", "GlobalDataDisabled", "ConfigError",
                         "WebSocketClosed"],
    "packetron.net": ["Broker", "TcpServer", "TcpClient", "Connection",
                      "LengthPrefixedFramer", "LineFramer", "FramingSocket", "PacketStream"],
}


@pytest.mark.parametrize("module", sorted(DESIGN_NAMES))
def test_design_names_are_exported(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [name for name in DESIGN_NAMES[module]
               if not hasattr(mod, name) or (hasattr(mod, "__all__") and name not in mod.__all__)]
    assert missing == []


@pytest.mark.parametrize("relative", PURE_MODULES)
def test_sans_io_modules_import_no_io(relative: str) -> None:
    path = ROOT / relative
    if not path.exists():
        pytest.skip(f"{relative} not present")
    imported = {name.split(".")[0] for name in module_level_imports(path)}
    assert imported & IO_MODULES == set()

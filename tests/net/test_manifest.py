"""The broker manifest: TOML parsing, defaults, validation messages (pure)."""
from __future__ import annotations

import ast
import pathlib

import pytest

from packetron.errors import ConfigError
from packetron.net import manifest as manifest_module
from packetron.net.manifest import (
    HandlerPolicy,
    load_manifest,
    manifest_from_mapping,
    parse_manifest,
)

FULL = """
["*"]
idle_timeout = 300
deny = ["10.6.6.0/24"]

[echo]
allow = ["127.0.0.0/8", "::1"]
max_connections = 100
max_connections_per_ip = 5
rate = 20.5
idle_timeout = 1.5
tls = { cert = "certs/echo.pem", key = "/abs/echo.key" }

[stats]
rate = 3
"""


def test_manifest_module_is_pure():
    tree = ast.parse(pathlib.Path(manifest_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "ssl", "time"}


def test_full_manifest_parses_with_defaults_and_overrides():
    m = parse_manifest(FULL, base_dir="/etc/broker")
    assert m.policy_for("echo") == HandlerPolicy(
        allow=("127.0.0.0/8", "::1"),
        deny=("10.6.6.0/24",),
        max_connections=100,
        max_connections_per_ip=5,
        rate=20.5,
        tls_cert="/etc/broker/certs/echo.pem",
        tls_key="/abs/echo.key",
        idle_timeout=1.5,
    )
    stats = m.policy_for("stats")
    assert (stats.rate, stats.idle_timeout, stats.deny, stats.tls) == (
        3.0, 300.0, ("10.6.6.0/24",), False)
    assert isinstance(stats.idle_timeout, float)
    # A handler without a table gets the "*" defaults.
    assert m.policy_for("unknown") == HandlerPolicy(deny=("10.6.6.0/24",), idle_timeout=300.0)
    assert sorted(m.names()) == ["echo", "stats"]


def test_empty_manifest_means_no_limits():
    assert parse_manifest("").policy_for("x") == HandlerPolicy()


@pytest.mark.parametrize(
    "text, message",
    [
        ("[echo\n", "invalid TOML"),
        ("echo = 5\n", "must be a table"),
        ("[echo]\nmax_conections = 5\n", "unknown key(s) max_conections"),
        ("[echo]\nallow = \"10.0.0.0/8\"\n", "allow: must be a list"),
        ("[echo]\ndeny = [\"10.0.0.1/8\"]\n", "[echo] deny"),
        ("[echo]\nmax_connections = 0\n", "max_connections must be a positive integer"),
        ("[echo]\nmax_connections_per_ip = true\n", "max_connections_per_ip"),
        ("[echo]\nrate = -1\n", "rate (per second) must be a positive number"),
        ("[echo]\nidle_timeout = \"30s\"\n", "idle_timeout (seconds)"),
        ("[echo]\ntls = \"cert.pem\"\n", "tls must be a table"),
        ("[echo]\ntls = { key = \"k.pem\" }\n", "tls.cert"),
        ("[echo]\ntls = { cert = \"c.pem\", ca = \"x\" }\n", "unknown tls key(s) ca"),
        ("[\"*\"]\nrate = 0\n", "[*]"),
    ],
)
def test_invalid_manifests_raise_config_error_naming_file_handler_and_key(text, message):
    with pytest.raises(ConfigError) as info:
        parse_manifest(text, source="broker.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("broker.toml")


def test_load_manifest_resolves_tls_paths_against_its_directory(tmp_path):
    path = tmp_path / "conf" / "broker.toml"
    path.parent.mkdir()
    path.write_text('[web]\ntls = { cert = "web.pem" }\n')
    policy = load_manifest(path).policy_for("web")
    assert policy.tls_cert == str(tmp_path / "conf" / "web.pem")
    assert policy.tls_key is None


def test_load_manifest_of_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read manifest"):
        load_manifest(tmp_path / "missing.toml")


def test_manifest_from_a_dict_validates_the_same_way():
    m = manifest_from_mapping({"echo": {"rate": 2}})
    assert m.policy_for("echo").rate == 2.0
    with pytest.raises(ConfigError, match="rate"):
        manifest_from_mapping({"echo": {"rate": "fast"}})

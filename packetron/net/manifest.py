"""The broker manifest: per-handler screening, TLS and timeouts, from TOML.

Pure: parses text into frozen policies and validates them; no sockets, no clock.

    # Applies to every handler; a handler's own table overrides it key by key.
    ["*"]
    idle_timeout = 300.0

    [echo]                      # handlers named echo (echo.tcp.7000.port.py, ...)
    allow = ["127.0.0.0/8", "10.0.0.0/8"]
    deny = ["10.6.6.0/24"]
    max_connections = 1000
    max_connections_per_ip = 20
    rate = 50                   # new connections (or datagrams) per source per second
    idle_timeout = 30.0         # seconds
    tls = { cert = "certs/echo.pem", key = "certs/echo.key" }

Relative TLS paths are resolved against the manifest's directory.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from packetron.errors import ConfigError
from packetron.net.screening import parse_networks

__all__ = [
    "HandlerPolicy",
    "Manifest",
    "parse_manifest",
    "manifest_from_mapping",
    "load_manifest",
    "DEFAULTS_KEY",
]

# The table whose values every handler inherits.
DEFAULTS_KEY = "*"

_KEYS = (
    "allow",
    "deny",
    "max_connections",
    "max_connections_per_ip",
    "rate",
    "tls",
    "idle_timeout",
)


@dataclass(frozen=True, slots=True)
class HandlerPolicy:
    """What the Broker applies to one handler's port. Defaults: no limits, no TLS.

    Attributes:
        allow, deny: CIDR strings (validated).
        max_connections, max_connections_per_ip: caps on live TCP connections.
        rate: new connections (TCP) or datagrams (UDP) per source per second.
        tls_cert, tls_key: PEM paths (absolute once loaded from a file); TCP only.
        idle_timeout: seconds without traffic before a TCP connection is closed.
    """

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    max_connections: int | None = None
    max_connections_per_ip: int | None = None
    rate: float | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    idle_timeout: float | None = None

    @property
    def tls(self) -> bool:
        """True when TLS is configured."""
        return self.tls_cert is not None


@dataclass(frozen=True, slots=True)
class Manifest:
    """Policies by handler name; `policy_for(name)` merges in the "*" defaults."""

    policies: Mapping[str, HandlerPolicy] = field(default_factory=dict)
    defaults: HandlerPolicy = field(default_factory=HandlerPolicy)

    def policy_for(self, name: str) -> HandlerPolicy:
        """The policy for handler `name` (the defaults when it has no table)."""
        return self.policies.get(name, self.defaults)

    def names(self) -> list[str]:
        """Handler names with a table of their own."""
        return list(self.policies)


def parse_manifest(text: str, *, base_dir: str | None = None, source: str = "manifest") -> Manifest:
    """Parse and validate manifest TOML.

    Args:
        text: the TOML document.
        base_dir: directory relative TLS paths are resolved against (None: kept as is).
        source: how to name the document in error messages (its path).

    Returns:
        The Manifest.

    Raises:
        ConfigError: invalid TOML, an unknown key, or a value of the wrong type or range;
            the message names the file, the handler and the key.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    return manifest_from_mapping(doc, base_dir=base_dir, source=source)


def manifest_from_mapping(
    doc: Mapping[str, Any], *, base_dir: str | None = None, source: str = "manifest"
) -> Manifest:
    """Validate a manifest given as a dict (the shape the TOML parses to).

    Raises:
        ConfigError: as parse_manifest.
    """
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: a manifest is a table of handler tables")
    for name, table in doc.items():
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"{source}: top-level {name!r} must be a table ([{name}]) of handler options"
            )
    defaults_raw = doc.get(DEFAULTS_KEY, {})
    defaults = _policy(defaults_raw, f"{source} [{DEFAULTS_KEY}]", base_dir)
    policies: dict[str, HandlerPolicy] = {}
    for name, table in doc.items():
        if name == DEFAULTS_KEY:
            continue
        merged = {**defaults_raw, **table}
        policies[name] = _policy(merged, f"{source} [{name}]", base_dir)
    return Manifest(policies=policies, defaults=defaults)


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and parse a manifest file (see parse_manifest).

    Raises:
        ConfigError: the file cannot be read or is invalid.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read manifest {path!r}: {exc.strerror or exc}") from None
    return parse_manifest(text, base_dir=os.path.dirname(os.path.abspath(path)), source=path)


def _policy(table: Mapping[str, Any], where: str, base_dir: str | None) -> HandlerPolicy:
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_KEYS)}"
        )
    policy = HandlerPolicy()
    if "allow" in table:
        policy = replace(policy, allow=_cidrs(table["allow"], f"{where} allow"))
    if "deny" in table:
        policy = replace(policy, deny=_cidrs(table["deny"], f"{where} deny"))
    if "max_connections" in table:
        policy = replace(policy, max_connections=_count(table, "max_connections", where))
    if "max_connections_per_ip" in table:
        policy = replace(policy, max_connections_per_ip=_count(
            table, "max_connections_per_ip", where))
    if "rate" in table:
        policy = replace(policy, rate=_positive(table["rate"], f"{where}: rate (per second)"))
    if "idle_timeout" in table:
        timeout = _positive(table["idle_timeout"], f"{where}: idle_timeout (seconds)")
        policy = replace(policy, idle_timeout=timeout)
    if "tls" in table:
        cert, key = _tls(table["tls"], where, base_dir)
        policy = replace(policy, tls_cert=cert, tls_key=key)
    return policy


def _count(table: Mapping[str, Any], key: str, where: str) -> int:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def _cidrs(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list of CIDR strings, got {value!r}")
    parse_networks(value, what=where)  # raises ConfigError naming the bad entry
    return tuple(value)


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _tls(value: Any, where: str, base_dir: str | None) -> tuple[str, str | None]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: tls must be a table {{ cert = ..., key = ... }}")
    unknown = sorted(set(value) - {"cert", "key"})
    if unknown:
        raise ConfigError(f"{where}: unknown tls key(s) {', '.join(unknown)}; known: cert, key")
    cert = value.get("cert")
    key = value.get("key")
    if not isinstance(cert, str) or not cert:
        raise ConfigError(f"{where}: tls.cert must be the path of a PEM certificate")
    if key is not None and (not isinstance(key, str) or not key):
        raise ConfigError(f"{where}: tls.key must be the path of a PEM private key")

    def resolve(path: str) -> str:
        if base_dir is None or os.path.isabs(path):
            return path
        return os.path.join(base_dir, path)

    return resolve(cert), resolve(key) if key is not None else None

"""Decide whether a peer may connect: CIDR allow/deny, connection caps, per-source rate.

Pure: no sockets, no clock. Callers pass the peer's address and `now` (seconds, from any
monotonic clock) and act on the returned Verdict; the listener closes a refused peer's
transport before any protocol sees a byte.

Order of checks, and why: the address lists first (cheapest, and a denied peer must not
use up anyone's rate budget); then the rate, which counts every attempt by an allowed
source, refused or not (a flood is a flood); then the caps on live connections.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from enum import StrEnum
from typing import Protocol, Union

from packetron.errors import ConfigError

__all__ = [
    "Verdict",
    "Network",
    "Address",
    "parse_networks",
    "parse_address",
    "check_address",
    "FixedWindowRate",
    "SlidingWindowRate",
    "Screen",
    "ConnectionScreen",
    "RATE_WINDOW_SECONDS",
    "ADDRESS_MEMO_SIZE",
]

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# Rates are "per second", so every window is one second long.
RATE_WINDOW_SECONDS = 1.0
# Address verdicts are remembered per peer string (parsing and matching cost more than
# the rest of the accept path); the memo is dropped whole when it reaches this size, so a
# scan from many addresses cannot grow it without bound.
ADDRESS_MEMO_SIZE = 4096

# IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, RFC 4291 §2.5.5.2): what a dual-stack "::"
# listener reports for IPv4 peers.
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


class Verdict(StrEnum):
    """The answer of a screen: ACCEPTED, or why the peer was refused."""

    ACCEPTED = "accepted"
    DENIED = "denied"  # the address matches the deny list
    NOT_ALLOWED = "not-allowed"  # an allow list is set and the address is not on it
    INVALID_ADDRESS = "invalid-address"  # the peer address is not an IP address
    RATE_LIMITED = "rate-limited"  # too many new connections/datagrams from this source
    MAX_CONNECTIONS = "max-connections"  # the listener is full
    MAX_CONNECTIONS_PER_IP = "max-connections-per-ip"  # this source holds too many

    @property
    def accepted(self) -> bool:
        """True for ACCEPTED only."""
        return self is Verdict.ACCEPTED


# Compared by identity on the accept path (a module global is found faster than the
# enum's class attribute).
_ACCEPTED = Verdict.ACCEPTED


def parse_address(host: str) -> Address | None:
    """The peer's address, IPv4-mapped IPv6 turned into plain IPv4.

    Args:
        host: as reported by getpeername() ("10.0.0.1", "::1", "fe80::1%eth0").

    Returns:
        The address, or None when `host` is not an IP address (a Unix socket path).
    """
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if addr.version == 6:
        mapped = addr.ipv4_mapped  # type: ignore[union-attr]
        if mapped is not None:
            return mapped
    return addr


def parse_networks(specs: Iterable[str], *, what: str = "network") -> tuple[Network, ...]:
    """Parse CIDR strings ("10.0.0.0/8", "::1", "192.168.1.7").

    A bare address means a single host. IPv4-mapped IPv6 networks become IPv4 networks,
    so they match the addresses parse_address() returns.

    Args:
        specs: the CIDR strings.
        what: how to name the list in error messages ("allow", "deny").

    Returns:
        The networks, in order.

    Raises:
        ConfigError: a string is not a network (host bits set count as an error: a
            typo such as 10.0.0.1/8 should not silently widen to 10.0.0.0/8).
    """
    if isinstance(specs, (str, bytes)):
        raise ConfigError(f"{what} must be a list of CIDR strings, not a single string")
    out: list[Network] = []
    for spec in specs:
        if not isinstance(spec, str):
            raise ConfigError(f"{what}: {spec!r} is not a CIDR string")
        try:
            net = ipaddress.ip_network(spec.strip(), strict=True)
        except ValueError as exc:
            raise ConfigError(f"{what}: {spec!r} is not a valid CIDR network ({exc})") from None
        if net.version == 6 and net.subnet_of(_V4_MAPPED):  # type: ignore[arg-type]
            net = ipaddress.IPv4Network(
                (int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96)
            )
        out.append(net)
    return tuple(out)


def check_address(
    addr: Address | None, allow: tuple[Network, ...], deny: tuple[Network, ...]
) -> Verdict:
    """Apply the address lists: deny wins over allow; an empty allow list allows all.

    Returns:
        ACCEPTED, DENIED, NOT_ALLOWED, or INVALID_ADDRESS when lists are set and
        the address is unknown.
    """
    if not allow and not deny:
        return Verdict.ACCEPTED
    if addr is None:
        return Verdict.INVALID_ADDRESS
    # `in` between different IP versions is simply False.
    for net in deny:
        if addr in net:
            return Verdict.DENIED
    if allow:
        for net in allow:
            if addr in net:
                return Verdict.ACCEPTED
        return Verdict.NOT_ALLOWED
    return Verdict.ACCEPTED


def _check_rate(limit: float) -> float:
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0:
        raise ConfigError(f"rate must be a positive number per second, got {limit!r}")
    return float(limit)


class FixedWindowRate:
    """At most `limit` hits per key in each one-second window [k, k+1).

    Memory: one counter per key seen in the current window; older windows are dropped
    whole when time moves on.

    Raises:
        ConfigError: limit is not a positive number.
    """

    __slots__ = ("limit", "_window", "_counts")

    def __init__(self, limit: float) -> None:
        self.limit = _check_rate(limit)
        self._window = float("-inf")
        self._counts: dict[object, int] = {}

    def hit(self, key: object, now: float) -> bool:
        """Count one hit for key at `now`; True if it is within the limit."""
        window = now // RATE_WINDOW_SECONDS
        if window != self._window:
            self._window = window
            self._counts = {}
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return count <= self.limit


class SlidingWindowRate:
    """About `limit` hits per key in any one-second span.

    The sliding-window counter: the previous window's count weighted by how much of it
    still overlaps the last second, plus the current count. Two counters per key, no
    timestamps kept, so memory does not grow with the rate. Refused hits are not
    counted, so a source that keeps trying gets back in as the window slides.

    Raises:
        ConfigError: limit is not a positive number.
    """

    __slots__ = ("limit", "_window", "_current", "_previous")

    def __init__(self, limit: float) -> None:
        self.limit = _check_rate(limit)
        self._window = float("-inf")
        self._current: dict[object, int] = {}
        self._previous: dict[object, int] = {}

    def hit(self, key: object, now: float) -> bool:
        """Count one hit for key at `now`; True if it is within the limit."""
        window = now // RATE_WINDOW_SECONDS
        if window != self._window:
            self._previous = self._current if window == self._window + 1 else {}
            self._current = {}
            self._window = window
        elapsed = (now - window * RATE_WINDOW_SECONDS) / RATE_WINDOW_SECONDS
        current = self._current.get(key, 0)
        estimate = self._previous.get(key, 0) * (1.0 - elapsed) + current
        if estimate + 1 > self.limit:
            return False
        self._current[key] = current + 1
        return True


class ConnectionScreen(Protocol):
    """What the listener needs from a screen (Screen implements it)."""

    def admit(self, host: str, now: float) -> Verdict: ...

    def release(self, host: str) -> None: ...


class Screen:
    """All checks for one listener, with the live-connection counts they need.

    Args:
        allow: CIDR strings; when not empty, only these sources may connect.
        deny: CIDR strings refused (deny wins over allow).
        max_connections: live connections at most (None: no cap).
        max_connections_per_ip: live connections per source address at most.
        rate: new connections (or datagrams) per source per second at most.
        rate_window: "fixed" (one-second windows, as for HTTP endpoints) or "sliding".

    Raises:
        ConfigError: a bad network, cap or rate.

    `admit(host, now)` answers and, when it accepts, counts the connection; the caller
    must `release(host)` exactly once when that connection ends. `check_datagram`
    applies the lists and the rate only (datagrams hold no connection).
    """

    __slots__ = (
        "allow",
        "deny",
        "max_connections",
        "max_connections_per_ip",
        "_rate",
        "_live",
        "_per_ip",
        "_memo",
    )

    def __init__(
        self,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        max_connections: int | None = None,
        max_connections_per_ip: int | None = None,
        rate: float | None = None,
        rate_window: str = "sliding",
    ) -> None:
        self.allow = parse_networks(allow, what="allow")
        self.deny = parse_networks(deny, what="deny")
        self.max_connections = _check_cap(max_connections, "max_connections")
        self.max_connections_per_ip = _check_cap(max_connections_per_ip, "max_connections_per_ip")
        self._rate: FixedWindowRate | SlidingWindowRate | None
        if rate is None:
            self._rate = None
        elif rate_window == "fixed":
            self._rate = FixedWindowRate(rate)
        elif rate_window == "sliding":
            self._rate = SlidingWindowRate(rate)
        else:
            raise ConfigError(f"rate_window must be 'fixed' or 'sliding', got {rate_window!r}")
        self._live = 0
        self._per_ip: dict[str, int] = {}
        self._memo: dict[str, tuple[Verdict, str]] = {}

    @property
    def is_noop(self) -> bool:
        """True when nothing is configured: callers may skip screening entirely."""
        return (
            not self.allow
            and not self.deny
            and self.max_connections is None
            and self.max_connections_per_ip is None
            and self._rate is None
        )

    def reconfigure(self, other: "Screen") -> None:
        """Take other's lists, caps and rate, keeping this screen's live counts.

        For a listener whose policy changes while its connections stay: they were admitted
        here and are released here, so caps go on counting them.
        """
        self.allow = other.allow
        self.deny = other.deny
        self.max_connections = other.max_connections
        self.max_connections_per_ip = other.max_connections_per_ip
        self._rate = other._rate
        self._memo.clear()  # verdicts of the old lists

    @property
    def live_connections(self) -> int:
        """Connections admitted and not yet released."""
        return self._live

    def connections_from(self, host: str) -> int:
        """Live connections counted for one source."""
        return self._per_ip.get(self._address(host)[1], 0)

    def _address(self, host: str) -> tuple[Verdict, str]:
        """(verdict of the address lists, counting key) for a peer, memoized."""
        hit = self._memo.get(host)
        if hit is None:
            addr = parse_address(host)
            hit = (
                check_address(addr, self.allow, self.deny),
                str(addr) if addr is not None else host,
            )
            if len(self._memo) >= ADDRESS_MEMO_SIZE:
                self._memo.clear()
            self._memo[host] = hit
        return hit

    def _screen_source(self, host: str, now: float) -> tuple[Verdict, str]:
        verdict, key = self._address(host)
        if verdict is Verdict.ACCEPTED and self._rate is not None:
            if not self._rate.hit(key, now):
                verdict = Verdict.RATE_LIMITED
        return verdict, key

    def check_datagram(self, host: str, now: float) -> Verdict:
        """Screen one datagram from host: address lists and rate."""
        return self._screen_source(host, now)[0]

    def admit(self, host: str, now: float) -> Verdict:
        """Screen a new connection from host; count it when accepted."""
        # _screen_source() written out: this runs once per accepted socket.
        hit = self._memo.get(host)
        verdict, key = hit if hit is not None else self._address(host)
        if verdict is not _ACCEPTED:
            return verdict
        if self._rate is not None and not self._rate.hit(key, now):
            return Verdict.RATE_LIMITED
        if self.max_connections is not None and self._live >= self.max_connections:
            return Verdict.MAX_CONNECTIONS
        per_ip = self._per_ip
        held = per_ip.get(key, 0)
        if self.max_connections_per_ip is not None and held >= self.max_connections_per_ip:
            return Verdict.MAX_CONNECTIONS_PER_IP
        self._live += 1
        per_ip[key] = held + 1
        return _ACCEPTED

    def release(self, host: str) -> None:
        """An admitted connection from host has ended."""
        hit = self._memo.get(host)
        key = (hit if hit is not None else self._address(host))[1]
        per_ip = self._per_ip
        held = per_ip.get(key, 0)
        if held <= 0:
            return
        self._live -= 1
        if held == 1:
            del per_ip[key]
        else:
            per_ip[key] = held - 1


def _check_cap(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be None or a positive int, got {value!r}")
    return value

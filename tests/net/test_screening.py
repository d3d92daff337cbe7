"""Screening decisions, without sockets or clocks."""
from __future__ import annotations

import ast
import ipaddress
import pathlib

import pytest

from packetron.errors import ConfigError
from packetron.net import screening
from packetron.net.screening import (
    FixedWindowRate,
    Screen,
    SlidingWindowRate,
    Verdict,
    check_address,
    parse_address,
    parse_networks,
)

V = Verdict


def test_screening_module_is_pure():
    source = pathlib.Path(screening.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "ssl", "time", "selectors"}


# ------------------------------------------------------------------ addresses


@pytest.mark.parametrize(
    "host, expected",
    [
        ("10.1.2.3", "10.1.2.3"),
        ("::ffff:10.1.2.3", "10.1.2.3"),  # IPv4-mapped, from a dual-stack listener
        ("::1", "::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("/run/app.sock", None),
        ("", None),
    ],
)
def test_parse_address(host, expected):
    addr = parse_address(host)
    assert (str(addr) if addr is not None else None) == expected


def test_parse_networks_accepts_hosts_and_cidrs_and_unmaps_ipv4_mapped():
    nets = parse_networks(["10.0.0.0/8", "192.168.1.7", "::1", "::ffff:172.16.0.0/108"])
    assert [str(n) for n in nets] == ["10.0.0.0/8", "192.168.1.7/32", "::1/128", "172.16.0.0/12"]


@pytest.mark.parametrize("bad", [["10.0.0.1/8"], ["300.1.1.1"], ["nope"], [42], "10.0.0.0/8"])
def test_parse_networks_refuses_bad_input_with_config_error(bad):
    with pytest.raises(ConfigError, match="allow"):
        parse_networks(bad, what="allow")


def test_deny_wins_over_allow_and_empty_allow_allows_all():
    allow = parse_networks(["10.0.0.0/8"])
    deny = parse_networks(["10.9.0.0/16"])
    ip = ipaddress.ip_address
    assert check_address(ip("10.1.1.1"), allow, deny) is V.ACCEPTED
    assert check_address(ip("10.9.1.1"), allow, deny) is V.DENIED
    assert check_address(ip("11.0.0.1"), allow, deny) is V.NOT_ALLOWED
    assert check_address(ip("11.0.0.1"), (), deny) is V.ACCEPTED
    assert check_address(ip("::1"), allow, ()) is V.NOT_ALLOWED  # other version: no match
    assert check_address(None, allow, ()) is V.INVALID_ADDRESS
    assert check_address(None, (), ()) is V.ACCEPTED


def test_ipv4_mapped_peer_matches_an_ipv4_deny_rule():
    screen = Screen(deny=["127.0.0.0/8"])
    assert screen.admit("::ffff:127.0.0.1", 0.0) is V.DENIED
    assert screen.admit("::1", 0.0) is V.ACCEPTED


# ------------------------------------------------------------------ rates


def test_fixed_window_allows_limit_per_second_then_resets():
    rate = FixedWindowRate(3)
    assert [rate.hit("a", 10.0 + i * 0.1) for i in range(5)] == [True, True, True, False, False]
    assert rate.hit("b", 10.5), "each source has its own budget"
    assert rate.hit("a", 11.0), "a new window starts at the next whole second"


def test_sliding_window_weights_the_previous_second():
    rate = SlidingWindowRate(4)
    assert all(rate.hit("a", 0.9) for _ in range(4))
    assert not rate.hit("a", 0.95)
    # At 1.25, 75% of the previous window still overlaps: 4 * 0.75 = 3 counted, 1 free.
    assert rate.hit("a", 1.25)
    assert not rate.hit("a", 1.25)
    # At 1.75, 4 * 0.25 + 1 = 2 counted: 2 more fit.
    assert rate.hit("a", 1.75) and rate.hit("a", 1.75)
    assert not rate.hit("a", 1.75)
    # A gap of more than a window forgets everything.
    assert all(rate.hit("a", 5.0) for _ in range(4))


def test_sliding_window_does_not_count_refused_hits():
    rate = SlidingWindowRate(2)
    assert rate.hit("a", 0.0) and rate.hit("a", 0.0)
    assert not any(rate.hit("a", 0.5) for _ in range(100))
    assert rate.hit("a", 1.5) is True  # 2 * 0.5 = 1 counted


@pytest.mark.parametrize("bad", [0, -1, "5", True, None])
def test_rate_must_be_positive(bad):
    with pytest.raises(ConfigError, match="rate"):
        FixedWindowRate(bad)


# ------------------------------------------------------------------ Screen


def test_max_connections_counts_live_connections_and_release_frees_a_slot():
    screen = Screen(max_connections=2)
    assert screen.admit("10.0.0.1", 0) is V.ACCEPTED
    assert screen.admit("10.0.0.2", 0) is V.ACCEPTED
    assert screen.admit("10.0.0.3", 0) is V.MAX_CONNECTIONS
    assert screen.live_connections == 2
    screen.release("10.0.0.1")
    assert screen.admit("10.0.0.3", 0) is V.ACCEPTED


def test_max_connections_per_ip_is_per_source():
    screen = Screen(max_connections_per_ip=1)
    assert screen.admit("10.0.0.1", 0) is V.ACCEPTED
    assert screen.admit("::ffff:10.0.0.1", 0) is V.MAX_CONNECTIONS_PER_IP
    assert screen.admit("10.0.0.2", 0) is V.ACCEPTED
    assert screen.connections_from("10.0.0.1") == 1
    screen.release("::ffff:10.0.0.1")
    assert screen.connections_from("10.0.0.1") == 0
    assert screen.admit("10.0.0.1", 0) is V.ACCEPTED


def test_release_of_an_unknown_source_changes_nothing():
    screen = Screen(max_connections=1)
    screen.release("10.0.0.9")
    assert screen.live_connections == 0
    assert screen.admit("10.0.0.1", 0) is V.ACCEPTED


def test_release_after_the_address_memo_was_cleared_frees_the_right_source():
    screen = Screen(max_connections_per_ip=1)
    assert screen.admit("::ffff:10.0.0.1", 0) is V.ACCEPTED
    # Enough other peers to drop the memo whole: release must work the key out again.
    for i in range(screening.ADDRESS_MEMO_SIZE):
        screen.check_datagram(f"10.1.{i // 256}.{i % 256}", 0)
    screen.release("::ffff:10.0.0.1")
    assert screen.live_connections == 0
    assert screen.connections_from("10.0.0.1") == 0


def test_rate_limit_applies_before_the_caps_and_refused_attempts_hold_nothing():
    screen = Screen(rate=1, rate_window="fixed", max_connections=1)
    assert screen.admit("10.0.0.1", 0.5) is V.ACCEPTED
    assert screen.admit("10.0.0.1", 0.6) is V.RATE_LIMITED
    assert screen.admit("10.0.0.2", 0.7) is V.MAX_CONNECTIONS
    assert screen.live_connections == 1


def test_rate_limit_counts_attempts_per_source_with_fixed_window():
    screen = Screen(rate=2, rate_window="fixed")
    got = [screen.admit("10.0.0.1", 3.0) for _ in range(3)]
    assert got == [V.ACCEPTED, V.ACCEPTED, V.RATE_LIMITED]
    assert screen.admit("10.0.0.2", 3.0) is V.ACCEPTED
    assert screen.admit("10.0.0.1", 4.0) is V.ACCEPTED


def test_denied_peer_does_not_use_up_the_rate_budget():
    screen = Screen(deny=["10.0.0.0/8"], rate=1, rate_window="fixed")
    assert screen.admit("10.0.0.1", 0) is V.DENIED
    assert screen.admit("10.0.0.1", 0) is V.DENIED
    assert screen.live_connections == 0


def test_check_datagram_applies_lists_and_rate_but_holds_no_connection():
    screen = Screen(allow=["192.168.0.0/16"], rate=2, rate_window="fixed", max_connections=1)
    assert screen.check_datagram("8.8.8.8", 0) is V.NOT_ALLOWED
    got = [screen.check_datagram("192.168.1.1", 0) for _ in range(3)]
    assert got == [V.ACCEPTED, V.ACCEPTED, V.RATE_LIMITED]
    assert screen.live_connections == 0


def test_is_noop_only_when_nothing_is_configured():
    assert Screen().is_noop
    assert not Screen(max_connections=5).is_noop
    assert not Screen(deny=["::1"]).is_noop


@pytest.mark.parametrize(
    "kwargs",
    [{"max_connections": 0}, {"max_connections_per_ip": -2}, {"max_connections": 1.5},
     {"rate_window": "leaky", "rate": 1}, {"deny": ["10.0.0.0/33"]}],
)
def test_screen_validates_its_options(kwargs):
    with pytest.raises(ConfigError):
        Screen(**kwargs)


def test_verdict_is_a_string_with_accepted_flag():
    assert V.ACCEPTED.accepted and not V.DENIED.accepted
    assert V.MAX_CONNECTIONS_PER_IP == "max-connections-per-ip"


def test_reconfigure_takes_the_new_policy_and_keeps_the_live_counts():
    screen = Screen(max_connections=5, deny=["10.0.0.0/8"])
    for host in ("127.0.0.1", "127.0.0.1", "127.0.0.2"):
        assert screen.admit(host, 0.0) is V.ACCEPTED
    assert screen.admit("10.1.1.1", 0.0) is V.DENIED
    screen.reconfigure(Screen(max_connections=3, max_connections_per_ip=2,
                              deny=["127.0.0.2"]))
    assert screen.live_connections == 3
    assert screen.admit("10.1.1.1", 0.0) is V.MAX_CONNECTIONS  # no longer denied, but full
    assert screen.admit("127.0.0.2", 0.0) is V.DENIED  # the new list, not a stale memo
    screen.release("127.0.0.1")  # admitted under the old policy, released under the new
    assert screen.live_connections == 2
    assert screen.admit("127.0.0.1", 0.0) is V.ACCEPTED
    assert screen.admit("127.0.0.1", 0.0) is V.MAX_CONNECTIONS
    assert screen.connections_from("127.0.0.1") == 2

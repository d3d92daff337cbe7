"""Broker: grammar, conflicts, screening, TLS, UDP, pub/sub, many connections."""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket

import pytest

from nethelp import (LOCAL, LOOPS, echo_once, free_port, make_broker, make_certs, run,
                     udp_exchange, wait_until, write_source)
from packetron.errors import ConfigError, NoPortOpened
from packetron.net import client_context, open_connection
from packetron.net.handlerfiles import (
    FolderScan,
    diff_scans,
    parse_entry_name,
    scan_folder,
)

TCP, UDP = socket.SOCK_STREAM, socket.SOCK_DGRAM

ECHO = """
async def handle(conn, ctx):
    async for chunk in conn:
        conn.write(chunk)
"""


async def is_refused(port: int) -> bool:
    """The port is closed, or the peer was screened out (closed without a byte)."""
    try:
        conn = await open_connection(LOCAL, port)
    except ConnectionRefusedError:
        return True
    try:
        conn.write(b"x")
        return await conn.read() == b""
    except ConnectionError:
        return True
    finally:
        conn.close()
        await conn.wait_closed()


# ------------------------------------------------------------------ grammar (pure)


@pytest.mark.parametrize(
    "filename, expected",
    [
        ("echo.tcp.7000.port.py", ("echo", "tcp", 7000)),
        ("stats.udp.1.port.py", ("stats", "udp", 1)),
        ("chat.v2.tcp.65535.port.py", ("chat.v2", "tcp", 65535)),
        ("my-app_1.udp.53.port.py", ("my-app_1", "udp", 53)),
        ("echo.py", None),
        ("echo.tcp.port.py", None),
        ("echo.sctp.7000.port.py", None),
        (".#echo.tcp.7000.port.py", None),
        ("echo.tcp.7000.port.pyc", None),
        (".tcp.7000.port.py", None),
    ],
)
def test_entry_file_grammar(filename, expected):
    got = parse_entry_name(filename)
    assert (None if got is None else (got.name, got.protocol, got.port)) == expected


@pytest.mark.parametrize(
    "filename", ["x.tcp.0.port.py", "x.tcp.65536.port.py", "x.udp.080.port.py"]
)
def test_entry_with_a_bad_port_is_a_config_error(filename):
    with pytest.raises(ConfigError, match="1-65535"):
        parse_entry_name(filename)


def test_scan_takes_top_level_entries_and_treats_nested_files_as_support(tmp_path):
    (tmp_path / "echo.tcp.7000.port.py").write_text(ECHO)
    (tmp_path / "helpers.py").write_text("X = 1\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "inner.tcp.7001.port.py").write_text(ECHO)
    (tmp_path / "lib" / "__pycache__").mkdir()
    (tmp_path / "lib" / "__pycache__" / "junk.py").write_text("")
    (tmp_path / "README.txt").write_text("not code")
    scan = scan_folder(str(tmp_path))
    assert list(scan.entries) == ["echo.tcp.7000.port.py"]
    assert sorted(scan.support) == ["helpers.py", "lib/inner.tcp.7001.port.py"]


def test_diff_scans_reports_added_changed_removed_and_support():
    support = {"h.py": (1, 1, 3)}
    old = FolderScan({"a.tcp.1.port.py": (1, 1, 1), "b.tcp.2.port.py": (1, 1, 2)}, support)
    new = FolderScan({"a.tcp.1.port.py": (2, 1, 1), "c.udp.3.port.py": (1, 1, 4)}, support)
    changes = diff_scans(old, new)
    assert (changes.added, changes.changed, changes.removed) == (
        ("c.udp.3.port.py",), ("a.tcp.1.port.py",), ("b.tcp.2.port.py",))
    assert not changes.support_changed
    assert not diff_scans(new, new)


# ------------------------------------------------------------------ serving


@pytest.mark.parametrize("loop", LOOPS)
def test_tcp_echo_and_ctx_fields(tmp_path, loop):
    port = free_port(TCP)
    write_source(tmp_path / f"echo.tcp.{port}.port.py", """
        seen = []

        def open(ctx):
            seen.append((ctx.name, ctx.port, ctx.protocol, ctx.signal.aborted))

        async def handle(conn, ctx):
            conn.write(repr(seen[0]).encode() + b"\\n")
            async for chunk in conn:
                conn.write(chunk)
    """)

    async def main():
        broker = make_broker(tmp_path)
        await broker.start()
        assert broker.ports == {("tcp", port): "echo"}
        conn = await open_connection(LOCAL, port)
        assert await conn.readline() == repr(("echo", port, "tcp", False)).encode() + b"\n"
        conn.write(b"abc")
        assert await conn.readexactly(3) == b"abc"
        conn.close()
        await broker.stop()
        assert broker.ports == {}

    run(main(), loop=loop)


def test_conflicting_claim_on_one_port_the_later_is_refused_and_logged(tmp_path, caplog):
    port = free_port(TCP)
    first = tmp_path / f"first.tcp.{port}.port.py"
    later = tmp_path / f"later.tcp.{port}.port.py"
    write_source(first, "def handle(conn, ctx):\n    conn.write(b'first'); conn.close()\n")
    write_source(later, "def handle(conn, ctx):\n    conn.write(b'later'); conn.close()\n")
    st = os.stat(first)
    os.utime(later, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    # The same port number on the other protocol is no conflict.
    write_source(tmp_path / f"other.udp.{port}.port.py",
                 "def message(m, r, ctx):\n    ctx.reply(m, r)\n")

    async def read_all() -> bytes:
        conn = await open_connection(LOCAL, port)
        data = await conn.read()
        conn.close()
        return data

    async def main():
        broker = make_broker(tmp_path)
        with caplog.at_level(logging.ERROR, logger="packetron"):
            await broker.start()
        assert await read_all() == b"first"
        assert broker.ports == {("tcp", port): "first", ("udp", port): "other"}
        refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 1 and later.name in refused[0] and first.name in refused[0]
        # Logged once, not at every scan.
        await broker.rescan()
        assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1
        # The port is freed when the first goes away: the later one takes it over.
        first.unlink()
        await broker.rescan()
        assert await read_all() == b"later"
        await broker.stop()

    run(main())


def test_denied_peer_never_runs_the_handler(tmp_path):
    port = free_port(TCP)
    marker = tmp_path / "marker"
    write_source(tmp_path / f"guarded.tcp.{port}.port.py", f"""
        def handle(conn, ctx):
            open({str(marker)!r}, "w").write("ran")
            conn.close()
    """)
    manifest = {"guarded": {"deny": ["127.0.0.0/8"]}}

    async def main():
        broker = make_broker(tmp_path, manifest=manifest)
        await broker.start()
        for _ in range(3):
            assert await is_refused(port)
        await broker.stop()

    run(main())
    assert not marker.exists()


def test_manifest_caps_and_rates_are_enforced(tmp_path):
    capped, rated = free_port(TCP), free_port(TCP)
    hold = """
        async def handle(conn, ctx):
            conn.write(b"+")
            await conn.read()
    """
    write_source(tmp_path / f"capped.tcp.{capped}.port.py", hold)
    write_source(tmp_path / f"rated.tcp.{rated}.port.py", hold)
    manifest = {"capped": {"max_connections": 2}, "rated": {"rate": 2}}

    async def main():
        broker = make_broker(tmp_path, manifest=manifest)
        await broker.start()
        held = []
        for _ in range(2):
            c = await open_connection(LOCAL, capped)
            assert await c.readexactly(1) == b"+"
            held.append(c)
        assert await is_refused(capped)
        results = []
        for _ in range(3):
            c = await open_connection(LOCAL, rated)
            try:
                results.append(await c.read(1))
            finally:
                c.close()
        assert results == [b"+", b"+", b""]
        for c in held:
            c.close()
        await broker.stop()

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_from_the_manifest(tmp_path, loop):
    cert, key, ca = make_certs(tmp_path)
    port = free_port(TCP)
    write_source(tmp_path / f"secure.tcp.{port}.port.py", ECHO)
    manifest_file = tmp_path / "broker.toml"
    manifest_file.write_text(
        "[secure]\n"
        f'tls = {{ cert = "{os.path.basename(cert)}", key = "{os.path.basename(key)}" }}\n'
    )

    async def main():
        broker = make_broker(tmp_path, manifest=str(manifest_file))
        await broker.start()
        assert await echo_once(port, b"over tls", ssl=client_context(ca)) == b"over tls"
        await broker.stop()

    run(main(), loop=loop)


def test_idle_timeout_from_the_manifest(tmp_path):
    port = free_port(TCP)
    write_source(tmp_path / f"idle.tcp.{port}.port.py", ECHO)

    async def main():
        broker = make_broker(tmp_path, manifest={"idle": {"idle_timeout": 0.05}})
        await broker.start()
        conn = await open_connection(LOCAL, port)
        assert await conn.read() == b""  # closed by the broker, no byte sent
        conn.close()
        await broker.stop()

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_udp_message_is_answered_with_ctx_reply(tmp_path, loop):
    port = free_port(UDP)
    write_source(tmp_path / f"upper.udp.{port}.port.py", """
        async def message(msg, rinfo, ctx):
            n = await ctx.shared.incr("count")
            ctx.reply(msg.upper() + b" #%d" % n, rinfo)
    """)

    async def main():
        broker = make_broker(tmp_path)
        await broker.start()
        got = await udp_exchange(port, [b"a", b"b", b"c"], 3)
        assert sorted(got) == [b"A #1", b"B #2", b"C #3"]
        assert await broker.shared.get("count") == 3
        await broker.stop()

    run(main(), loop=loop)


def test_udp_deny_drops_datagrams_before_the_handler(tmp_path):
    port = free_port(UDP)
    marker = tmp_path / "udp-marker"
    write_source(tmp_path / f"quiet.udp.{port}.port.py", f"""
        def message(msg, rinfo, ctx):
            open({str(marker)!r}, "w").write("ran")
    """)

    async def main():
        broker = make_broker(tmp_path, manifest={"quiet": {"deny": ["127.0.0.1"]}})
        await broker.start()
        # Datagrams are handled in arrival order on one socket: once the probe's answer
        # is back, the denied ones were processed (and dropped) before it.
        probe = free_port(UDP)
        write_source(tmp_path / f"probe.udp.{probe}.port.py",
                     "def message(m, r, ctx):\n    ctx.reply(m, r)\n")
        await broker.rescan()
        await udp_exchange(port, [b"x"] * 5, 0)
        assert await udp_exchange(probe, [b"p"], 1) == [b"p"]
        await broker.stop()

    run(main())
    assert not marker.exists()


def test_udp_rate_per_source_from_the_manifest(tmp_path):
    port = free_port(UDP)
    write_source(tmp_path / f"limited.udp.{port}.port.py",
                 "def message(m, r, ctx):\n    ctx.reply(m, r)\n")

    async def main():
        broker = make_broker(tmp_path, manifest={"limited": {"rate": 3}})
        await broker.start()
        # Ten datagrams at once from one source: three get through the sliding window.
        got = await udp_exchange(port, [b"%d" % i for i in range(10)], 3)
        assert got == [b"0", b"1", b"2"]
        await broker.stop()

    run(main())


# ------------------------------------------------------------------ ports in use

UPPER_UDP = "def message(m, r, ctx):\n    ctx.reply(m.upper(), r)\n"


def broker_errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "packetron.net.broker" and r.levelno >= logging.ERROR]


def test_second_broker_on_the_same_folder_does_not_take_over_udp_ports(tmp_path, caplog):
    port = free_port(UDP)
    write_source(tmp_path / f"upper.udp.{port}.port.py", UPPER_UDP)

    async def main():
        first = make_broker(tmp_path)
        await first.start()
        second = make_broker(tmp_path)
        try:
            with caplog.at_level(logging.ERROR, logger="packetron.net.broker"):
                await second.start()
            assert second.ports == {}
            assert first.ports == {("udp", port): "upper"}
            errors = broker_errors(caplog)
            assert len(errors) == 1 and f"cannot open udp port {port}" in errors[0]
            # Every datagram still reaches the first broker.
            got = await udp_exchange(port, [b"a", b"b", b"c"], 3)
            assert sorted(got) == [b"A", b"B", b"C"]
        finally:
            await second.stop()
            await first.stop()

    run(main())


def test_require_ports_raises_when_no_declared_port_could_be_opened(tmp_path, caplog):
    udp_port = free_port(UDP)
    write_source(tmp_path / f"upper.udp.{udp_port}.port.py", UPPER_UDP)
    with socket.socket() as taken:
        taken.bind((LOCAL, 0))
        taken.listen()
        tcp_port = taken.getsockname()[1]
        write_source(tmp_path / f"echo.tcp.{tcp_port}.port.py", ECHO)

        async def main():
            first = make_broker(tmp_path)
            await first.start()  # takes the UDP port; the TCP one is held above
            second = make_broker(tmp_path)
            try:
                caplog.clear()
                with caplog.at_level(logging.ERROR, logger="packetron.net.broker"):
                    with pytest.raises(NoPortOpened) as info:
                        await second.start(require_ports=True)
                failures = sorted((proto, port, exc.errno)
                                  for proto, port, exc in info.value.failures)
                assert failures == [("tcp", tcp_port, errno.EADDRINUSE),
                                    ("udp", udp_port, errno.EADDRINUSE)]
                errors = broker_errors(caplog)
                assert errors == [str(info.value)]  # one line, naming both ports
                assert f"tcp/{tcp_port}" in errors[0] and f"udp/{udp_port}" in errors[0]
                assert second.ports == {} and second.shared is None  # stopped
                await second.stop()  # idempotent after the refused start
            finally:
                await first.stop()
            # Once the UDP port is free, the same broker starts and serves it.
            await second.start(require_ports=True)
            try:
                assert second.ports == {("udp", udp_port): "upper"}
                assert await udp_exchange(udp_port, [b"x"], 1) == [b"X"]
            finally:
                await second.stop()

        run(main())


def test_require_ports_with_one_port_open_starts_and_logs_the_other(tmp_path, caplog):
    udp_port = free_port(UDP)
    write_source(tmp_path / f"upper.udp.{udp_port}.port.py", UPPER_UDP)
    with socket.socket() as taken:
        taken.bind((LOCAL, 0))
        taken.listen()
        tcp_port = taken.getsockname()[1]
        write_source(tmp_path / f"echo.tcp.{tcp_port}.port.py", ECHO)

        async def main():
            broker = make_broker(tmp_path)
            with caplog.at_level(logging.ERROR, logger="packetron.net.broker"):
                await broker.start(require_ports=True)
            try:
                assert broker.ports == {("udp", udp_port): "upper"}
                errors = broker_errors(caplog)
                assert len(errors) == 1
                assert errors[0].startswith(f"echo.tcp.{tcp_port}.port.py: cannot open tcp port")
            finally:
                await broker.stop()

        run(main())


def test_require_ports_does_not_refuse_a_folder_without_handlers(tmp_path):
    async def main():
        broker = make_broker(tmp_path)
        await broker.start(require_ports=True)
        assert broker.ports == {}
        await broker.stop()

    run(main())


def test_renamed_udp_handler_keeps_serving_its_port(tmp_path):
    # The old socket is closed a loop turn after close(): the new file must still get
    # the port in the same scan, now that a second bind of a used UDP port fails.
    port = free_port(UDP)
    old = tmp_path / f"upper.udp.{port}.port.py"
    write_source(old, UPPER_UDP)

    async def main():
        broker = make_broker(tmp_path)
        await broker.start()
        try:
            assert await udp_exchange(port, [b"a"], 1) == [b"A"]
            old.rename(tmp_path / f"renamed.udp.{port}.port.py")
            await broker.rescan()
            assert broker.ports == {("udp", port): "renamed"}
            assert await udp_exchange(port, [b"b"], 1) == [b"B"]
        finally:
            await broker.stop()

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_pub_sub_across_two_handlers(tmp_path, loop):
    listen_port, say_port = free_port(TCP), free_port(TCP)
    write_source(tmp_path / f"listen.tcp.{listen_port}.port.py", """
        async def handle(conn, ctx):
            async with ctx.shared.subscribe("room") as sub:
                conn.write(b"ready\\n")
                async for msg in sub:
                    conn.write(msg.encode() + b"\\n")
                    if msg == "bye":
                        break
    """)
    write_source(tmp_path / f"say.tcp.{say_port}.port.py", """
        async def handle(conn, ctx):
            while line := await conn.readline():
                n = await ctx.shared.publish("room", line.decode().strip())
                conn.write(b"%d\\n" % n)
    """)

    async def main():
        broker = make_broker(tmp_path)
        await broker.start()
        listener = await open_connection(LOCAL, listen_port)
        assert await listener.readline() == b"ready\n"
        speaker = await open_connection(LOCAL, say_port)
        for word in (b"hello", b"world", b"bye"):
            speaker.write(word + b"\n")
            assert await speaker.readline() == b"1\n"  # one subscriber reached
        assert [await listener.readline() for _ in range(3)] == [b"hello\n", b"world\n", b"bye\n"]
        assert await listener.read() == b""  # the listening handler returned: closed
        listener.close()
        speaker.close()
        await broker.stop()

    run(main(), loop=loop)


def test_handler_exception_closes_only_its_connection(tmp_path, caplog):
    port = free_port(TCP)
    write_source(tmp_path / f"picky.tcp.{port}.port.py", """
        async def handle(conn, ctx):
            while line := await conn.readline():
                if line == b"boom\\n":
                    raise ValueError("boom")
                conn.write(line)
    """)

    async def main():
        broker = make_broker(tmp_path)
        await broker.start()
        good = await open_connection(LOCAL, port)
        bad = await open_connection(LOCAL, port)
        with caplog.at_level(logging.ERROR, logger="packetron"):
            bad.write(b"boom\n")
            assert await bad.read() == b""
        good.write(b"still here\n")
        assert await good.readline() == b"still here\n"
        assert any("handler failed" in r.getMessage() for r in caplog.records)
        good.close()
        bad.close()
        await broker.stop()

    run(main())


def test_supporting_code_in_subfolders_is_importable(tmp_path):
    port = free_port(TCP)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "__init__.py").write_text("")
    (tmp_path / "lib" / "shout.py").write_text("def shout(b):\n    return b.upper()\n")
    write_source(tmp_path / f"loud.tcp.{port}.port.py", """
        from lib.shout import shout

        async def handle(conn, ctx):
            async for chunk in conn:
                conn.write(shout(chunk))
    """)

    async def main():
        broker = make_broker(tmp_path)
        await broker.start()
        assert await echo_once(port, b"quiet") == b"QUIET"
        # Changing supporting code reloads the handlers that may use it.
        write_source(tmp_path / "lib" / "shout.py", "def shout(b):\n    return b[::-1]\n")
        await broker.rescan()
        assert broker.handlers[0].generation == 2
        assert await echo_once(port, b"quiet") == b"teiuq"
        await broker.stop()

    run(main())


def test_a_thousand_concurrent_connections_on_one_broker(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * 1000 + 200  # both ends live in this process
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    port = free_port(TCP)
    write_source(tmp_path / f"hold.tcp.{port}.port.py", """
        async def handle(conn, ctx):
            conn.write(b"%d\\n" % conn.id)
            async for chunk in conn:
                conn.write(chunk)
    """)

    async def main():
        broker = make_broker(tmp_path)
        await broker.start()
        sem = asyncio.Semaphore(200)  # stay within the listen backlog while connecting

        async def connect():
            async with sem:
                c = await open_connection(LOCAL, port, timeout=10)
                await c.readline()
                return c

        conns = await asyncio.gather(*(connect() for _ in range(1000)))
        assert broker.handlers[0].connections == 1000
        for i, c in enumerate(conns):
            c.write(b"%d;" % i)
        replies = await asyncio.gather(
            *(c.readexactly(len(b"%d;" % i)) for i, c in enumerate(conns))
        )
        assert replies == [b"%d;" % i for i in range(1000)]
        for c in conns:
            c.close()
        await wait_until(lambda: broker.handlers[0].connections == 0)
        await broker.stop()

    try:
        run(main(), timeout=50)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_start_on_a_missing_directory_is_a_config_error(tmp_path):
    async def main():
        with pytest.raises(ConfigError, match="not found"):
            await make_broker(tmp_path / "nope").start()

    run(main())


def test_bad_shared_url_is_refused_at_construction(tmp_path):
    with pytest.raises(ConfigError, match="shared store"):
        make_broker(tmp_path, shared="mongodb://x")


def test_example_handlers_folder_works(tmp_path):
    """examples/handlers, copied with free ports: echo, UDP counter, chat + watcher."""
    import re
    import shutil

    src = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "handlers")
    ports = {}
    for entry in os.listdir(src):
        full = os.path.join(src, entry)
        if os.path.isdir(full):
            if entry != "__pycache__":
                shutil.copytree(full, tmp_path / entry,
                                ignore=shutil.ignore_patterns("__pycache__"))
            continue
        m = re.match(r"(.+)\.(tcp|udp)\.(\d+)\.port\.py$", entry)
        assert m, entry
        port = free_port(TCP if m.group(2) == "tcp" else UDP)
        ports[m.group(1)] = port
        shutil.copy(full, tmp_path / f"{m.group(1)}.{m.group(2)}.{port}.port.py")

    async def main():
        broker = make_broker(tmp_path)
        await broker.start()
        assert sorted(broker.ports.values()) == ["chat", "chatwatch", "counter", "echo"]
        assert await echo_once(ports["echo"], b"echo me") == b"echo me"
        assert await udp_exchange(ports["counter"], [b"a"], 1) == [b"1\n"]
        watcher = await open_connection(LOCAL, ports["chatwatch"])
        assert await watcher.readline() == b"* watching the chat\n"
        alice = await open_connection(LOCAL, ports["chat"])
        alice_id = "%s:%d" % alice.get_extra_info("sockname")[:2]
        assert await watcher.readline() == f"* {alice_id} joined\n".encode()
        bob = await open_connection(LOCAL, ports["chat"])
        bob_id = "%s:%d" % bob.get_extra_info("sockname")[:2]
        assert await watcher.readline() == f"* {bob_id} joined\n".encode()
        assert await alice.readline() == f"* {bob_id} joined\n".encode()
        alice.write(b"hello bob\n")
        assert await bob.readline() == f"<{alice_id}> hello bob\n".encode()
        assert await watcher.readline() == f"<{alice_id}> hello bob\n".encode()
        alice.write_eof()
        assert await bob.readline() == f"* {alice_id} left\n".encode()
        for c in (alice, bob, watcher):
            c.close()
        await broker.stop()

    run(main())


def test_two_brokers_share_state_and_pub_sub_through_redis(tmp_path):
    from nethelp import start_redis, stop_process

    proc, url = start_redis()
    try:
        a_dir, b_dir = tmp_path / "a", tmp_path / "b"
        a_dir.mkdir()
        b_dir.mkdir()
        listen_port, say_port = free_port(TCP), free_port(TCP)
        write_source(a_dir / f"listen.tcp.{listen_port}.port.py", """
            async def handle(conn, ctx):
                async with ctx.shared.subscribe("room") as sub:
                    conn.write(b"ready\\n")
                    async for msg in sub:
                        conn.write(b"%s %d\\n" % (msg.encode(), await ctx.shared.get("said")))
                        break
        """)
        write_source(b_dir / f"say.tcp.{say_port}.port.py", """
            async def handle(conn, ctx):
                line = await conn.readline()
                await ctx.shared.set("said", 42)
                n = await ctx.shared.publish("room", line.decode().strip())
                conn.write(b"%d\\n" % n)
        """)

        async def main():
            a = make_broker(a_dir, shared=url)
            b = make_broker(b_dir, shared=url)
            await a.start()
            await b.start()
            listener = await open_connection(LOCAL, listen_port)
            assert await listener.readline() == b"ready\n"
            speaker = await open_connection(LOCAL, say_port)
            speaker.write(b"across brokers\n")
            assert await speaker.readline() == b"1\n"
            assert await listener.readline() == b"across brokers 42\n"
            for c in (listener, speaker):
                c.close()
            await a.stop()
            await b.stop()

        run(main())
    finally:
        stop_process(proc)

"""Wire compatibility with Node's packet-stream: a Python client against a Node server,
and a Node client against a Python server (scripts in tests/node/)."""
from __future__ import annotations

import asyncio
import json
import pathlib
import shutil

import pytest
from nethelp import run

from packetron.errors import RemoteError
from packetron.net.connection import open_connection
from packetron.net.packetstream import PacketStream
from packetron.net.tcpserver import TcpServer

NODE_DIR = pathlib.Path(__file__).parents[1] / "node"
NODE = shutil.which("node")
READY_TIMEOUT = 15.0
LINE_TIMEOUT = 15.0


@pytest.fixture(autouse=True)
def need_node():
    if NODE is None:
        pytest.skip("node is not installed: Node interop tests need it (apt-get install nodejs)")
    if not (NODE_DIR / "node_modules" / "packet-stream").is_dir():
        pytest.skip("tests/node/node_modules is missing: run `bash tests/prepare.sh`")


class NodeProcess:
    """A Node script run by the test, read line by line, stopped by its PID."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, script: str, *args: str) -> NodeProcess:
        proc = await asyncio.create_subprocess_exec(
            NODE, str(NODE_DIR / script), *args, cwd=str(NODE_DIR),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def line(self) -> str:
        raw = await asyncio.wait_for(self.proc.stdout.readline(), LINE_TIMEOUT)
        if not raw:
            err = await self.proc.stderr.read()
            raise AssertionError(f"node exited early: {err.decode(errors='replace')}")
        return raw.decode().rstrip("\n")

    async def json_until(self, key: str, value: str) -> list[dict]:
        """JSON lines up to and including the first whose `key` is `value`."""
        out = []
        while True:
            obj = json.loads(await self.line())
            out.append(obj)
            if obj.get(key) == value:
                return out

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()  # by PID
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self.proc.stdout.read()
        await self.proc.stderr.read()


async def node_server() -> tuple[NodeProcess, int]:
    node = await NodeProcess.start("ps_server.js", "0")
    ready = await asyncio.wait_for(node.line(), READY_TIMEOUT)
    assert ready.startswith("READY "), ready
    return node, int(ready.split()[1])


# ---------------------------------------------------------------- Python client, Node server


def test_python_client_against_node_server():
    async def main():
        node, port = await node_server()
        try:
            conn = await open_connection("127.0.0.1", port)
            closes = []
            ps = PacketStream(close=closes.append)
            task = ps.start(conn)

            ps.message("HELLO")
            ps.message({"hello": "json", "n": 1})
            assert await ps.request("COUNT?") == 2
            assert await ps.request({"foo": "bar"}) == {"okay": True, "echo": {"foo": "bar"}}
            assert await ps.request("ping") == "ping"
            assert await ps.request(bytes.fromhex("00ff10")) == bytes.fromhex("00ff10")
            assert await ps.request({"f": 1.0, "g": 2.5e-7, "s": "h\u00e9llo \u2603"}) == {
                "okay": True, "echo": {"f": 1, "g": 2.5e-7, "s": "h\u00e9llo \u2603"}}
            with pytest.raises(RemoteError) as info:
                await ps.request({"fail": True})
            assert info.value.payload == {"message": "fail requested", "name": "Error",
                                          "stack": "Error: fail requested"}
            assert str(info.value) == "fail requested" and info.value.name == "Error"
            answers = await asyncio.gather(*(ps.request({"n": n}) for n in range(50)))
            assert answers == [{"okay": True, "echo": {"n": n}} for n in range(50)]

            s = ps.stream()
            for chunk in ("chunk-1", {"n": 2}, b"chunk-3", "chunk-4"):
                s.write(chunk)
            s.end()
            assert [c async for c in s] == ["chunk-1", {"n": 2}, b"chunk-3", "chunk-4"]

            s = ps.stream()
            s.write({"n": 1})
            s.end({"message": "stream broke", "name": "Error", "stack": "Error: stream broke"})
            got = []
            with pytest.raises(RemoteError) as info:
                async for chunk in s:
                    got.append(chunk)
            assert got == [{"n": 1}]
            assert info.value.payload == {"message": "stream broke", "name": "Error",
                                          "stack": "Error: stream broke"}

            await ps.close()
            await task
            assert closes == [None]
            assert conn.state == "closed"

            events = await node.json_until("event", "close")
            assert [e for e in events if e["event"] == "message"] == [
                {"event": "message", "value": "HELLO"},
                {"event": "message", "value": {"hello": "json", "n": 1}},
            ]
            stream_events = [(e["data"], e["end"]) for e in events if e["event"] == "stream"]
            assert stream_events == [
                ("chunk-1", None), ({"n": 2}, None), ({"buffer": b"chunk-3".hex()}, None),
                ("chunk-4", None), (None, True), ({"n": 1}, None),
                (None, {"message": "stream broke", "name": "Error",
                        "stack": "Error: stream broke"}),
            ]
            # Node saw a clean GOODBYE: its close callback got no error.
            assert events[-1] == {"event": "close", "err": None}
        finally:
            await node.stop()

    run(main())


def test_node_server_answers_goodbye_and_hangs_up():
    async def main():
        node, port = await node_server()
        try:
            conn = await open_connection("127.0.0.1", port)
            ps = PacketStream()
            task = ps.start(conn)
            assert await ps.request("x") == "x"
            await asyncio.wait_for(ps.close(), 5)
            await task
            assert (await node.json_until("event", "close"))[-1]["err"] is None
        finally:
            await node.stop()

    run(main())


# ---------------------------------------------------------------- Node client, Python server


class ServerLikeNodes:
    """The Python twin of tests/node/ps_server.js."""

    def __init__(self) -> None:
        self.closes: list[object] = []
        self.closed = asyncio.Event()
        self.messages: list[object] = []

    def on_close(self, err: object) -> None:
        self.closes.append(err)
        self.closed.set()

    def make(self) -> PacketStream:
        count = 0

        def message(value):
            nonlocal count
            count += 1
            self.messages.append(value)

        def request(value):
            if value == "COUNT?":
                return count
            if isinstance(value, dict) and value.get("fail") is True:
                raise RemoteError("fail requested", {"message": "fail requested",
                                                     "name": "Error",
                                                     "stack": "Error: fail requested"})
            if isinstance(value, (str, bytes)):
                return value
            return {"okay": True, "echo": value}

        async def stream(s):
            try:
                async for chunk in s:
                    s.write(chunk)
            except RemoteError as exc:
                s.end(exc)  # the peer's own error object goes back unchanged
                return
            s.end()

        return PacketStream(message=message, request=request, stream=stream,
                            close=self.on_close)


def test_node_client_against_python_server():
    async def main():
        twin = ServerLikeNodes()
        server = TcpServer(0, host="127.0.0.1")

        @server.on_connection
        async def handle(conn):
            await twin.make().attach(conn)

        await server.listen()
        node = await NodeProcess.start("ps_client.js", str(server.port))
        try:
            lines = await node.json_until("step", "done")
            await asyncio.wait_for(node.proc.wait(), 10)
            # The session ended on the Node client's GOODBYE: no error either side.
            await twin.closed.wait()
        finally:
            await node.stop()
            await server.close()
        return lines, twin

    lines, twin = run(main())
    by_step = {line["step"]: line for line in lines}
    assert by_step["count"] == {"step": "count", "value": 2}
    assert by_step["object"] == {"step": "object", "value": {"okay": True, "echo": {"foo": "bar"}}}
    assert by_step["string"] == {"step": "string", "value": "ping"}
    assert by_step["buffer"] == {"step": "buffer", "value": {"buffer": "00ff10"}}
    assert by_step["unicode"] == {"step": "unicode", "value": {"okay": True, "echo": {
        "s": "h\u00e9llo \u2603", "f": 1.5, "i": 3, "neg": -2.5e-7}}}
    assert by_step["fail"] == {"step": "fail", "err": {
        "message": "fail requested", "name": "Error", "stack": "Error: fail requested"}}
    assert by_step["parallel"]["values"] == [
        {"value": {"okay": True, "echo": {"n": n}}} for n in range(1, 6)]
    assert by_step["stream"] == {"step": "stream", "chunks": [
        "chunk-1", {"n": 2}, {"buffer": b"chunk-3".hex()}], "end": True}
    assert by_step["stream_error"] == {"step": "stream_error", "chunks": [{"n": 1}], "end": {
        "message": "stream broke", "name": "Error", "stack": "Error: stream broke"}}
    assert by_step["closed"] == {"step": "closed", "err": None, "messages": []}
    assert twin.messages == ["HELLO", {"hello": "json", "n": 1}]
    assert twin.closes == [None]


def test_python_exception_reaches_node_as_error_object():
    async def main():
        def request(value):
            raise KeyError("missing")

        server = TcpServer(0, host="127.0.0.1")

        @server.on_connection
        async def handle(conn):
            await PacketStream(request=request).attach(conn)

        await server.listen()
        node = await NodeProcess.start("ps_client.js", str(server.port))
        try:
            lines = await node.json_until("step", "done")
        finally:
            await node.stop()
            await server.close()
        return lines

    lines = run(main())
    err = next(line for line in lines if line["step"] == "count")["err"]
    assert list(err) == ["message", "name", "stack"]
    assert err["message"] == "'missing'" and err["name"] == "KeyError"
    assert err["stack"].startswith("Traceback (most recent call last):")
    assert err["stack"].endswith("KeyError: 'missing'")

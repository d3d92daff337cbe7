"""PacketStream: messages, requests and a duplex stream between two Python peers.

    python examples/packetstream_demo.py

The wire format is Node's packet-stream-codec, so either side could be a Node process
running packet-stream (see tests/node/ps_server.js for one).
"""
from __future__ import annotations

import asyncio
from typing import Any

from packetron.net import (
    Connection, DuplexStream, PacketStream, RemoteError, TcpClient, TcpServer)


def on_message(value: Any) -> None:
    print("server got message:", value)


async def on_request(value: Any) -> Any:
    if value == "divide by zero":
        return 1 / 0  # reaches the client as RemoteError
    return {"okay": True, "echo": value}


async def on_stream(s: DuplexStream) -> None:
    # Echo every chunk upper-cased, then end our side when the client ends theirs.
    async for chunk in s:
        s.write(chunk.upper() if isinstance(chunk, str) else chunk)
    s.end()


async def main() -> None:
    server = TcpServer(0, host="127.0.0.1")

    @server.on_connection
    async def serve(conn: Connection) -> None:
        ps = PacketStream(message=on_message, request=on_request, stream=on_stream,
                          close=lambda err: print("server session closed, error:", err))
        await ps.attach(conn)

    async with server:
        conn = await TcpClient("127.0.0.1", server.port).connect()
        ps = PacketStream()
        session = ps.start(conn)

        ps.message("hello")
        print("answer:", await ps.request({"numbers": [1, 2, 3]}))
        try:
            await ps.request("divide by zero")
        except RemoteError as exc:
            print("remote error:", exc.name, "-", exc)

        s = ps.stream()
        for word in ("packet", "stream", "duplex"):
            s.write(word)
        s.end()
        print("stream echoed:", [chunk async for chunk in s])

        await ps.close()  # GOODBYE once nothing is in flight
        await session


if __name__ == "__main__":
    asyncio.run(main())

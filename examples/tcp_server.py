"""Length-prefixed echo over TCP: a TcpServer and a client that connects with retry.

    python examples/tcp_server.py                 # demo: server and client in one process
    python examples/tcp_server.py serve --port 9000
    python examples/tcp_server.py client --port 9000 hello world

Each message travels as a 4-byte big-endian length followed by the payload
(LengthPrefixedFramer); the server answers every frame with the same frame.
"""
from __future__ import annotations

import argparse
import asyncio

from packetron.net import Connection, LengthPrefixedFramer, TcpClient, TcpServer


async def echo_frames(conn: Connection) -> None:
    """Server side: decode frames from the stream and send each one back."""
    framer = LengthPrefixedFramer(max_frame_size=1024 * 1024)
    async for frame in conn.frames(framer):
        conn.write(framer.encode(frame))
        await conn.drain()


async def start_server(host: str, port: int) -> TcpServer:
    server = TcpServer(port, host=host, max_connections=1000)
    server.on_connection(echo_frames)
    server.on_error(lambda exc, conn: print(f"connection {conn} failed: {exc!r}"))
    await server.listen()
    print(f"length-prefixed echo on {host}:{server.port}")
    return server


async def run_client(host: str, port: int, messages: list[str]) -> list[bytes]:
    """Client side: connect (retrying while the server starts), send, read the echoes."""
    client = TcpClient(host, port, timeout=2.0)
    conn = await client.connect_with_retry(max_retries=5, initial_delay=0.2)
    framer = LengthPrefixedFramer()
    try:
        for text in messages:
            conn.write(framer.encode(text.encode()))
        await conn.drain()
        replies: list[bytes] = []
        async for frame in conn.frames(framer):
            replies.append(frame)
            print(f"echo: {frame.decode()}")
            if len(replies) == len(messages):
                break
        return replies
    finally:
        conn.close()
        await conn.wait_closed()


async def demo(host: str) -> None:
    server = await start_server(host, 0)
    try:
        await run_client(host, server.port, ["hello", "length-prefixed", "world"])
    finally:
        await server.close()


async def serve_forever(host: str, port: int) -> None:
    server = await start_server(host, port)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="demo", choices=["demo", "serve", "client"])
    parser.add_argument("messages", nargs="*", default=["hello", "world"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_intermixed_args()
    if args.mode == "serve":
        try:
            asyncio.run(serve_forever(args.host, args.port))
        except KeyboardInterrupt:
            pass
    elif args.mode == "client":
        asyncio.run(run_client(args.host, args.port, args.messages))
    else:
        asyncio.run(demo(args.host))


if __name__ == "__main__":
    main()

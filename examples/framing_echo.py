"""Length-prefixed and line framing over TCP: an echo server and a client, in one process.

    python examples/framing_echo.py

The server echoes each length-prefixed frame upper-cased; the client also sends lines to
a second server that answers each line with its length. Framers are sans-I/O: they only
turn bytes into frames and back, so the same objects work over any transport.
"""
from __future__ import annotations

import asyncio

from packetron.net import Connection, LengthPrefixedFramer, LineFramer, TcpClient, TcpServer


async def frame_echo(conn: Connection) -> None:
    framer = LengthPrefixedFramer(header_size=2, max_frame_size=4096)
    async for frame in conn.frames(framer):
        conn.write(framer.encode(frame.upper()))
        await conn.drain()


async def line_length(conn: Connection) -> None:
    framer = LineFramer(delimiter=b"\r\n")
    async for line in conn.frames(framer):
        conn.write(framer.encode(f"{line!r} has {len(line)} characters"))


async def main() -> None:
    frames = TcpServer(0, host="127.0.0.1")
    frames.on_connection(frame_echo)
    lines = TcpServer(0, host="127.0.0.1")
    lines.on_connection(line_length)
    async with frames, lines:
        length_framer = LengthPrefixedFramer(header_size=2, max_frame_size=4096)
        conn = await TcpClient("127.0.0.1", frames.port).connect()
        # Three frames in one write: the server still sees three messages.
        conn.write(b"".join(length_framer.encode(m) for m in (b"hello", b"framed", "world")))
        got: list[bytes] = []
        while len(got) < 3:
            got.extend(length_framer.feed(await conn.read(4096)))
        print("length-prefixed:", got)
        conn.close()
        await conn.wait_closed()

        line_framer = LineFramer(delimiter=b"\r\n")
        conn = await TcpClient("127.0.0.1", lines.port).connect()
        for text in ("first line", "héllo ☃"):
            conn.write(line_framer.encode(text))
        # str lines (the framer decodes UTF-8); feed() is typed list[str] | list[bytes].
        answers: list[str | bytes] = []
        while len(answers) < 2:
            answers.extend(line_framer.feed(await conn.read(4096)))
        for answer in answers:
            print("line:", answer)
        conn.close()
        await conn.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())

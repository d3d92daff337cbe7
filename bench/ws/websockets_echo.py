"""The ``websockets`` library's own asyncio server as a WebSocket echo, for bench/websocket.py.

Every message goes back as it came, on any path. ``websockets.asyncio.server.serve`` with
its defaults (the load generator offers no compression, so none is negotiated), on uvloop
when it is installed, as packetron runs, unless ``--loop asyncio``. Run::

    python bench/ws/websockets_echo.py --host 127.0.0.1 --port 8022 [--loop asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection, serve


async def echo(ws: ServerConnection) -> None:
    """Send every message back, text as text and binary as binary."""
    async for message in ws:
        await ws.send(message)


async def run(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[None] = loop.create_future()

    def stop() -> None:
        if not stopped.done():
            stopped.set_result(None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    async with serve(echo, host, port):
        await stopped


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop to run on: uvloop's when asked for and installed, else asyncio's."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8022)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(run(args.host, args.port))


if __name__ == "__main__":
    main()

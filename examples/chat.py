"""A chat room over WebSockets: a static page plus one WebSocket route, rooms joined through
server.channels, so it works the same with any number of workers.

    python examples/chat.py --port 3000 --workers 2
    packetron serve examples.chat:server --port 3000 --workers 2

Open http://127.0.0.1:3000/ in two browser windows (each names the worker process that
serves it): what one writes, the other sees, whichever worker each landed on. A room is
the part after "#" in the address (http://127.0.0.1:3000/#kitchen); the default is lobby.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import pathlib
from typing import Any

from packetron import Packetron, Request, WebSocket

PAGE_DIRECTORY = pathlib.Path(__file__).resolve().parent / "chat"
MAX_TEXT_LENGTH = 2000


def build_server(port: int = 3000, host: str = "127.0.0.1") -> Packetron:
    """The page at / and the WebSocket at /chat/{room} (not started)."""
    server = Packetron(port=port, host=host, workers=1, max_message_size=16 * 1024)
    server.serve(str(PAGE_DIRECTORY))

    # Packetron.websocket() is typed "-> Any" (no overloads like get/post have yet).
    @server.websocket("chat/{room}")  # type: ignore[untyped-decorator]
    async def chat(ws: WebSocket, request: Request) -> None:
        room = "room:" + ws.path_params["room"][:64]
        name = (request.get_query_params().get("name") or "anonymous")[:32]
        # Subscribed before anyone hears of us: nothing said after our "join" is missed.
        async with server.channels.subscribe(room) as messages:
            await ws.send(json.dumps({"type": "welcome", "pid": os.getpid()}))
            await server.channels.publish(room, {"type": "join", "name": name,
                                                 "pid": os.getpid()})

            async def relay() -> None:
                async for message in messages:  # from every worker's clients
                    await ws.send(json.dumps(message))

            relaying = asyncio.create_task(relay())
            try:
                async for text in ws:  # until the browser leaves
                    if isinstance(text, str) and text.strip():
                        await server.channels.publish(room, {
                            "type": "message", "name": name, "pid": os.getpid(),
                            "text": text[:MAX_TEXT_LENGTH]})
            finally:
                relaying.cancel()
                await server.channels.publish(room, {"type": "leave", "name": name,
                                                     "pid": os.getpid()})

    return server


# `packetron serve examples.chat:server` finds this one.
server = build_server()


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"packetron chat on http://{args.host}:{args.port}/  (Ctrl-C stops)", flush=True)
    server.run(host=args.host, port=args.port, workers=args.workers)


if __name__ == "__main__":
    main()

"""packetron WebSocket echo for bench/websocket.py: every message goes back as it came.

One process, one worker, like every server in the bench. The handler is the plain one a
user would write; it accepts at the first receive. Run (from the repository root)::

    python bench/ws/packetron_echo.py --host 127.0.0.1 --port 8021

The route is ``/echo``.
"""

from __future__ import annotations

import os
import sys

# Run as ``python bench/ws/packetron_echo.py``, Python puts bench/ws/ first on sys.path;
# the repository root takes its place, so that ``packetron`` imports from the checkout
# (and bench/http.py can never shadow the standard library's ``http``).
WS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(WS_DIR))
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == WS_DIR:
    sys.path[0] = REPO_ROOT

import argparse  # noqa: E402
from typing import Any  # noqa: E402

from packetron import Packetron, WebSocket  # noqa: E402


def build(host: str, port: int) -> Packetron:
    """The echo app: one WebSocket route, ``/echo``."""
    server = Packetron(host=host, port=port, workers=1)

    @server.websocket("echo")
    async def echo(ws: WebSocket, request: Any) -> None:
        async for message in ws:
            await ws.send(message)

    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8021)
    args = parser.parse_args(argv)
    build(args.host, args.port).run()


if __name__ == "__main__":
    main()

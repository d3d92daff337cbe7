"""A raw ASGI WebSocket echo (no framework) for uvicorn in bench/websocket.py.

Every message goes back as it came (``text`` as text, ``bytes`` as binary), on any path;
plain HTTP gets 404. Run by uvicorn with the WebSocket implementation under test::

    python -m uvicorn bench.ws.asgi_echo:app --ws websockets --loop uvloop --http httptools \
        --no-access-log --lifespan off --host 127.0.0.1 --port 8023
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept every WebSocket and echo it until the client disconnects."""
    if scope["type"] == "websocket":
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            event = await receive()
            if event["type"] == "websocket.receive":
                text = event.get("text")
                if text is not None:
                    await send({"type": "websocket.send", "text": text})
                else:
                    await send({"type": "websocket.send", "bytes": event.get("bytes") or b""})
            elif event["type"] == "websocket.disconnect":
                return
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"9")]})
        await send({"type": "http.response.body", "body": b"not found"})

"""Supporting code for the chat handlers (a nested package, so not an entry point)."""
from typing import Any

from packetron.net import Connection

CHANNEL = "chat"
MAX_LINE_BYTES = 1024


def who(conn: Connection) -> str:
    host, port = conn.remote_address
    return f"{host}:{port}"


def render(event: dict[str, Any]) -> bytes:
    """One chat event as a line of text."""
    if event["kind"] == "say":
        return f"<{event['who']}> {event['text']}\n".encode()
    return f"* {event['who']} {event['kind']}\n".encode()

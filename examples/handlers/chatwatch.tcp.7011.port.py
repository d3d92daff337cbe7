"""Read-only view of the chat on 7010: joins, lines and leaves. Try `nc 127.0.0.1 7011`."""
from packetron.net import Connection, HandlerContext

from chatroom import CHANNEL, render


async def handle(conn: Connection, ctx: HandlerContext) -> None:
    async with ctx.shared.subscribe(CHANNEL) as feed:
        conn.write(b"* watching the chat\n")
        async for event in feed:
            if conn.state != "open" or ctx.signal.aborted:
                break
            conn.write(render(event))

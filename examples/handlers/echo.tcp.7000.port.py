"""TCP echo: every byte comes back. Try: `nc 127.0.0.1 7000`."""
from packetron.net import Connection, HandlerContext


async def handle(conn: Connection, ctx: HandlerContext) -> None:
    async for chunk in conn:
        conn.write(chunk)
        await conn.drain()  # a peer that stops reading slows us down instead of filling memory

"""TCP echo: every byte comes back. Try: `nc 127.0.0.1 7000`."""


async def handle(conn, ctx):
    async for chunk in conn:
        conn.write(chunk)
        await conn.drain()  # a peer that stops reading slows us down instead of filling memory

"""Chat room: each line you send goes to everyone in the room (and to the watchers on 7011).

Try two terminals with `nc 127.0.0.1 7010`. Lines travel through ctx.shared pub/sub,
so the room also spans several brokers when they share Redis.
"""
import asyncio

from packetron.net import Connection, HandlerContext
from packetron.net.shared import Subscription

from chatroom import CHANNEL, MAX_LINE_BYTES, render, who


async def handle(conn: Connection, ctx: HandlerContext) -> None:
    me = who(conn)
    async with ctx.shared.subscribe(CHANNEL) as feed:
        forward = asyncio.create_task(_forward(feed, conn, me))
        try:
            await ctx.shared.publish(CHANNEL, {"kind": "joined", "who": me})
            while line := await conn.readline(max_size=MAX_LINE_BYTES):
                text = line.decode("utf-8", "replace").strip()
                if text:
                    await ctx.shared.publish(CHANNEL, {"kind": "say", "who": me, "text": text})
        finally:
            await ctx.shared.publish(CHANNEL, {"kind": "left", "who": me})
            forward.cancel()
            await asyncio.gather(forward, return_exceptions=True)


async def _forward(feed: Subscription, conn: Connection, me: str) -> None:
    async for event in feed:
        if event["who"] != me and conn.state == "open":
            conn.write(render(event))

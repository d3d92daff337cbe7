"""UDP counter: answers each datagram with how many datagrams the broker has seen.

Try: `echo hi | nc -u -w1 127.0.0.1 7001`. The count lives in ctx.shared, so it survives
a reload of this file and, with `--shared redis://...`, is shared by several brokers.
"""
from typing import Any

from packetron.net import HandlerContext


def open(ctx: HandlerContext) -> None:
    ctx.log.info("counter ready on udp/%d", ctx.port)


async def message(msg: bytes, rinfo: tuple[Any, ...], ctx: HandlerContext) -> None:
    n = await ctx.shared.incr("counter:datagrams")
    ctx.reply(b"%d\n" % n, rinfo)

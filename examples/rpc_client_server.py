"""FramingSocket RPC: a server answering framed requests, and a client with many in flight.

    python examples/rpc_client_server.py

Each frame is ``length (4 bytes) | rpc id (4 bytes) | payload``. The client chooses the
rpc id of each request and the answer carries it back, so answers may arrive in any
order. The client connects with retries, as it would to a server that is still starting.
"""
from __future__ import annotations

import asyncio
import json

from packetron.net import Connection, FramingSocket, TcpClient, TcpServer, serve_rpc


async def handler(rpc_id: int, payload: bytes) -> bytes:
    request = json.loads(payload)
    # Slower work for some ids: their answers overtake each other on the way back.
    await asyncio.sleep(0.01 * (rpc_id % 3))
    return json.dumps({"id": rpc_id, "sum": sum(request["numbers"])}).encode()


async def main() -> None:
    server = TcpServer(0, host="127.0.0.1")

    @server.on_connection
    async def serve(conn: Connection) -> None:
        await serve_rpc(conn, handler)

    async with server:
        rpc = FramingSocket(timeout=2.0)
        rpc.on("disconnected", lambda err: print("disconnected:", err))
        conn = await TcpClient("127.0.0.1", server.port).connect_with_retry(
            max_retries=3, initial_delay=0.1)
        rpc.attach(conn)
        answers = await asyncio.gather(*(
            rpc.request(i, json.dumps({"numbers": list(range(i))})) for i in range(1, 7)))
        for answer in answers:
            print(json.loads(answer))
        rpc.close()


if __name__ == "__main__":
    asyncio.run(main())

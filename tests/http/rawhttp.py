"""Raw-socket helpers: send exact bytes, read responses with h11 as an independent client."""
from __future__ import annotations

import socket

import h11


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def read_responses(sock: socket.socket, count: int = 1, *, method: bytes = b"GET",
                   methods: list[bytes] | None = None) -> list[tuple[h11.Response, bytes]]:
    """Read `count` complete responses from `sock`, checked by h11's client state machine.

    `methods` gives the method of each request when they differ (HEAD answers have no body).
    """
    client = h11.Connection(our_role=h11.CLIENT)
    # h11 must believe it sent requests to accept responses; feed it matching requests.
    results: list[tuple[h11.Response, bytes]] = []
    methods = methods or [method] * count
    for method in methods[:count]:
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            client.start_next_cycle()
        client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        response = None
        body = bytearray()
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                client.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed before a complete response")
        assert response is not None
        results.append((response, bytes(body)))
    return results


def exchange(port: int, payload: bytes, *, method: bytes = b"GET") -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on a fresh connection and return the first response."""
    with connect(port) as sock:
        sock.sendall(payload)
        (response, body), = read_responses(sock, 1, method=method)
    headers = {k.decode().lower(): v.decode() for k, v in response.headers}
    return response.status_code, headers, body


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = bytearray()
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def status_of(raw: bytes) -> int:
    """Status code of the first response in raw bytes."""
    line = raw.split(b"\r\n", 1)[0]
    return int(line.split()[1])


def still_serves(port: int, path: bytes = b"/ping") -> bool:
    """A fresh connection still gets an answer (the worker survived)."""
    status, _, _ = exchange(port, b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    return status in (200, 404)

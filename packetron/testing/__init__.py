"""Test clients that drive a packetron application in memory.

    from packetron.testing import TestClient

    with TestClient(server) as client:          # startup hooks run here
        response = client.post("/api/echo", json={"a": 1})
        assert response.status_code == 200 and response.json() == {"a": 1}

The real HTTP protocol answers every request, fed bytes directly (no socket, no thread);
h11, an independent HTTP/1.1 implementation, writes the requests and parses the answers.
`AsyncTestClient` is the same for async tests (`async with`, `await client.get(...)`).
"""
from __future__ import annotations

from packetron.testing.client import DEFAULT_TIMEOUT, AsyncTestClient, RequestOptions, TestClient
from packetron.testing.cookies import CookieJar
from packetron.testing.errors import (ConnectionClosed, IncompleteResponse, InvalidResponse,
                                      ResponseTimeout, TestClientError, TooManyRedirects)
from packetron.testing.response import ResponseHeaders, TestResponse
from packetron.testing.websocket import (AsyncWebSocketTestSession, WebSocketRejected,
                                         WebSocketTestSession)

__all__ = ["TestClient", "AsyncTestClient", "TestResponse", "ResponseHeaders", "CookieJar",
           "RequestOptions", "DEFAULT_TIMEOUT", "TestClientError", "ResponseTimeout",
           "InvalidResponse", "TooManyRedirects", "ConnectionClosed", "IncompleteResponse",
           "WebSocketTestSession", "AsyncWebSocketTestSession", "WebSocketRejected"]

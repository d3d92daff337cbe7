"""The access log line: method, target, status, bytes, duration, user agent, request id."""
from __future__ import annotations

import json
import logging
import re

import requests

from packetron.plugins import request_id


def test_text_access_line(make_server, caplog) -> None:
    server = make_server(access_log=True)
    server.get("hello", lambda request, response: response.send_text_plain("hello!"))
    server.start()
    with caplog.at_level(logging.INFO, logger="packetron.access"):
        requests.get(server.url + "/hello?x=1", headers={"User-Agent": "probe/1.0"}, timeout=5)
        requests.get(server.url + "/missing", headers={"User-Agent": "probe/1.0"}, timeout=5)
        server.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "packetron.access"]
    assert len(lines) == 2
    assert re.fullmatch(r'127\.0\.0\.1 "GET /hello\?x=1 HTTP/1\.1" 200 6 \d+\.\dms "probe/1\.0" -',
                        lines[0]), lines[0]
    assert re.fullmatch(r'127\.0\.0\.1 "GET /missing HTTP/1\.1" 404 9 \d+\.\dms "probe/1\.0" -',
                        lines[1]), lines[1]


def test_json_access_line_carries_the_request_id(make_server, caplog) -> None:
    server = make_server(access_log=True, access_log_format="json", plugins=[request_id()])
    server.post("echo", lambda request, response: response.send_json({"ok": True}))
    server.start()
    with caplog.at_level(logging.INFO, logger="packetron.access"):
        requests.post(server.url + "/echo", headers={"X-Request-ID": "abc-123",
                                                     "User-Agent": "probe"}, timeout=5)
        server.stop()
    [line] = [r.getMessage() for r in caplog.records if r.name == "packetron.access"]
    record = json.loads(line)
    assert record.pop("duration_ms") >= 0
    assert record == {"peer": "127.0.0.1", "method": "POST", "target": "/echo",
                      "http_version": "1.1", "status": 200, "bytes": 11,
                      "user_agent": "probe", "request_id": "abc-123"}

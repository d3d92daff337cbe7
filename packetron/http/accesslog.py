"""One access-log line per answered request, as text or JSON.

Text: `PEER "METHOD TARGET HTTP/V" STATUS BYTES DURATIONms "USER-AGENT" REQUEST-ID`
(a dash where a value is missing), close to nginx's combined format; JSON: one object
per line with the same fields, for log shippers.
"""
from __future__ import annotations

import json
from typing import Any

__all__ = ["format_access_line"]


def format_access_line(fmt: str, peer: str, method: str, target: str, http_version: str,
                       status: int, size: int, duration: float, user_agent: str | None,
                       request_id: str | None) -> str:
    """The access-log line of one request (`duration` in seconds)."""
    milliseconds = round(duration * 1000.0, 3)
    if fmt == "json":
        record: dict[str, Any] = {
            "peer": peer, "method": method, "target": target, "http_version": http_version,
            "status": status, "bytes": size, "duration_ms": milliseconds,
            "user_agent": user_agent, "request_id": request_id}
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    agent = (user_agent or "-").replace('"', "'")
    return (f'{peer} "{method} {target} HTTP/{http_version}" {status} {size} '
            f'{milliseconds:.1f}ms "{agent}" {request_id or "-"}')

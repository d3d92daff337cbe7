"""Shipped plugins, built only on packetron.http's public API.

Each function returns a `Plugin`; attach it with `Packetron(plugins=[...])`,
`server.insert_global_plugin(p)` or a route's `plugins=`.
"""
from __future__ import annotations

from packetron.plugins.compression import compress
from packetron.plugins.crossorigin import cors
from packetron.plugins.csrftoken import csrf
from packetron.plugins.prometheus import metrics
from packetron.plugins.requestid import request_id
from packetron.plugins.securityheaders import security_headers
from packetron.plugins.sessioncookie import sessions

__all__ = ["cors", "security_headers", "csrf", "request_id", "sessions", "compress",
           "metrics"]

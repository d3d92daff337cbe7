"""The example server: a JSON API, static files and an upload form.

    python examples/app.py --port 3000        # then open http://127.0.0.1:3000/
    packetron serve examples.app:server --port 3000 --workers 4

Uploads are kept under $PACKETRON_EXAMPLE_STORAGE (default: <tempdir>/packetron-example)
and read from disk on every request, so any number of workers serves them.

The page and the upload endpoint come from examples/site_server.py; this file adds a small
JSON API on top of them:

    curl http://127.0.0.1:3000/api/status
    curl -d '{"a": [1, 2]}' http://127.0.0.1:3000/api/echo
    curl 'http://127.0.0.1:3000/api/hello?name=you'
    curl -H 'X-Token: demo' http://127.0.0.1:3000/api/secret
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # so `site_server` imports whether run as a script or as examples.app

from packetron import (  # noqa: E402
    HandlerFlags, Packetron, Plugin, PluginPriority, Request, Response)
from site_server import build_server as build_site  # noqa: E402

DEFAULT_STORAGE = os.environ.get("PACKETRON_EXAMPLE_STORAGE") or os.path.join(
    tempfile.gettempdir(), "packetron-example")


def build_server(port: int = 3000, host: str = "127.0.0.1",
                 storage: str = DEFAULT_STORAGE) -> Packetron:
    """The site (static page, POST /upload, GET /files) plus the JSON API (not started)."""
    server = build_site(storage, port=port, host=host)

    @server.get("api/status")
    def status(request: Request, response: Response) -> None:
        response.send_json({"status": "ok", "server": "packetron"})

    @server.post("api/echo", flags=HandlerFlags.JSON_BODY)
    def echo(request: Request, response: Response) -> None:
        response.send_json(request.body)

    @server.get("api/hello")
    async def hello(request: Request, response: Response) -> None:
        name = request.get_query_params().get("name", "world")
        response.send_json({"hello": name})

    def require_token(request: Request, response: Response) -> bool:
        # A route-local plugin: it runs before the handler and before the body is read.
        if request.headers.get("x-token") != "demo":
            response.send_json({"error": "send the header X-Token: demo"}, status=401)
            return True
        return False

    @server.get("api/secret", plugins=[Plugin.create(PluginPriority.HIGH, require_token)])
    def secret(request: Request, response: Response) -> None:
        response.send_json({"secret": 42})

    return server


# `packetron serve examples.app:server` finds this one.
server = build_server()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"packetron example on http://{args.host}:{args.port}/  (Ctrl-C stops)", flush=True)
    server.run(host=args.host, port=args.port, workers=args.workers)


if __name__ == "__main__":
    main()

"""The example server: a JSON API, static files and an upload form.

    python examples/app.py --port 3000
"""
from __future__ import annotations

import argparse
import logging
import os

from packetron import HandlerFlags, Packetron, Plugin, PluginPriority

HERE = os.path.dirname(os.path.abspath(__file__))
SITE = os.path.join(HERE, "site")


def build_server(port: int = 3000, host: str = "127.0.0.1", workers: int = 1) -> Packetron:
    server = Packetron(port=port, host=host, workers=workers)

    @server.get("api/status")
    def status(request, response):
        response.send_json({"status": "ok", "server": "packetron"})

    @server.post("api/echo", flags=HandlerFlags.JSON_BODY)
    def echo(request, response):
        response.send_json(request.body)

    @server.get("api/hello")
    async def hello(request, response):
        name = request.get_query_params().get("name", "world")
        response.send_json({"hello": name})

    @server.post("api/upload", flags=HandlerFlags.MULTIPART_FORM_DATA,
                 multipart_options={"max_file_size": 64 * 1024 * 1024, "max_files": 10})
    async def upload(request, response):
        fields = await request.get_body()
        files = await request.get_files()
        response.send_json({"fields": fields, "files": files})

    def require_token(request, response):
        # A route-local plugin: runs before the handler (and before the body is read).
        if request.headers.get("x-token") != "demo":
            response.send_json({"error": "send the header X-Token: demo"}, status=401)
            return True
        return False

    @server.get("api/secret", plugins=[Plugin.create(PluginPriority.HIGH, require_token)])
    def secret(request, response):
        response.send_json({"secret": 42})
    if os.path.isdir(SITE):
        server.serve(SITE)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    server = build_server(args.port, args.host, args.workers)
    print(f"packetron example on http://{args.host}:{args.port}/  (Ctrl-C stops)", flush=True)
    server.run()


if __name__ == "__main__":
    main()

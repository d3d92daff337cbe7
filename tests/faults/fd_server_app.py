"""A server run as its own process by tests/faults/test_fd_exhaustion.py, usually with a
low RLIMIT_NOFILE set by the test before it starts.

    python fd_server_app.py http   [--asyncio]        # Packetron, workers=1: GET /ping, GET /big,
                                                      # POST /upload (multipart, to disk)
    python fd_server_app.py broker PORT [--asyncio]   # a Broker folder: an echo port

Prints its port on stdout once it accepts, logs to stderr, and stops on SIGTERM.
`--asyncio` runs without uvloop (as when it is not installed).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

if "--asyncio" in sys.argv:
    sys.modules["uvloop"] = None  # type: ignore[assignment]  # import fails: asyncio's loop

ECHO_HANDLER = """
async def handle(conn, ctx):
    async for chunk in conn:
        conn.write(chunk)
"""


def run_http() -> None:
    from packetron import HandlerFlags, Packetron

    server = Packetron(port=0, host="127.0.0.1", workers=1)
    uploads = tempfile.mkdtemp(prefix="fd-uploads-")

    @server.get("ping")
    def ping(request, response):
        response.send_text_plain("pong")

    @server.post("upload", flags=HandlerFlags.MULTIPART_FORM_DATA,
                 multipart_options={"file_storage_directory": uploads})
    async def upload(request, response):
        files = await request.get_files()
        for entry in files.values():
            os.unlink(entry["path"])
        response.send_json({"files": len(files)})

    # A file too big for the small-file cache: each GET opens it.
    big = Path(uploads) / "big.bin"
    big.write_bytes(b"b" * (1 << 20))
    server.serve_file("big", str(big))

    server.start()
    print(server.port, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop(timeout=2)


def run_broker(port: int) -> None:
    from packetron.net import Broker

    async def main() -> None:
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, f"echo.tcp.{port}.port.py").write_text(ECHO_HANDLER)
            broker = Broker(folder, host="127.0.0.1", poll_interval=None)
            await broker.start(require_ports=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            print(port, flush=True)
            await stop.wait()
            await broker.stop(timeout=2)

    if "--asyncio" in sys.argv:
        asyncio.run(main())
    else:
        import uvloop

        uvloop.run(main())


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if sys.argv[1] == "http":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        run_http()
    else:
        run_broker(int(sys.argv[2]))


if __name__ == "__main__":
    main()

"""A multi-worker server run as its own process by tests/test_workers.py.

Routes: GET /api/pid answers the serving worker's pid; GET /slow writes a marker file,
then answers after SLOW_SECONDS; GET /boom raises (logged at ERROR by packetron).

--mode run (default): Packetron.run(), stopped by SIGINT or SIGTERM, as the CLI does.
--mode start: Packetron.start(), then this script waits for signals itself: SIGUSR1
registers GET /late on the running server; SIGINT or SIGTERM stop it.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from packetron import Packetron, ServerFlags

SLOW_SECONDS = 2.0


def build(args: argparse.Namespace) -> Packetron:
    flags = ServerFlags.STOP_ON_ERROR if args.stop_on_error else 0
    server = Packetron(port=args.port, host="127.0.0.1", workers=args.workers, flags=flags)

    @server.get("api/pid")
    def pid(request, response):
        response.send_json({"pid": os.getpid()})

    @server.get("slow")
    async def slow(request, response):
        with open(os.path.join(args.marker_dir, f"slow-{os.getpid()}"), "w"):
            pass
        await asyncio.sleep(SLOW_SECONDS)
        response.send_json({"pid": os.getpid()})

    @server.get("boom")
    def boom(request, response):
        raise RuntimeError("boom")

    return server


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mode", choices=("run", "start"), default="run")
    parser.add_argument("--stop-on-error", action="store_true")
    parser.add_argument("--marker-dir", default=".")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(process)d %(name)s %(levelname)s %(message)s")
    server = build(args)
    if args.mode == "run":
        server.run()
        return 0
    # start mode: signals are taken with sigwait, so no handler runs in the middle of
    # anything; the workers unblock them for themselves.
    wanted = {signal.SIGUSR1, signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    server.start()
    print(f"started {os.getpid()}", flush=True)
    while True:
        signum = signal.sigwait(wanted)
        if signum == signal.SIGUSR1:
            server.get("late", lambda request, response: response.send_json(
                {"pid": os.getpid(), "late": True}))
            continue
        server.stop()
        return 0


if __name__ == "__main__":
    sys.exit(main())

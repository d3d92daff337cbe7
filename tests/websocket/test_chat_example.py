"""examples/chat.py works with two workers: the page is served, and two clients on
different worker processes chat through server.channels."""
from __future__ import annotations

import asyncio
import json
import pathlib
import subprocess
import sys
import time
from typing import Any

import requests
import websockets

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_chat_example_with_two_workers() -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "examples/chat.py", "--port", str(port),
                             "--workers", "2"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:  # readiness: the page answers
            try:
                page = requests.get(base + "/", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        assert page.status_code == 200 and "new WebSocket" in page.text

        async def chat() -> None:
            url = f"ws://127.0.0.1:{port}/chat/test?name="
            people: dict[int, Any] = {}
            for attempt in range(200):
                ws = await websockets.connect(url + f"p{attempt}")
                pid = json.loads(await ws.recv())["pid"]
                if pid in people:
                    await ws.close()
                    continue
                people[pid] = ws
                if len(people) == 2:
                    break
            assert len(people) == 2, "both clients landed on one worker"
            (pid_a, ann), (pid_b, bob) = people.items()
            try:
                await ann.send("hello from a")
                for ws in (ann, bob):
                    while True:
                        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        if event["type"] == "message":
                            break
                    assert event["text"] == "hello from a" and event["pid"] == pid_a
            finally:
                await ann.close()
                await bob.close()

        asyncio.run(asyncio.wait_for(chat(), 30))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -15)

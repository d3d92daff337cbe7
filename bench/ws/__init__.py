"""Peer apps for bench/websocket.py (the Node.js peer and load generator are in node/)."""

"""The server layer: Packetron's lifecycle, worker processes and OS integration."""
from __future__ import annotations

from packetron.server.lifecycle import Packetron

__all__ = ["Packetron"]

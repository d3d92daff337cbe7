"""Named loggers. Only the CLI configures handlers; modules log with %-style args."""
from __future__ import annotations

import logging

server_logger = logging.getLogger("packetron.server")
access_logger = logging.getLogger("packetron.access")
net_logger = logging.getLogger("packetron.net")
worker_logger = logging.getLogger("packetron.worker")

INTERNAL_LOGGERS = (server_logger, net_logger, worker_logger)


def silence_internal_logs() -> None:
    """ServerFlags.SILENCE_INTERNAL_LOGS: only errors from packetron itself get through."""
    for logger in INTERNAL_LOGGERS:
        logger.setLevel(logging.ERROR)

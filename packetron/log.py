"""Named loggers. Only the CLI configures handlers; modules log with %-style args."""
from __future__ import annotations

import logging
from typing import Callable

server_logger = logging.getLogger("packetron.server")
access_logger = logging.getLogger("packetron.access")
net_logger = logging.getLogger("packetron.net")
worker_logger = logging.getLogger("packetron.worker")

INTERNAL_LOGGERS = (server_logger, net_logger, worker_logger)


def silence_internal_logs() -> Callable[[], None]:
    """ServerFlags.SILENCE_INTERNAL_LOGS: only errors from packetron itself get through.

    Returns:
        A function that puts the previous levels back: a server silences the loggers for
        the time it runs, not for the rest of the process.
    """
    previous = [(logger, logger.level) for logger in INTERNAL_LOGGERS]
    for logger in INTERNAL_LOGGERS:
        logger.setLevel(logging.ERROR)

    def restore() -> None:
        for logger, level in previous:
            logger.setLevel(level)

    return restore

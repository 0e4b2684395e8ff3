"""Log records the server owns, as operators should read them.

aiohttp logs a request it cannot parse (a URL with bytes that are not URL characters, a
broken request line) at ERROR with a traceback, though it is the client's mistake and is
answered 400. A scanner or a badly encoded link would fill the log with tracebacks that look
like our bugs: such a record becomes one INFO line naming the peer and the reason.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

SERVER_LOGGER = "aiohttp.server"


class UnreadableRequests(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and exc.code == 400:
            reason = (str(exc.message).strip().splitlines() or ["bad request"])[0].rstrip(":")
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "unreadable request from %s answered 400: %s"
            record.args = (peer, reason)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_unreadable_requests() -> None:
    """Install the filter once (create_app may run many times in one process)."""
    logger = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(f, UnreadableRequests) for f in logger.filters):
        logger.addFilter(UnreadableRequests())

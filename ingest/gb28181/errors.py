"""Errors of the GB/T 28181 stack.

Protocol problems caused by a peer never escape as exceptions from the server: they become a
SIP 4xx with a counted reason. These classes exist so the parts can say precisely why, and so
callers of the client side (queries, INVITE) can tell a timeout from a refusal.
"""

from __future__ import annotations

from ingest.errors import IngestError


class Gb28181Error(IngestError):
    """Base of everything the GB/T 28181 stack raises on purpose."""


class SipParseError(Gb28181Error):
    """A SIP message could not be parsed; the message is a short reason, never the input."""


class MessageTooLarge(SipParseError):
    """A SIP message or its body exceeds the configured cap."""


class ManscdpError(Gb28181Error):
    """A MANSCDP body is not usable XML or lacks CmdType/SN/DeviceID."""


class BodyCharsetError(ManscdpError):
    """A MANSCDP body is text in none of the charsets GB/T 28181 devices use."""


class TransactionTimeout(Gb28181Error):
    """A request we sent got no final response before Timer F/B fired."""


class TransactionLimit(Gb28181Error):
    """Too many requests of ours are in flight; try again later."""


class RequestRefused(Gb28181Error):
    """The peer answered a request of ours with a final non-2xx response."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"peer answered {status} {reason}")
        self.status = status
        self.reason = reason


class DeviceNotRegistered(Gb28181Error):
    """A request was meant for a device that has no live registration."""

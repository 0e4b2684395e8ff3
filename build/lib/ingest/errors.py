"""Errors of the ingest package.

Only problems with a whole file raise (`LedgerFormatError`): the file cannot be decoded, has no
header, lacks the columns a camera needs, or names one field twice. Problems with single rows
are reported alongside the rows (`LedgerChunk.problems`) so one bad row never stops an import
of millions.
"""

from __future__ import annotations


class IngestError(Exception):
    """Base of everything the ingest package raises on purpose."""


class LedgerFormatError(IngestError):
    """The ledger file as a whole cannot be read; the message says where and what to do.

    `line` is the line (CSV), sheet row (XLSX) or feature index (GeoJSON) at fault, as the user
    numbers it, or None when the problem is not tied to one place (e.g. the file is empty).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        where: str = "line",
    ) -> None:
        prefix = file or ""
        if line is not None:
            prefix = f"{prefix} {where} {line}".strip()
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.reason = message
        self.file = file
        self.line = line
        self.where = where


class MalformedXml(IngestError):
    """XML from a peer was refused: too large, not XML, not well-formed, or it declares a DTD.

    The message is a short reason meant for logs and counters; it never quotes the input, which
    a hostile peer controls.
    """

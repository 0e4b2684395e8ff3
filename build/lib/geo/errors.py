"""Exceptions raised by the ``geo`` package.

Callers (ingest, API) catch :class:`GeoError` to turn any coordinate problem into
a per-row validation message without also swallowing unrelated bugs.
"""

from __future__ import annotations


class GeoError(Exception):
    """Root of every error the geo package raises on purpose."""


class UnknownCRS(GeoError):
    """A coordinate-system name we cannot map, so converting would silently misplace points."""


class InvalidZone(GeoError):
    """A zone polygon we refuse to measure, because any answer would describe another area."""

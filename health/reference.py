"""A camera's scene reference as stored: the accepted picture and the baseline kept with it.

The reference (`camera_health.reference`, a 160×90 PNG) is what 场景变更, 遮挡 and 偏色 are
judged against; the baseline (`health.diagnosis.Baseline`) is the same sample's statistics,
against which the checks a scene's nature can pass (noise on fine texture, stripes on periodic
structure, contrast of a foggy view) judge change instead of an absolute bar. They are one
record: they come from one sample, are accepted together (by a technician, or as the first
clean diagnosis) and must be replaced together, so the baseline travels inside the PNG as a
standard `tEXt` chunk. Image readers skip it; a reference stored before baselines existed
simply has none, and then the absolute bars alone apply.
"""

from __future__ import annotations

import json
import struct
import zlib

import cv2
import numpy as np
from numpy.typing import NDArray

from health.diagnosis import Baseline

__all__ = ["decode_reference", "encode_reference"]

_KEYWORD = b"camreg-baseline"
_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_reference(picture: NDArray[np.uint8], baseline: Baseline | None) -> bytes | None:
    """The picture as PNG with the baseline in a `tEXt` chunk before the image data (None if
    OpenCV cannot encode it)."""
    ok, png = cv2.imencode(".png", picture)
    if not ok:
        return None
    data = png.tobytes()
    if baseline is None:
        return data
    text = json.dumps(baseline.as_dict(), separators=(",", ":")).encode("ascii")
    # IHDR is always first (8 signature + 4 length + 4 type + 13 data + 4 CRC = 33 bytes).
    return data[:33] + _chunk(b"tEXt", _KEYWORD + b"\0" + text) + data[33:]


def _baseline_chunk(png: bytes) -> Baseline | None:
    pos = len(_SIGNATURE)
    while pos + 8 <= len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        data = png[pos + 8 : pos + 8 + length]
        if kind == b"IDAT" or len(data) < length:
            return None  # ours sits before the image data
        if kind == b"tEXt" and data.startswith(_KEYWORD + b"\0"):
            try:
                return Baseline.from_dict(json.loads(data[len(_KEYWORD) + 1 :]))
            except (ValueError, UnicodeDecodeError):
                return None
        pos += 12 + length
    return None


def decode_reference(png: bytes | None) -> tuple[NDArray[np.uint8] | None, Baseline | None]:
    """(the stored reference as a BGR picture, its baseline): (None, None) when there is none
    or it is unreadable (then scene change and occlusion are not judged, nothing else changes),
    a picture without a baseline for a reference stored before baselines (absolute bars)."""
    if not png:
        return None, None
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if picture is None:
        return None, None
    baseline = _baseline_chunk(png) if png.startswith(_SIGNATURE) else None
    return np.asarray(picture, np.uint8), baseline

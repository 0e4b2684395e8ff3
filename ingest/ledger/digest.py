"""Digests of a CSV ledger's lines, so a re-import skips what an earlier import already merged.

Reading and validating a row costs ~20 µs of Python; an unchanged re-import of a province's
ledger is the common case (the same export, sent again with a few edits). A line's digest is
a 128-bit hash of its raw bytes together with everything else that decides what the line means: the
file's encoding, delimiter and header lines, the import's 坐标系 and scope, and
`DIGEST_VERSION`. The import keeps, per camera, the digest of the line it was last merged from
(`camera_import_rows`); a line whose digest is there, and whose camera has not been written
since, would validate to exactly what the camera holds, so it is counted unchanged and never
read again. Every other line goes through the reader and validator as before, in a copy of the
file where the skipped lines are blank rows (`write_remaining`), so row numbers, messages and
the reader's own checks are those of the whole file.

Only CSV in an ASCII-compatible encoding qualifies, and only when every record is one physical
line: a quoted cell spanning lines would make a line's digest say nothing about its record.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from ingest.ledger.read import Ledger

# Bump when validation, CRS conversion or the merge give a line a different meaning: every
# stored digest then stops matching, and the next import of each file validates all of it.
DIGEST_VERSION = b"camera-registry ledger line v1"
DIGEST_BYTES = 16
_BLOCK = 8 * 1024 * 1024
_CODECS = {"utf-8": "utf-8", "utf-8-sig": "utf-8", "gb18030": "gb18030"}


@dataclass(frozen=True)
class LineDigests:
    """The digest of every data line of a ledger, by physical line number (header = line 1)."""

    blob: bytes
    """`DIGEST_BYTES` per physical line, line 0 first; header and blank lines are all zero."""
    lines: NDArray[np.int64]
    """Data lines whose digest no other line of the file has (the only ones that may be
    skipped: a repeated line is a repeated 国标编码, which the validator must report)."""
    header_row: int
    """Physical line of the header row (lines before it are title rows)."""
    header_end: int
    """Byte offset where the data lines start."""
    width: int
    """Cells of the header row: a skipped line is replaced by a blank row this wide."""
    delimiter: str
    encoding: str
    rows: int
    """Non-blank data lines."""

    def digest(self, line: int) -> bytes:
        at = line * DIGEST_BYTES
        return self.blob[at : at + DIGEST_BYTES]


def _spans_lines(line: bytes, codec: str, delimiter: str) -> bool:
    """Whether the csv module would read on past this line (a quoted cell not closed on it).
    Lines start outside quotes here: every earlier line was a whole record."""
    try:
        text = line.decode(codec)
    except UnicodeDecodeError:
        return True  # the reader reports it; nothing to skip here
    reader = csv.reader(io.StringIO(text.rstrip("\r\n") + "\n\x00\n"), delimiter=delimiter,
                        strict=False)  # fmt: skip
    try:
        next(reader)
    except (csv.Error, StopIteration):
        return True
    return reader.line_num != 1


def line_digests(ledger: Ledger, *, crs: str, scope: str | None) -> LineDigests | None:
    """Digests of the ledger's data lines, or None when the file does not qualify (not CSV, not
    an ASCII-compatible encoding, old Mac line ends, a record spanning lines). CPU work (~1 µs
    a line): run it off the event loop."""
    if ledger.format != "csv" or ledger.header_row is None or ledger.encoding not in _CODECS:
        return None
    codec = _CODECS[ledger.encoding]
    delimiter = ledger.delimiter or ","
    width = ledger.width
    if width is None:
        return None
    # SHA-1 cut to 128 bits (it has CPU instructions: half MD5's cost here). A line crafted to
    # collide could only be left out (a skipped line writes nothing), never pass unvalidated.
    base = hashlib.sha1(DIGEST_VERSION, usedforsecurity=False)
    base.update(repr((ledger.encoding, delimiter, crs, scope)).encode())
    digests: list[bytes] = [bytes(DIGEST_BYTES)] * (ledger.header_row + 1)
    data: list[int] = []
    with ledger.path.open("rb") as fh:
        for _ in range(ledger.header_row):
            head = fh.readline()
            if b"\r" in head.rstrip(b"\r\n") or not head.endswith(b"\n"):
                return None
            base.update(head)
        header_end = fh.tell()
        line_no = ledger.header_row
        for buf, lines, _ in _line_blocks(fh):
            if buf.count(b"\r") != buf.count(b"\r\n"):
                return None  # a line break the reader counts that we would not
            quoted = b'"' in buf
            copy, add, zero = base.copy, digests.append, bytes(DIGEST_BYTES)
            for line in lines:
                line_no += 1
                if not line or line.isspace():
                    add(zero)
                    continue
                if quoted and b'"' in line and _spans_lines(line, codec, delimiter):
                    return None
                m = copy()
                m.update(line)
                add(m.digest()[:DIGEST_BYTES])
                data.append(line_no)
    blob = b"".join(digests)
    lines_arr = np.asarray(data, dtype=np.int64)
    if len(lines_arr):
        as_keys = np.frombuffer(blob, dtype=f"S{DIGEST_BYTES}")[lines_arr]
        _, inverse, counts = np.unique(as_keys, return_inverse=True, return_counts=True)
        lines_arr = lines_arr[counts[inverse] == 1]
    return LineDigests(
        blob, lines_arr, ledger.header_row, header_end, width, delimiter, ledger.encoding, len(data)
    )


def write_remaining(src: Path, dst: Path, digests: LineDigests, skip: NDArray[np.int64]) -> int:
    """Copy `src` to `dst` with the `skip` lines replaced by blank rows (the reader leaves
    those out silently, and every other line keeps its number); returns how many non-blank
    data lines remain."""
    codec = _CODECS[digests.encoding]
    blank = (digests.delimiter * (digests.width - 1) + "\r\n").encode(codec)
    n_lines = len(digests.blob) // DIGEST_BYTES
    skipped = np.zeros(n_lines + 1, dtype=bool)
    skipped[skip] = True
    data = np.zeros(n_lines + 1, dtype=bool)
    data[:n_lines] = np.frombuffer(digests.blob, dtype=f"S{DIGEST_BYTES}") != b""
    remaining = 0
    with src.open("rb") as fh, dst.open("wb") as out:
        out.write(fh.read(digests.header_end))
        line_no = digests.header_row
        for _, lines, ends in _line_blocks(fh):
            first = line_no + 1
            line_no += len(lines)
            keep = ~skipped[first : line_no + 1]
            remaining += int(np.count_nonzero(keep & data[first : line_no + 1]))
            pieces = [
                ln + b"\n" if k else blank for ln, k in zip(lines, keep.tolist(), strict=True)
            ]
            if not ends and keep[-1]:
                pieces[-1] = lines[-1]
            out.write(b"".join(pieces))
    return remaining


def _line_blocks(fh: BinaryIO) -> Iterator[tuple[bytes, list[bytes], bool]]:
    """The rest of `fh` in blocks of whole lines: (the block, its lines without their line
    feeds, whether its last line ended with one — only the file's last line may not)."""
    rest = b""
    while True:
        block = fh.read(_BLOCK)
        buf = rest + block if rest else block
        if not buf:
            return
        if not block:
            yield buf, [buf], False
            return
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            rest = buf
            continue
        buf, rest = buf[:cut], buf[cut:]
        lines = buf.split(b"\n")
        lines.pop()  # after the last line feed
        yield buf, lines, True

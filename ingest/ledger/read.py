"""Read a camera ledger (台账) — CSV, XLSX or GeoJSON — as raw cell text, in bounded chunks.

    with open_ledger("hefei.csv") as ledger:
        for chunk in ledger.chunks(50_000):
            chunk.rows      # int64 row numbers as the user sees them (line, sheet row, feature)
            chunk.columns   # canonical field -> stripped cell text, None for empty cells
            chunk.problems  # (row, field or "", message) for rows left out of `columns`

Values are not validated here (that is done, vectorised, on the columns); this module only
gets the text of every cell reliably and fast. Problems with the file as a whole raise
`LedgerFormatError`; problems with single rows are reported in the chunk and the row is left out.

CSV speed: a province's ledger has millions of rows, so the common case — a block of lines
without double quotes, every line with the header's number of cells — is split with two C
calls for the whole block (`replace` line breaks with a marker cell, `split` on the delimiter)
and sliced into columns, with no Python work per row. Blocks are small (64 KiB) so each pass
over their cells stays in the CPU cache. When only a few lines of a block have quotes (an
address with a comma, which Excel puts in quotes) the csv module reads just those lines; when
every cell is quoted (OpenCSV, QUOTE_ALL) the block is split at the quotes in one call.
Everything else — line breaks or escaped quotes in cells, ragged rows, blank lines, odd line
endings — goes to the csv module, which is always right and about half as fast.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain, compress, islice
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, cast

import numpy as np
from numpy.typing import NDArray

from camera_registry.fields import BY_NAME, canonical_header
from ingest.errors import LedgerFormatError

Format = Literal["csv", "xlsx", "geojson"]

_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "csv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".xls": "xlsx",  # calamine reads the old binary format too
    ".xlsb": "xlsx",
    ".ods": "xlsx",
    ".geojson": "geojson",
    ".json": "geojson",
}
_FORMAT_NAMES: dict[str, Format] = {
    "csv": "csv",
    "txt": "csv",
    "tsv": "csv",
    "xlsx": "xlsx",
    "xls": "xlsx",
    "excel": "xlsx",
    "geojson": "geojson",
    "json": "geojson",
}

_BLOCK = 64 * 1024  # bytes of CSV per block: small enough that passes over its cells hit the cache
_HEAD = 1 << 20  # bytes looked at to tell UTF-8 from GBK/GB18030
_HEADER_SEARCH = 10  # non-blank rows searched for the header (title rows above it are skipped)
_HOP_LINES = 16  # quote-free lines ahead needed to leave the csv module for the fast path
_MAX_QUOTED_LINES = 64  # per block; with more, the csv module reads the block
_ALL_QUOTED, _FEW_QUOTED = 0, 1
_CSV_SLICE = 32  # records the csv module reads between looks for the end of quoted lines
_CSV_BATCH = 1024  # records per batch from the csv module
_SHEET_BATCH = 2048
_FEATURE_BATCH = 2048

# Whitespace whose presence in a block makes the fast path strip cells (U+3000, the ideographic
# space, is looked for last: finding it costs as much as all the others together). Python's
# str.strip() strips a few more (U+1680, U+2000–U+200A, U+2028/9, U+202F, U+205F); looking for
# each of those in every block would cost more than stripping, so at cell edges they survive
# in the fast path.
_WS_PROBES = (" ", "\t", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0")
# Line breaks become this cell before splitting a block; a real cell is never exactly this.
_EOL_CELL = "\x00\ufdd0\x01"

_DELIMITER_NAMES = {",": "comma (,)", "\t": "tab", ";": "semicolon (;)"}

# "*国标编码" (required-column mark) and harmless unit suffixes such as "经度(度)" or
# "安装高度（米）" still name the field. Other bracketed suffixes do not: "经度(GCJ02)" or
# "安装高度(cm)" change the meaning of the values, so such columns are listed as ignored and
# the user renames them.
_REQUIRED_MARKS = "*＊"
_HARMLESS_SUFFIX = re.compile(
    r"\s*[(（\[【]\s*(?:必填|选填|可选|非必填|required|optional|度|°|deg|degrees?|米|m|meters?|"
    r"metres?|天|days?|十进制|十进制度|小数|yyyy-mm-dd|年-月-日|\d*位)\s*[)）\]】]\s*$",
    re.IGNORECASE,
)
_ANY_SUFFIX = re.compile(r"\s*[(（\[【][^()（）\[\]【】]*[)）\]】]\s*$")

_SHEET_NAME_HINTS = re.compile(r"台账|摄像|点位|监控|设备|camera|ledger", re.IGNORECASE)

Row = tuple[int, str, str]  # (row, field or "", message)


@dataclass
class LedgerChunk:
    """Up to `chunk_rows` rows of a ledger, as columns of raw cell text."""

    rows: NDArray[np.int64]
    """Row number of each entry of the columns, as the user sees it: CSV physical line
    (header = line 1), XLSX sheet row (1-based), GeoJSON feature index (0-based)."""
    columns: dict[str, list[str | None]]
    """Canonical field name -> stripped cell text per row; None for empty cells."""
    problems: list[Row] = field(default_factory=list)
    """(row, field or "", message) for rows left out of `columns`, one entry per row."""

    def __len__(self) -> int:
        return len(self.rows)


def cell_text(value: object) -> str | None:
    """The text a user typed for a typed cell value (XLSX, GeoJSON); None for an empty cell.

    Integral floats lose the ".0" Excel never shows ("12", not "12.0"); other floats keep every
    digit (`repr` is the shortest text that reads back as the same float); dates are ISO.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return number_text(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None and value.time() == dt.time():
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value).strip() or None


def number_text(value: float) -> str:
    """A float as ledgers write it: "12" for 12.0, full `repr` precision otherwise."""
    if value.is_integer() and abs(value) < 2.0**53:
        return str(int(value))
    return repr(value)


def _field_for(header: str) -> str | None:
    name = canonical_header(header)
    if name is not None:
        return name
    text = header.strip().lstrip(_REQUIRED_MARKS).strip()
    for _ in range(2):
        text = _HARMLESS_SUFFIX.sub("", text)
    return canonical_header(text) if text else None


@dataclass
class _Header:
    known: list[tuple[int, str]]  # (column index, field)
    headers: dict[str, str]  # field -> header as written
    ignored: list[str]
    duplicates: list[tuple[str, str, str]]  # (field, first header, second header)

    @property
    def fields(self) -> list[str]:
        return [f for _, f in self.known]

    def locates_cameras(self) -> bool:
        """Names the columns a camera needs: 国标编码, or 经度 and 纬度."""
        names = set(self.headers)
        return "gb_id" in names or {"lon", "lat"} <= names


def _map_header(cells: list[str]) -> _Header:
    head = _Header([], {}, [], [])
    for i, cell in enumerate(cells):
        if not cell:
            continue
        name = _field_for(cell)
        if name is None:
            if cell not in head.ignored:
                head.ignored.append(cell)
        elif name in head.headers:
            head.duplicates.append((name, head.headers[name], cell))
        else:
            head.known.append((i, name))
            head.headers[name] = cell
    return head


def _label(name: str) -> str:
    return f"{BY_NAME[name].label_zh}/{name}"


def _check_header(head: _Header, *, file: str, line: int | None, where: str) -> None:
    """Raise LedgerFormatError unless the header names each field once and locates cameras."""

    def fail(message: str) -> LedgerFormatError:
        return LedgerFormatError(message, file=file, line=line, where=where)

    for name, first, second in head.duplicates:
        raise fail(
            f'columns "{first}" and "{second}" both mean {_label(name)}; '
            "delete or rename one of them"
        )
    names = set(head.headers)
    missing: list[str] = []
    if "lon" in names and "lat" not in names:
        missing = ["lat"]
    elif "lat" in names and "lon" not in names:
        missing = ["lon"]
    elif "gb_id" not in names and not {"lon", "lat"} <= names:
        missing = ["lon", "lat", "gb_id"]
    if not missing:
        return
    hints = []
    for cell in head.ignored:
        base = _ANY_SUFFIX.sub("", cell.strip().lstrip(_REQUIRED_MARKS))
        guess = canonical_header(base) if base else None
        if guess is not None and guess in missing:
            hint = f'column "{cell}" was not recognised because of its suffix; rename it '
            hint += f'"{BY_NAME[guess].label_zh}"'
            if guess in ("lon", "lat"):
                hint += " and put the coordinate system in a 坐标系 column"
            hints.append(hint)
    if missing == ["lat"]:
        message = f"no column for {_label('lat')}; name the latitude column 纬度 or lat"
    elif missing == ["lon"]:
        message = f"no column for {_label('lon')}; name the longitude column 经度 or lon"
    else:
        found = ", ".join(f'"{c}"' for c in head.ignored[:8]) or "none"
        message = (
            f"no column for {_label('lon')} and {_label('lat')}, nor for {_label('gb_id')} "
            f"(columns found: {found}); name the coordinate columns 经度 and 纬度 (or lon and "
            "lat), or include the 国标编码 column"
        )
    if hints:
        message += "; " + "; ".join(hints)
    raise fail(message)


# --------------------------------------------------------------------------------------------
# Chunk assembly


@dataclass
class _Batch:
    rows: NDArray[np.int64]
    columns: dict[str, list[str | None]]
    problems: list[Row]


class Ledger:
    """An open ledger file. Use as a context manager; read it once with `chunks()`."""

    path: Path
    format: Format
    fields: list[str]
    """Canonical fields found, in file order (the keys of every chunk's `columns`)."""
    ignored_columns: list[str]
    """Headers that name no camera field (e.g. 备注): a warning for the user, not an error."""
    size_bytes: int
    headers: dict[str, str]
    """Field -> the header as written in the file (e.g. "lon" -> "经度(度)")."""
    header_row: int | None
    """Line (CSV) or sheet row (XLSX) of the header; None for GeoJSON."""
    encoding: str | None
    """CSV: the detected encoding ("utf-8", "utf-8-sig", "gb18030", "utf-16")."""
    delimiter: str | None
    width: int | None
    """CSV: cells of the header row."""
    sheet: str | None

    def __init__(self, path: Path, fmt: Format, backend: _Backend) -> None:
        self.path = path
        self.format = fmt
        self.size_bytes = backend.size_bytes
        self.fields = list(backend.header.fields)
        self.ignored_columns = list(backend.header.ignored)
        self.headers = dict(backend.header.headers)
        self.header_row = backend.header_row
        self.encoding = backend.encoding
        self.delimiter = backend.delimiter
        self.width = getattr(backend, "_ncols", None)
        self.sheet = backend.sheet
        self._backend = backend
        self._started = False
        self._finished = False

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Ledger {self.path.name} {self.format} fields={self.fields}>"

    def close(self) -> None:
        self._backend.close()

    def progress(self) -> float:
        """Fraction of the file consumed so far (bytes for CSV, rows for XLSX/GeoJSON), 0..1."""
        if self._finished:
            return 1.0
        return min(max(self._backend.progress(), 0.0), 1.0)

    def chunks(self, chunk_rows: int = 50_000) -> Iterator[LedgerChunk]:
        """The rows in chunks of at most `chunk_rows` rows and problems together."""
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        if self._started:
            raise RuntimeError("a ledger is read once; open it again to read it again")
        self._started = True
        return self._chunks(chunk_rows)

    def _chunks(self, limit: int) -> Iterator[LedgerChunk]:
        fields = self.fields
        rows: list[NDArray[np.int64]] = []
        cols: dict[str, list[str | None]] = {f: [] for f in fields}
        problems: list[Row] = []
        n = 0

        def flush() -> LedgerChunk:
            nonlocal rows, cols, problems, n
            arr = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
            chunk = LedgerChunk(arr, cols, problems)
            rows, cols, problems, n = [], {f: [] for f in fields}, [], 0
            return chunk

        for batch in self._backend.batches():
            todo = batch.problems
            total = len(batch.rows)
            pos = 0
            while todo or pos < total:
                room = limit - n - len(problems)
                if todo:
                    problems.extend(todo[:room])
                    todo = todo[room:]
                else:
                    take = min(room, total - pos)
                    if take == total:
                        rows.append(batch.rows)
                        for f in fields:
                            cols[f].extend(batch.columns[f])
                    else:
                        rows.append(batch.rows[pos : pos + take])
                        for f in fields:
                            cols[f].extend(batch.columns[f][pos : pos + take])
                    pos += take
                    n += take
                if n + len(problems) >= limit:
                    yield flush()
        self._finished = True
        if n or problems:
            yield flush()


class _Backend:
    header: _Header
    header_row: int | None = None
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    size_bytes: int = 0

    def batches(self) -> Iterator[_Batch]:
        raise NotImplementedError

    def progress(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _merge(a: _Batch, b: _Batch) -> _Batch:
    """The rows of `b` inserted among those of `a`, in file order (`b` has only a few rows)."""
    at = np.searchsorted(a.rows, b.rows)
    for k, i in enumerate((at + np.arange(len(at))).tolist()):
        for name, cells in a.columns.items():
            cells.insert(i, b.columns[name][k])
    return _Batch(np.insert(a.rows, at, b.rows), a.columns, a.problems + b.problems)


def _nones(cells: list[str]) -> list[str | None]:
    """Empty cells as None (the list itself when none is empty)."""
    if all(cells):
        return cast("list[str | None]", cells)
    return [v or None for v in cells]


def _strip_column(values: list[str] | tuple[str, ...]) -> list[str | None]:
    return _nones(list(map(str.strip, values)))


# --------------------------------------------------------------------------------------------
# CSV


class _Undecodable(Exception):
    def __init__(self, lines_before: int) -> None:
        super().__init__(lines_before)
        self.lines_before = lines_before


def _detect_encoding(fh: BinaryIO) -> tuple[str, int]:
    """(codec, BOM length). UTF-8 unless the first non-ASCII bytes are not UTF-8: then GB18030."""
    head = fh.read(_HEAD)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", len(codecs.BOM_UTF8)
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # before UTF-16: same start
        return "utf-32", 0
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", 0
    block, eof = head, len(head) < _HEAD
    while block.isascii() and not eof:  # look further for the first non-ASCII text
        block = fh.read(_HEAD)
        eof = len(block) < _HEAD
    if block.isascii():
        return "utf-8", 0
    try:
        codecs.getincrementaldecoder("utf-8")().decode(block, final=eof)
    except UnicodeDecodeError:
        return "gb18030", 0
    return "utf-8", 0


class _ByteBlocks:
    """Text of an ASCII-compatible encoding in blocks ending at a line break.

    "\\n" and "\\r" never occur inside a UTF-8 or GB18030 multi-byte character, so cutting the
    bytes at the last line break never splits a character.
    """

    def __init__(self, fh: BinaryIO, codec: str) -> None:
        self._fh = fh
        self._codec = codec
        self._rest = b""
        self.consumed = 0

    def next_block(self) -> str:
        buf = self._rest
        while True:
            data = self._fh.read(_BLOCK)
            if not data:
                block, self._rest = buf, b""
                break
            buf = buf + data if buf else data
            cut = buf.rfind(b"\n")
            if cut < 0 and len(buf) > 8 * _BLOCK:  # old Mac files end lines with "\r" only
                cut = buf.rfind(b"\r", 0, len(buf) - 1)
            if cut >= 0:
                block, self._rest = buf[: cut + 1], buf[cut + 1 :]
                break
        self.consumed += len(block)
        try:
            return block.decode(self._codec)
        except UnicodeDecodeError as exc:
            raise _Undecodable(block.count(b"\n", 0, exc.start)) from None


class _TextBlocks:
    """Text of a UTF-16 file (Excel's "Unicode text") in blocks ending at a line break."""

    def __init__(self, fh: BinaryIO) -> None:
        self._raw = fh
        self._fh = io.TextIOWrapper(fh, encoding="utf-16", newline="")
        self._rest = ""
        self.consumed = 0

    def next_block(self) -> str:
        buf = self._rest
        while True:
            try:
                data = self._fh.read(_BLOCK // 2)
            except UnicodeDecodeError:
                raise _Undecodable(buf.count("\n")) from None
            if not data:
                block, self._rest = buf, ""
                break
            buf += data
            cut = buf.rfind("\n")
            if cut < 0 and len(buf) > 4 * _BLOCK:
                cut = buf.rfind("\r", 0, len(buf) - 1)
            if cut >= 0:
                block, self._rest = buf[: cut + 1], buf[cut + 1 :]
                break
        self.consumed = self._raw.tell()
        return block


class _Lines:
    """Lines of `text[pos:]` for `csv.reader`, split like a file opened with newline=""
    ("\\n", "\\r\\n", "\\r"), then lines of further blocks while a quoted cell runs on.
    Iterating is C-level (StringIO); `position()` tells where reading stands."""

    def __init__(self, text: str, pos: int, more: Callable[[], str]) -> None:
        self.text = text
        self._io = io.StringIO(text, newline="")
        self._io.seek(pos)
        self._more = more

    def __iter__(self) -> Iterator[str]:
        return chain.from_iterable(self._sources())

    def _sources(self) -> Iterator[io.StringIO]:
        yield self._io
        while extra := self._more():
            self.text = extra
            self._io = io.StringIO(extra, newline="")
            yield self._io

    def position(self) -> tuple[str, int]:
        """(text, offset) of the next unread line; everything before it has been read."""
        return self.text, self._io.tell()


def _no_more() -> str:
    return ""


def _line_count(rows: list[list[str]]) -> int:
    """Physical lines the csv module read for these rows: one each, plus the line breaks
    kept inside their quoted cells."""
    n = len(rows)
    for row in rows:
        for cell in row:
            if "\n" in cell or "\r" in cell:
                n += cell.count("\n") + cell.count("\r") - cell.count("\r\n")
    return n


def _sniff_delimiter(text: str) -> str:
    best, best_count = ",", 0
    for line in text.split("\n", _HEADER_SEARCH + 1)[: _HEADER_SEARCH + 1]:
        for d in (",", "\t", ";"):
            count = line.count(d)
            if count > best_count:
                best, best_count = d, count
    return best


class _CsvBackend(_Backend):
    def __init__(self, path: Path, label: str) -> None:
        self._label = label
        self._fh: BinaryIO = path.open("rb")
        try:
            self._open()
        except BaseException:
            self._fh.close()
            raise

    def _open(self) -> None:
        fh = self._fh
        fh.seek(0, io.SEEK_END)
        self.size_bytes = fh.tell()
        fh.seek(0)
        codec, bom = _detect_encoding(fh)
        if codec == "utf-32":
            # Read as UTF-16 (its BOM starts the same) every other character would be NUL.
            raise LedgerFormatError(
                "the file is UTF-32 text, which no ledger tool writes; save it as CSV in "
                "UTF-8 (or GB18030), or as an Excel workbook",
                file=self._label,
            )
        fh.seek(bom)
        self.encoding = "utf-8-sig" if bom else codec
        self._codec = codec
        self._src: _ByteBlocks | _TextBlocks = (
            _TextBlocks(fh) if codec == "utf-16" else _ByteBlocks(fh, codec)
        )
        self._line = 0  # physical lines consumed before self._text[self._pos:]
        first = self._next_text()
        if not first.strip():
            raise LedgerFormatError(
                "the file is empty; export the ledger with its header row (国标编码, 点位名称, "
                "经度, 纬度, …) and the camera rows",
                file=self._label,
            )
        delim = _sniff_delimiter(first)
        self.delimiter = delim
        self._delim = delim
        self._marker = f"{delim}{_EOL_CELL}{delim}"
        self._probes = tuple(c for c in _WS_PROBES if c != delim)
        self._quoted_probes = _WS_PROBES  # quoted cells may hold the delimiter
        self._misses = [0, 0]  # blocks in a row that _all_quoted, _few_quoted_lines could not read
        self._find_header(first)

    def _find_header(self, text: str) -> None:
        src = _Lines(text, 0, self._next_text)
        reader = csv.reader(src, delimiter=self._delim, strict=False)
        first: tuple[int, _Header] | None = None
        chosen: tuple[int, list[str], _Header] | None = None
        seen = 0
        prev = 0
        while seen < _HEADER_SEARCH:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise self._csv_error(exc, prev + 1) from None
            line, prev = prev + 1, reader.line_num
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            seen += 1
            head = _map_header(cells)
            if first is None:
                first = (line, head)
            if head.locates_cameras():
                chosen = (line, cells, head)
                break
        if first is None:
            raise LedgerFormatError(
                "the file has no header row, only empty lines; export the ledger with its header "
                "row (国标编码, 点位名称, 经度, 纬度, …) and the camera rows",
                file=self._label,
            )
        if chosen is None:
            _check_header(first[1], file=self._label, line=first[0], where="line")
            raise AssertionError("unreachable: an unusable header passed the check")
        line, cells, head = chosen
        _check_header(head, file=self._label, line=line, where="line")
        self.header = head
        self.header_row = line
        self._ncols = len(cells)
        named = [i for i, c in enumerate(cells) if c]
        self._nnamed = named[-1] + 1 if named else 0  # trailing unnamed columns may be absent
        self._known = head.known
        self._text, self._pos = src.position()
        self._line = reader.line_num

    def close(self) -> None:
        self._fh.close()

    def progress(self) -> float:
        return self._src.consumed / self.size_bytes if self.size_bytes else 1.0

    def _next_text(self) -> str:
        try:
            return self._src.next_block()
        except _Undecodable as exc:
            enc = (
                "UTF-8"
                if self._codec == "utf-8"
                else "GBK/GB18030"
                if self._codec == "gb18030"
                else "UTF-16"
            )
            raise LedgerFormatError(
                f"the text here is not valid {enc}, the encoding the start of the file is in; "
                "save the whole ledger again in one encoding — in Excel choose "
                "“CSV UTF-8 (逗号分隔)(*.csv)”",
                file=self._label,
                line=self._line + exc.lines_before + 1,
                where="near line",
            ) from None

    def _csv_error(self, exc: csv.Error, line: int) -> LedgerFormatError:
        message = str(exc)
        if "field limit" in message:
            message = (
                'a double quote (") opens a cell that is never closed, so the rest of the file '
                "reads as one cell; close the quote or remove it"
            )
        else:
            message = f"cannot split the row into cells ({message}); check its double quotes"
        return LedgerFormatError(message, file=self._label, line=line)

    def batches(self) -> Iterator[_Batch]:
        text, pos = self._text, self._pos
        self._text = ""
        while True:
            if pos >= len(text):
                text, pos = self._next_text(), 0
                if not text:
                    return
            quote = text.find('"', pos)
            if quote < 0:
                yield from self._plain(text[pos:] if pos else text)
                pos = len(text)
                continue
            batch = None
            if quote == pos and self._worth(_ALL_QUOTED):  # every cell quoted, as many write them
                batch = self._learn(_ALL_QUOTED, self._all_quoted(text[pos:] if pos else text))
            if batch is None and self._worth(_FEW_QUOTED):
                batch = self._learn(_FEW_QUOTED, self._few_quoted_lines(text, pos, quote))
            if batch is not None:
                yield batch
                pos = len(text)
                continue
            # Quoted cells spanning lines, or many quoted lines: the csv module from the line
            # with the quote on, back to the fast path once quotes thin out.
            end = text.rfind("\n", pos, quote) + 1
            if end > pos:
                yield from self._plain(text[pos:end])
                pos = end
            yield from self._csv_section(text, pos)
            text, pos = self._text, self._pos

    def _worth(self, way: int) -> bool:
        """Whether to try a way of reading quoted lines: not after it failed for four blocks
        in a row (the file is not like that), except for every 32nd block."""
        misses = self._misses[way]
        if misses < 4 or misses % 32 == 0:
            return True
        self._misses[way] = misses + 1  # counts the blocks skipped too
        return False

    def _learn(self, way: int, batch: _Batch | None) -> _Batch | None:
        self._misses[way] = 0 if batch is not None else self._misses[way] + 1
        return batch

    def _plain(self, seg: str) -> Iterator[_Batch]:
        """Lines without double quotes: the fast path, or the csv module if they are irregular."""
        fast = self._fast(seg, self._line + 1)
        if fast is None:
            yield from self._csv_section(seg, 0, stop=True)
        else:
            batch, lines = fast
            self._line += lines
            yield batch

    def _all_quoted(self, seg: str) -> _Batch | None:
        """Lines whose every cell is in double quotes ("a","b"\\r\\n, as OpenCSV and QUOTE_ALL
        write them), split at the quotes in one call: the pieces alternate between cell text
        and what lies between cells, which must be exactly the delimiter or a line break.
        None when the lines are not like that (escaped quotes, unquoted cells, line breaks
        inside cells, rows of the wrong width)."""
        pieces = seg.split('"')
        if len(pieces) % 2 == 0 or pieces[0]:
            return None
        between = pieces[2::2]
        if not between[-1]:
            between[-1] = "\n"  # the last line of the file, without a line break
        delim, nc = self._delim, self._ncols
        if not set(between) <= {delim, "\n", "\r\n"}:
            return None
        n = between.count("\n") + between.count("\r\n")
        if len(between) != n * nc or delim in between[nc - 1 :: nc]:
            return None
        breaks = seg.count("\n")
        if breaks != n - (not seg.endswith("\n")) or seg.count("\r") != between.count("\r\n"):
            return None  # line breaks inside cells: the csv module numbers those lines
        cells: list[str] = pieces[1::2]
        first = self._line + 1
        rows = np.arange(first, first + n, dtype=np.int64)
        batch = self._columns(cells, nc, n, rows, seg, self._quoted_probes)
        self._line += n
        return batch

    def _few_quoted_lines(self, text: str, pos: int, quote: int) -> _Batch | None:
        """`text[pos:]` when only a few lines have double quotes, each a whole record (an even
        number of quotes, e.g. an address with a comma that Excel put in quotes): the csv module
        reads those lines and the fast path the rest. None when that does not apply."""
        spans: list[tuple[int, int]] = []
        while quote >= 0:
            start = max(text.rfind("\n", pos, quote) + 1, pos)
            end = text.find("\n", quote) + 1 or len(text)
            if text.count('"', start, end) % 2 or len(spans) >= _MAX_QUOTED_LINES:
                return None
            spans.append((start, end))
            quote = text.find('"', end)
        pieces: list[str] = []
        quoted: list[str] = []
        where: list[int] = []  # index of each quoted line among the lines of text[pos:]
        prev, count = pos, 0
        for start, end in spans:
            if start > prev:
                pieces.append(text[prev:start])
                count += text.count("\n", prev, start)
            line = text[start:end]
            if line.find("\r", 0, len(line) - 2) >= 0:
                return None  # a lone "\r" is a line break too: leave it to the csv module
            where.append(count)
            count += 1
            quoted.append(line)
            prev = end
        if prev < len(text):
            tail = text[prev:]
            pieces.append(tail)
            count += tail.count("\n") + (not tail.endswith("\n"))
        first = self._line + 1
        plain_lines = np.delete(np.arange(first, first + count, dtype=np.int64), where)
        plain = self._fast("".join(pieces), first, plain_lines) if pieces else None
        if pieces and plain is None:
            return None
        reader = csv.reader(quoted, delimiter=self._delim, strict=False)
        try:
            rows = list(reader)
        except csv.Error:
            return None
        if len(rows) != len(quoted) or reader.line_num != len(quoted):
            return None
        self._line += count
        batch = self._rows_batch(rows, [first + i for i in where])
        if plain is None:
            return batch
        return _merge(plain[0], batch)

    def _fast(
        self, seg: str, first: int, lines: NDArray[np.int64] | None = None
    ) -> tuple[_Batch, int] | None:
        """All lines split at once; None if a line is not a plain row of the header's width.

        Rows are numbered from `first`, or by `lines` (one number per line of `seg`)."""
        body = seg[:-1] if seg.endswith("\n") else seg
        marker, delim = self._marker, self._delim
        # Line breaks become marker cells; the growth of the text counts them.
        if "\r" in body:
            if body.endswith("\r"):
                body = body[:-1]
            s = body.replace("\r\n", marker)
            breaks = (len(s) - len(body)) // (len(marker) - 2)
            if "\n" in s:
                grown = s.replace("\n", marker)
                breaks += (len(grown) - len(s)) // (len(marker) - 1)
                s = grown
            if "\r" in s:
                return None
        else:
            s = body.replace("\n", marker)
            breaks = (len(s) - len(body)) // (len(marker) - 1)
        flat = s.split(delim)
        nc = self._ncols
        width = nc + 1
        n = breaks + 1
        # Every line has nc cells iff the markers, and only they, sit every width cells.
        if len(flat) != n * width - 1 or flat[nc::width].count(_EOL_CELL) != breaks:
            return None
        if lines is not None and len(lines) != n:
            return None
        rows = np.arange(first, first + n, dtype=np.int64) if lines is None else lines
        return self._columns(flat, width, n, rows, seg, self._probes), n

    def _columns(
        self,
        cells: list[str],
        width: int,
        n: int,
        rows: NDArray[np.int64],
        seg: str,
        probes: tuple[str, ...],
    ) -> _Batch:
        """The known columns of n rows laid out `width` cells apart in `cells` (the extra cell
        of the fast path is the line-break marker), stripped if `seg` holds any of `probes`,
        blank rows left out."""
        nc = self._ncols
        strip = False
        for c in probes:
            if c in seg:
                strip = True
                break
        else:
            strip = seg.find("\u3000") >= 0
        col0: list[str] = cells[0::width]
        if strip:
            col0 = list(map(str.strip, col0))
        blank: list[int] = []
        if not all(col0):
            blank = [
                i
                for i, v in enumerate(col0)
                if not v and not "".join(cells[i * width : i * width + nc]).strip()
            ]
        columns: dict[str, list[str | None]] = {}
        for idx, name in self._known:
            col: list[str] = col0 if idx == 0 else cells[idx::width]
            if strip and idx != 0:
                col = list(map(str.strip, col))
            columns[name] = _nones(col)
        if blank:
            keep = np.ones(n, dtype=bool)
            keep[blank] = False
            rows = rows[keep]
            mask = keep.tolist()
            columns = {k: list(compress(v, mask)) for k, v in columns.items()}
        return _Batch(rows, columns, [])

    def _csv_section(self, text: str, pos: int, *, stop: bool = False) -> Iterator[_Batch]:
        """Rows from `text[pos:]` with the csv module; afterwards (self._text, self._pos) is
        where it stopped.

        With `stop`, all of `text` (quote-free lines). Otherwise records until the file ends,
        a block ends at a record boundary, or the next double quote is at least _HOP_LINES
        lines ahead so that the fast path can take those lines.
        """
        src = _Lines(text, pos, _no_more if stop else self._next_text)
        reader = csv.reader(src, delimiter=self._delim, strict=False)
        base = self._line  # lines before text[pos:]
        done = 0  # lines read by the slices so far
        rows: list[list[str]] = []
        lines: list[int] = []
        while True:
            part: list[list[str]] = []
            try:
                part.extend(islice(reader, _CSV_SLICE))
            except csv.Error as exc:
                raise self._csv_error(exc, base + done + _line_count(part) + 1) from None
            first = base + done + 1
            if reader.line_num - done == len(part):  # one line each
                lines.extend(range(first, first + len(part)))
            else:
                for row in part:
                    lines.append(first)
                    first += _line_count([row])
            rows.extend(part)
            done = reader.line_num
            text, pos = src.position()
            if len(part) < _CSV_SLICE or (not stop and pos >= len(text)):
                break
            if not stop:
                quote = text.find('"', pos)
                if quote < 0 or text.count("\n", pos, quote) >= _HOP_LINES:
                    break
            if len(rows) >= _CSV_BATCH:
                yield self._rows_batch(rows, lines)
                rows, lines = [], []
        self._line = base + reader.line_num
        self._text, self._pos = text, pos
        if rows:
            yield self._rows_batch(rows, lines)

    def _rows_batch(self, rows: list[list[str]], lines: list[int]) -> _Batch:
        nc, nn = self._ncols, self._nnamed
        joined = list(map("".join, rows))
        problems: list[Row] = []
        if set(map(len, rows)) == {nc} and all(joined) and not any(map(str.isspace, joined)):
            good, good_lines = rows, lines  # the usual case: no Python work per row
        else:
            good, good_lines = [], []
            for row, line, text in zip(rows, lines, joined, strict=True):
                if not text or text.isspace():
                    continue  # blank row
                n = len(row)
                if n == nc or (n >= nn and not "".join(row[nn:]).strip()):
                    good.append(row)
                    good_lines.append(line)
                else:
                    problems.append((line, "", self._count_problem(row)))
        columns: dict[str, list[str | None]]
        if good:
            transposed = list(zip(*good, strict=False))
            columns = {name: _strip_column(transposed[idx]) for idx, name in self._known}
        else:
            columns = {name: [] for _, name in self._known}
        return _Batch(np.array(good_lines, dtype=np.int64), columns, problems)

    def _count_problem(self, row: list[str]) -> str:
        n, want = len(row), self._nnamed
        delim = _DELIMITER_NAMES.get(self._delim, repr(self._delim))
        if n > want:
            message = (
                f"the row has {n} cells but the header has {want} columns; a {delim} inside a "
                "cell splits it in two — put that cell in double quotes or remove the "
                f"{delim.split(' ')[0]}"
            )
        else:
            message = (
                f"the row has {n} cells but the header has {want} columns; add the missing "
                f"cells (an empty cell still needs its {delim.split(' ')[0]})"
            )
        if any("\n" in c or "\r" in c for c in row):
            message += (
                '; a double quote (") in this row opens a cell that runs over several lines '
                "— check the quotes"
            )
        return message


# --------------------------------------------------------------------------------------------
# XLSX (and the other workbook formats calamine reads)


def _typed_column(values: tuple[Any, ...]) -> list[str | None]:
    """Cell text of a column of typed cells (calamine gives "" for empty cells)."""
    kinds = set(map(type, values))
    if kinds == {str}:
        return _strip_column(values)
    if kinds <= {str, float}:  # a numeric column, perhaps with empty cells
        return [
            (v.strip() or None)
            if type(v) is str
            else repr(v)
            if not v.is_integer() or abs(v) >= 2.0**53
            else str(int(v))
            for v in values
        ]
    return [cell_text(v) for v in values]


def _gb_id_problem(value: object) -> str:
    shown = f"{value:.15g}" if isinstance(value, float) else str(value)
    return (
        f"国标编码 was stored as a number ({shown}) and lost digits; format the 国标编码 column "
        "as text in Excel and type the 20-digit codes again"
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _XlsxBackend(_Backend):
    def __init__(self, path: Path, label: str) -> None:
        import python_calamine as calamine  # imported here: CSV imports never need it

        self._label = label
        self.size_bytes = path.stat().st_size
        try:
            self._wb = calamine.CalamineWorkbook.from_path(str(path))
        except calamine.PasswordError:
            raise LedgerFormatError(
                "the workbook is protected by a password; remove the password in Excel "
                "(File → Info → Protect Workbook) and save it again",
                file=label,
            ) from None
        except (calamine.CalamineError, ValueError, OSError) as exc:
            raise LedgerFormatError(
                f"cannot read the workbook ({exc}); open it in Excel and save it again as an "
                "Excel workbook (.xlsx)",
                file=label,
            ) from None
        try:
            self._open()
        except BaseException:
            self._wb.close()
            raise

    def _open(self) -> None:
        meta = [m for m in self._wb.sheets_metadata if str(m.typ).endswith("WorkSheet")]
        visible = [m.name for m in meta if str(m.visible).endswith(".Visible")]
        hidden = [m.name for m in meta if m.name not in visible]
        # A sheet named like 台账/cameras first, then the others in workbook order.
        ordered = [n for n in visible if _SHEET_NAME_HINTS.search(n)]
        ordered += [n for n in visible + hidden if n not in ordered]
        ordered = ordered or list(self._wb.sheet_names)
        first_seen: tuple[str, int, _Header] | None = None
        for name in ordered:
            sheet = self._wb.get_sheet_by_name(name)
            found = self._find_header(sheet)
            if found is None:
                continue
            line, head, rows = found
            if first_seen is None:
                first_seen = (name, line, head)
            if head.locates_cameras():
                _check_header(head, file=self._label, line=line, where=f"sheet {name} row")
                self.header, self.header_row, self.sheet = head, line, name
                self._rows, self._next = rows, line + 1
                end = sheet.end
                self._total = (end[0] + 1) if end is not None else 1
                self._known = head.known
                self._merges = self._merged_below(sheet, line)
                return
        if first_seen is None:
            raise LedgerFormatError(
                "the workbook has no filled-in sheet; put the ledger with its header row "
                "(国标编码, 点位名称, 经度, 纬度, …) on the first sheet",
                file=self._label,
            )
        name, line, head = first_seen
        _check_header(head, file=self._label, line=line, where=f"sheet {name} row")
        raise AssertionError("unreachable: an unusable header passed the check")

    @staticmethod
    def _merged_below(sheet: Any, header_row: int) -> dict[int, list[tuple[int, int]]]:
        """Merged cells below the header: first row (0-based) -> [(column, last row)].

        A ledger kept for printing merges e.g. 建设单位 over the rows of all the cameras it
        owns; Excel keeps the value in the first row only, and every row covered means it."""
        col0 = sheet.start[1] if sheet.start is not None else 0
        merges: dict[int, list[tuple[int, int]]] = {}
        for (r0, c0), (r1, _c1) in sheet.merged_cell_ranges or ():
            if r0 >= header_row and r1 > r0:
                merges.setdefault(r0, []).append((c0 - col0, r1))
        return merges

    def _find_header(self, sheet: Any) -> tuple[int, _Header, Iterator[list[Any]]] | None:
        rows: Iterator[list[Any]] = iter(sheet.iter_rows())
        start = sheet.start
        offset: int | None = None
        index = 0
        seen = 0
        first: tuple[int, _Header] | None = None
        for row in rows:
            if offset is None:
                # iter_rows starts at row 1 or at the first filled row depending on the version;
                # the first filled row is never blank, so a blank first row means row 1.
                blank = all(v == "" for v in row)
                offset = 0 if (start is None or blank) else start[0]
            index += 1
            cells = [cell_text(v) or "" for v in row]
            if not any(cells):
                continue
            seen += 1
            head = _map_header(cells)
            line = offset + index
            if first is None:
                first = (line, head)
            if head.locates_cameras():
                return line, head, rows
            if seen >= _HEADER_SEARCH:
                break
        if first is None:
            return None
        return first[0], first[1], rows

    def close(self) -> None:
        self._wb.close()

    def progress(self) -> float:
        return (self._next - 1) / self._total

    def batches(self) -> Iterator[_Batch]:
        known = self._known
        gb_idx = next((i for i, f in known if f == "gb_id"), None)
        merges = self._merges
        spans: dict[int, tuple[int, Any]] = {}  # column -> (last row, value) of open merges
        while True:
            block = list(islice(self._rows, _SHEET_BATCH))
            if not block:
                return
            first = self._next
            self._next += len(block)
            width = len(block[0])
            good: list[list[Any]] = []
            lines: list[int] = []
            problems: list[Row] = []
            for i, row in enumerate(block):
                if merges:
                    r = first + i - 1
                    for c, (last, value) in list(spans.items()):
                        if r > last:
                            del spans[c]
                        elif row[c] == "":
                            row[c] = value
                    for c, last in merges.get(r, ()):
                        if 0 <= c < width:
                            spans[c] = (last, row[c])
                if row.count("") == width or (
                    isinstance(row[0], str)
                    and not row[0].strip()
                    and all(isinstance(v, str) and not v.strip() for v in row)
                ):
                    continue
                if gb_idx is not None and _is_number(row[gb_idx]):
                    problems.append((first + i, "gb_id", _gb_id_problem(row[gb_idx])))
                    continue
                good.append(row)
                lines.append(first + i)
            columns: dict[str, list[str | None]] = {}
            transposed = list(zip(*good, strict=True)) if good else []
            for idx, name in known:
                if not good:
                    columns[name] = []
                    continue
                columns[name] = _typed_column(transposed[idx])
            yield _Batch(np.array(lines, dtype=np.int64), columns, problems)


# --------------------------------------------------------------------------------------------
# GeoJSON


def _decode_text(data: bytes) -> str:
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("gb18030")


class _GeoJsonBackend(_Backend):
    def __init__(self, path: Path, label: str) -> None:
        self._label = label
        data = path.read_bytes()
        self.size_bytes = len(data)
        try:
            doc = json.loads(_decode_text(data))
        except UnicodeDecodeError:
            raise LedgerFormatError(
                "the file is neither UTF-8 nor GBK text; save it again as UTF-8", file=label
            ) from None
        except json.JSONDecodeError as exc:
            raise LedgerFormatError(
                f"not valid JSON ({exc.msg}, column {exc.colno}); fix the file or export it "
                "again from the GIS tool",
                file=label,
                line=exc.lineno,
            ) from None
        del data
        features: list[Any]
        if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
            features = doc.get("features") or []
            if not isinstance(features, list):
                raise LedgerFormatError(
                    '"features" is not a list; export the cameras as a GeoJSON FeatureCollection',
                    file=label,
                )
        elif isinstance(doc, dict) and doc.get("type") == "Feature":
            features = [doc]
        else:
            raise LedgerFormatError(
                'expected a GeoJSON FeatureCollection ({"type": "FeatureCollection", '
                '"features": [...]}); export the cameras as GeoJSON points',
                file=label,
            )
        self._features = features
        self._done = 0
        keys: dict[str, None] = {}
        has_point = False
        for feat in features:
            if not isinstance(feat, dict):
                continue
            props = feat.get("properties")
            if isinstance(props, dict) and not props.keys() <= keys.keys():
                keys.update(dict.fromkeys(props))
            if not has_point:
                geom = feat.get("geometry")
                has_point = isinstance(geom, dict) and geom.get("type") == "Point"
        key_list = list(keys)
        head = _map_header(key_list)
        self._keys = {name: key_list[i] for i, name in head.known}  # field -> property name
        if has_point:
            for name in ("lon", "lat"):
                if name not in head.headers:
                    head.known.append((-1, name))
                    head.headers[name] = "geometry"
        _check_header(head, file=label, line=None, where="feature")
        self.header = head

    def close(self) -> None:
        self._features = []

    def progress(self) -> float:
        total = len(self._features)
        return self._done / total if total else 1.0

    def batches(self) -> Iterator[_Batch]:
        fields = self.header.fields
        keys = self._keys
        features = self._features
        for start in range(0, len(features), _FEATURE_BATCH):
            rows: list[int] = []
            problems: list[Row] = []
            columns: dict[str, list[str | None]] = {f: [] for f in fields}
            for i, feat in enumerate(features[start : start + _FEATURE_BATCH], start):
                record, problem = self._record(feat, keys)
                if problem is not None:
                    problems.append((i, problem[0], problem[1]))
                    continue
                if all(v is None for v in record.values()):
                    continue
                rows.append(i)
                for f in fields:
                    columns[f].append(record.get(f))
            self._done = min(start + _FEATURE_BATCH, len(features))
            yield _Batch(np.array(rows, dtype=np.int64), columns, problems)

    @staticmethod
    def _record(
        feat: object, keys: dict[str, str]
    ) -> tuple[dict[str, str | None], tuple[str, str] | None]:
        if not isinstance(feat, dict) or feat.get("type", "Feature") != "Feature":
            return {}, (
                "",
                'this entry of "features" is not a GeoJSON Feature; give each camera as '
                '{"type": "Feature", "geometry": {"type": "Point", …}, "properties": {…}}',
            )
        props = feat.get("properties") or {}
        if not isinstance(props, dict):
            return {}, ("", '"properties" is not an object; give the camera fields as properties')
        record: dict[str, str | None] = {}
        for name, key in keys.items():
            value = props.get(key)
            if name == "gb_id" and isinstance(value, float):
                return {}, ("gb_id", _gb_id_problem(value))
            record[name] = cell_text(value)
        geom = feat.get("geometry")
        if geom is not None:
            kind = geom.get("type") if isinstance(geom, dict) else None
            if kind != "Point":
                return {}, (
                    "",
                    f"the geometry is a {kind or 'non-GeoJSON value'}, not a Point; give each "
                    "camera a Point at its position",
                )
            coords = cast(dict[str, Any], geom).get("coordinates")
            if (
                not isinstance(coords, list)
                or len(coords) < 2
                or not all(_is_number(c) for c in coords[:2])
            ):
                return {}, ("", "the Point has no [longitude, latitude] coordinates")
            record["lon"] = cell_text(coords[0])
            record["lat"] = cell_text(coords[1])
        return record, None


# --------------------------------------------------------------------------------------------


def _sniff_format(path: Path) -> Format | None:
    with path.open("rb") as fh:
        head = fh.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\xd0\xcf\x11\xe0"):
        return "xlsx"
    text = head.lstrip(codecs.BOM_UTF8).lstrip()
    if text.startswith(b"{"):
        return "geojson"
    return None


def is_csv(path: str | Path) -> bool:
    """Whether `open_ledger(path)` would read the file as CSV (by its content and extension)."""
    p = Path(path)
    sniffed = _sniff_format(p)
    by_ext = _EXTENSIONS.get(p.suffix.lower())
    fmt = (sniffed or "csv") if sniffed == "xlsx" or by_ext is None else by_ext
    return fmt == "csv"


def open_ledger(path: str | Path, *, format: str | None = None, label: str | None = None) -> Ledger:
    """Open a ledger and read its header; raises LedgerFormatError if the file is unusable.

    `format` is "csv", "xlsx" or "geojson" (or an extension such as "tsv", "json"); by default
    it comes from the file's content (workbooks, JSON) and extension (.csv .txt .tsv .xlsx
    .xls .geojson .json). `label` is the file's name in messages (default: the path's own):
    an upload, or a re-import's copy of the lines left to read, is stored under a name the
    user never chose.
    """
    p = Path(path)
    label = label or p.name
    fmt: Format | None
    if format is not None:
        fmt = _FORMAT_NAMES.get(format.lower().lstrip("."))
        if fmt is None:
            raise ValueError(f"unknown ledger format {format!r}; use csv, xlsx or geojson")
    else:
        sniffed = _sniff_format(p)
        by_ext = _EXTENSIONS.get(p.suffix.lower())
        fmt = (sniffed or "csv") if sniffed == "xlsx" or by_ext is None else by_ext
        if fmt == "xlsx" and sniffed != "xlsx":
            with p.open("rb") as fh:
                looks_html = fh.read(512).lstrip().lower().startswith((b"<", b"\xef\xbb\xbf<"))
            raise LedgerFormatError(
                (
                    "the file is a web page (HTML) saved with an Excel name"
                    if looks_html
                    else "the file is not an Excel workbook"
                )
                + "; open it in Excel and save it as an Excel workbook (.xlsx), or as CSV",
                file=label,
            )
    backend: _Backend
    if fmt == "csv":
        backend = _CsvBackend(p, label)
    elif fmt == "xlsx":
        backend = _XlsxBackend(p, label)
    else:
        backend = _GeoJsonBackend(p, label)
    return Ledger(p, fmt, backend)


__all__ = ["Ledger", "LedgerChunk", "cell_text", "number_text", "open_ledger"]

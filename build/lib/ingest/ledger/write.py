"""Export cameras as ledgers — CSV, GeoJSON, XLSX — with the columns `ledger_read` reads back.

An export re-imports unchanged: the header names are the canonical fields' Chinese labels (or
their English names), numbers are written the way `ledger_read` renders typed cells ("12"
for 12.0, every digit otherwise), dates are ISO. CSV and GeoJSON are produced as byte pieces
so the HTTP API can stream them:

    yield csv_header(fields)
    for batch in batches:
        yield csv_rows(batch, fields)

    yield geojson_prefix()
    first = True
    for batch in batches:
        if batch:
            yield geojson_features(batch, fields, first=first)
            first = False
    yield geojson_suffix()

Records are mappings keyed by canonical field name (missing keys are empty cells). The secret
fields (username, password) are never exported: asking for them raises ValueError.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from camera_registry.fields import BY_NAME, SECRET_FIELDS
from ingest.errors import IngestError
from ingest.ledger.read import number_text

XLSX_MAX_ROWS = 1_048_575  # an Excel sheet has 1,048,576 rows, one of them the header
_GEOMETRY = ("lon", "lat")


def _check_fields(fields: Sequence[str]) -> None:
    secret = sorted(SECRET_FIELDS.intersection(fields))
    if secret:
        raise ValueError(f"{', '.join(secret)} are secret and never exported")
    unknown = [f for f in fields if f not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown camera fields: {', '.join(unknown)}")
    if len(set(fields)) != len(fields):
        raise ValueError("a field is listed twice")


def header_labels(fields: Sequence[str], *, chinese: bool = True) -> list[str]:
    """Column headers as exports write them: 国标编码, 点位名称, … or gb_id, name, …"""
    _check_fields(fields)
    return [BY_NAME[f].label_zh if chinese else f for f in fields]


def _text(value: object) -> str:
    """Cell text of a value: None → "", integral floats without ".0", floats in full, dates ISO."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return number_text(value) if math.isfinite(value) else ""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None and value.time() == dt.time():
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _float_text(value: float) -> str:
    if value.is_integer() and abs(value) < 2.0**53:
        return str(int(value))
    return repr(value) if value - value == 0 else ""  # NaN and ±inf are empty cells


def _date_text(value: dt.date) -> str:
    return value.isoformat()


# Cell text by exact type, for speed; anything else goes through _text.
_BY_TYPE: dict[type, Callable[[Any], str]] = {float: _float_text, int: str, dt.date: _date_text}


_FORMULA_STARTS = ("=", "+", "-", "@")


def _excel_keeps(value: str) -> str:
    """A leading tab makes Excel keep a text cell as text, and `ledger_read` strips it again.

    Two kinds of text need it: digits Excel would turn into a number, losing digits (国标编码
    has 20) or leading zeros; and text Excel would run as a formula (CSV injection: a camera
    named "=HYPERLINK(…)" must not become a live link in a planner's spreadsheet).
    """
    if value.isdigit() and value.isascii() and (len(value) >= 12 or value[0] == "0"):
        return "\t" + value
    if value.startswith(_FORMULA_STARTS):
        return "\t" + value
    return value


# --------------------------------------------------------------------------------------------
# CSV


def csv_header(fields: Sequence[str], *, chinese: bool = True) -> bytes:
    """UTF-8 BOM (so Excel in China opens the file as UTF-8) and the header line."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(header_labels(fields, chinese=chinese))
    return codecs.BOM_UTF8 + out.getvalue().encode("utf-8")


def csv_rows(
    records: Iterable[Mapping[str, object]], fields: Sequence[str], *, excel_text: bool = True
) -> bytes:
    """CSV lines ("\\r\\n", as Excel writes them) for the records, UTF-8 without BOM.

    With `excel_text`, text cells of 12 or more digits, with a leading zero, or that Excel
    would read as a formula start with a tab so that Excel keeps them as text
    (see `_excel_keeps`).
    """
    _check_fields(fields)
    texts = [i for i, f in enumerate(fields) if BY_NAME[f].kind == "text"] if excel_text else []
    rows = []
    for record in records:
        row = [
            v if type(v) is str else "" if v is None else _BY_TYPE.get(type(v), _text)(v)
            for v in map(record.get, fields)
        ]
        for i in texts:
            cell = row[i]
            if cell and (cell[0] in "=+-@" or cell.isdigit()):
                row[i] = _excel_keeps(cell)
        rows.append(row)
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode("utf-8")


# --------------------------------------------------------------------------------------------
# GeoJSON


def geojson_prefix() -> bytes:
    return b'{"type":"FeatureCollection","features":[\n'


def geojson_suffix() -> bytes:
    return b"\n]}\n"


def _json_value(value: object) -> object:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return _text(value)


def _coordinate(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | Decimal):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def geojson_features(
    records: Iterable[Mapping[str, object]], fields: Sequence[str], *, first: bool
) -> bytes:
    """The records as GeoJSON Features, comma-separated; `first` means no feature has been
    written before (else the piece starts with a comma). An empty `records` gives b"".

    lon/lat become the Point geometry; the other fields are properties under their canonical
    names. A record without usable coordinates gets a null geometry and keeps whatever
    lon/lat it has as properties, so nothing is lost on re-import.
    """
    _check_fields(fields)
    geo = "lon" in fields and "lat" in fields
    others = [f for f in fields if not geo or f not in _GEOMETRY]
    features = []
    for record in records:
        geometry: dict[str, object] | None = None
        props = {
            f: v if v is None or type(v) is str else _json_value(v)
            for f, v in zip(others, map(record.get, others), strict=True)
        }
        if geo:
            lon, lat = _coordinate(record.get("lon")), _coordinate(record.get("lat"))
            if lon is not None and lat is not None:
                geometry = {"type": "Point", "coordinates": [lon, lat]}
            else:
                for f in _GEOMETRY:
                    if record.get(f) is not None:
                        props[f] = _json_value(record.get(f))
        features.append({"type": "Feature", "geometry": geometry, "properties": props})
    if not features:
        return b""
    # One call encodes the whole batch; "[" and "]" are left to the prefix and suffix.
    text = json.dumps(features, ensure_ascii=False, separators=(",", ":"))[1:-1]
    return (text if first else "," + text).encode("utf-8")


# --------------------------------------------------------------------------------------------
# XLSX


def _xlsx_value(value: object, is_text: bool) -> object:
    if value is None:
        return None
    if is_text:
        return _clean(_text(value)) or None
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.isoformat(sep=" ")  # Excel has no time zones
    if isinstance(value, int | float | dt.date | dt.time | bool):
        return value
    return _text(value)


def _clean(text: str) -> str:
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    return ILLEGAL_CHARACTERS_RE.sub("", text)


def write_xlsx(
    path: str | Path,
    records: Iterable[Mapping[str, object]],
    fields: Sequence[str],
    *,
    chinese: bool = True,
) -> None:
    """Write the records to an .xlsx file (openpyxl write-only mode: memory stays flat).

    Text fields are written as text cells; 国标编码 cells also get Excel's Text format, so
    Excel neither shows them as 3.4E+19 nor turns a code the user types in into a number.
    Raises IngestError past XLSX_MAX_ROWS rows (a sheet holds no more; export CSV instead),
    before anything is written to `path`.
    """
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    labels = header_labels(fields, chinese=chinese)
    texts = [BY_NAME[f].kind == "text" for f in fields]
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("台账" if chinese else "cameras")
    ws.freeze_panes = "A2"
    for i, f in enumerate(fields):
        width = 24 if f in ("gb_id", "address", "stream_main", "stream_sub", "snapshot") else 14
        ws.column_dimensions[_column_letter(i)].width = width
    ws.append(labels)

    def as_text(value: str, *, text_format: bool) -> WriteOnlyCell:
        c = WriteOnlyCell(ws, value)
        c.data_type = "s"  # never a formula, even when it starts with "="
        if text_format:
            c.number_format = "@"
        return c

    def exact(value: float) -> WriteOnlyCell:
        # openpyxl writes numbers with 16 significant digits, one short of what some doubles
        # need to read back the same ("%.16g" % 37.800399999999996 == "37.8004")
        c = WriteOnlyCell(ws, repr(value))
        c.data_type = "n"
        return c

    gb = fields.index("gb_id") if "gb_id" in fields else -1
    try:
        for n, record in enumerate(records, 1):
            if n > XLSX_MAX_ROWS:
                raise IngestError(
                    f"more than {XLSX_MAX_ROWS:,} cameras do not fit on an Excel sheet; "
                    "export them as CSV, or export one region at a time"
                )
            row = [_xlsx_value(record.get(f), t) for f, t in zip(fields, texts, strict=True)]
            for i, value in enumerate(row):
                if isinstance(value, str) and (i == gb or value.startswith("=")):
                    row[i] = as_text(value, text_format=i == gb)
                elif isinstance(value, float) and float("%.16g" % value) != value:  # noqa: UP031
                    row[i] = exact(value)
            ws.append(row)
    except BaseException:
        _discard(ws)
        raise
    target = Path(path)
    try:
        wb.save(target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _discard(ws: Any) -> None:
    """Close a write-only sheet abandoned half-way and remove its temporary file."""
    with contextlib.suppress(Exception):
        ws.close()
        writer = getattr(ws, "_writer", None)
        if writer is not None:
            writer.cleanup()


def _column_letter(index: int) -> str:
    from openpyxl.utils import get_column_letter

    return str(get_column_letter(index + 1))


__all__ = [
    "XLSX_MAX_ROWS",
    "csv_header",
    "csv_rows",
    "geojson_features",
    "geojson_prefix",
    "geojson_suffix",
    "header_labels",
    "write_xlsx",
]

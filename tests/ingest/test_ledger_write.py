"""Exports: what the API streams re-imports unchanged, and opens correctly in Excel."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from openpyxl import load_workbook

import ingest.ledger.write as ledger_write
from camera_registry.fields import FIELDS, SECRET_FIELDS
from ingest.errors import IngestError
from ingest.ledger.read import Ledger, open_ledger
from ingest.ledger.write import (
    csv_header,
    csv_rows,
    geojson_features,
    geojson_prefix,
    geojson_suffix,
    write_xlsx,
)

EXPORTED = [f.name for f in FIELDS if f.name not in SECRET_FIELDS]


def cameras() -> list[dict[str, object]]:
    """Records as the registry holds them: typed values, some missing, awkward text."""
    full: dict[str, object] = {
        "gb_id": "34010000001320000001",
        "name": '长江西路与潜山路交口 "东" 1号杆',
        "level": "一类",
        "lon": 117.23456789012,
        "lat": 31.8567891,
        "crs": "WGS84",
        "region_code": "340104",
        "address": "安徽省合肥市蜀山区长江西路1号, 东南角\n(加油站对面)",
        "azimuth": 90.0,
        "hfov": 62.5,
        "vfov": 35.25,
        "max_view_distance": 120.0,
        "mount_height": 6.0,
        "owner": "合肥市公安局蜀山分局",
        "contact": "张三 13800000000",
        "installed_at": dt.date(2023, 5, 1),
        "record_days": 30,
        "vendor": "海康威视",
        "model": "DS-2CD3T46WD-I3",
        "firmware": "V5.5.0 build 180904",
        "serial": "0012345678",
        "mac": "00-11-22-33-44-55",
        "ip": "192.168.1.10",
        "onvif_port": 80,
        "stream_main": "rtsp://192.168.1.10:554/Streaming/Channels/101",
        "stream_sub": "rtsp://192.168.1.10:554/Streaming/Channels/102",
        "snapshot": "http://192.168.1.10/ISAPI/Streaming/channels/101/picture",
    }
    sparse: dict[str, object] = {
        "gb_id": "34010000001320000002",
        "name": "=1+1",  # text, never a formula
        "lon": -0.5,
        "lat": 0.0,
        "installed_at": dt.datetime(2024, 1, 2, 0, 0),
        "mount_height": None,
    }
    # 37.80 + 4e-4 == 37.800399999999996 needs all 17 digits to read back the same
    return [full, sparse] + [
        {
            "gb_id": f"3401040000132{i:07d}",
            "name": f"杆{i}",
            "lon": 117 + i / 1e4,
            "lat": 37.8 + i * 1e-4,
        }
        for i in range(100)
    ]


def as_text(value: object) -> str | None:
    """What the importer should read back for a record value."""
    if value is None:
        return None
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def read_back(ledger: Ledger) -> list[dict[str, str | None]]:
    out: list[dict[str, str | None]] = []
    for chunk in ledger.chunks(7):
        assert chunk.problems == []
        for i in range(len(chunk.rows)):
            out.append({f: chunk.columns[f][i] for f in ledger.fields})
    return out


def expected(records: list[dict[str, object]], fields: list[str]) -> list[dict[str, str | None]]:
    return [{f: as_text(r.get(f)) for f in fields} for r in records]


def export_csv(path: Path, records: Sequence[Mapping[str, object]], fields: list[str]) -> Path:
    with path.open("wb") as fh:
        fh.write(csv_header(fields))
        for start in range(0, len(records), 10):  # streamed in pieces, as the API does
            fh.write(csv_rows(records[start : start + 10], fields))
    return path


def export_geojson(path: Path, records: Sequence[Mapping[str, object]], fields: list[str]) -> Path:
    with path.open("wb") as fh:
        fh.write(geojson_prefix())
        first = True
        for start in range(0, len(records), 10):
            piece = geojson_features(records[start : start + 10], fields, first=first)
            fh.write(piece)
            first = first and not piece
        fh.write(geojson_suffix())
    return path


def test_export_csv_reimports_identically(tmp_path: Path) -> None:
    records = cameras()
    with open_ledger(export_csv(tmp_path / "export.csv", records, EXPORTED)) as ledger:
        assert ledger.fields == EXPORTED
        assert ledger.ignored_columns == []
        got = read_back(ledger)
    assert got == expected(records, EXPORTED)
    # and the text read back exports to the same text again
    again = export_csv(tmp_path / "again.csv", got, EXPORTED)
    assert again.read_bytes() == (tmp_path / "export.csv").read_bytes()


def test_export_csv_with_english_headers_reimports(tmp_path: Path) -> None:
    fields = ["gb_id", "name", "lon", "lat"]
    path = tmp_path / "e.csv"
    path.write_bytes(csv_header(fields, chinese=False) + csv_rows(cameras(), fields))
    with open_ledger(path) as ledger:
        assert ledger.headers == {f: f for f in fields}
        assert read_back(ledger) == expected(cameras(), fields)


def test_export_xlsx_reimports_identically(tmp_path: Path) -> None:
    records = cameras()
    write_xlsx(tmp_path / "export.xlsx", iter(records), EXPORTED)
    with open_ledger(tmp_path / "export.xlsx") as ledger:
        assert (ledger.sheet, ledger.fields) == ("台账", EXPORTED)
        assert read_back(ledger) == expected(records, EXPORTED)


def test_export_geojson_reimports_identically(tmp_path: Path) -> None:
    records = cameras()
    path = export_geojson(tmp_path / "export.geojson", records, EXPORTED)
    doc = json.loads(path.read_text("utf-8"))
    assert len(doc["features"]) == len(records)
    assert doc["features"][0]["geometry"] == {
        "type": "Point",
        "coordinates": [117.23456789012, 31.8567891],
    }
    with open_ledger(path) as ledger:
        assert sorted(ledger.fields) == sorted(EXPORTED)
        got = read_back(ledger)
    assert got == [{f: row[f] for f in ledger.fields} for row in expected(records, EXPORTED)]


def test_csv_header_has_a_bom_and_the_chinese_labels() -> None:
    head = csv_header(["gb_id", "name", "lon", "lat"])
    assert head == "\ufeff国标编码,点位名称,经度,纬度\r\n".encode()
    assert csv_header(["gb_id", "lon"], chinese=False) == b"\xef\xbb\xbfgb_id,lon\r\n"


def test_csv_values_none_floats_dates() -> None:
    fields = ["gb_id", "lon", "mount_height", "record_days", "installed_at", "name"]
    record = {
        "gb_id": None,
        "lon": 117.1,
        "mount_height": float("nan"),
        "record_days": 30,
        "installed_at": dt.date(2023, 5, 1),
        "name": "a,b",
    }
    assert csv_rows([record], fields) == b',117.1,,30,2023-05-01,"a,b"\r\n'
    assert csv_rows([], fields) == b""


def test_long_digit_text_is_kept_as_text_by_excel() -> None:
    """Excel opens "34010000001320000001" as 3.401E+19 and saves it back without its digits;
    a leading tab makes it text, and the importer strips the tab."""
    record = {"gb_id": "34010000001320000001", "serial": "0012", "region_code": "340104"}
    fields = ["gb_id", "serial", "region_code"]
    row = next(csv.reader(io.StringIO(csv_rows([record], fields).decode())))
    assert row == ["\t34010000001320000001", "\t0012", "340104"]
    plain = csv_rows([record], fields, excel_text=False)
    assert plain == b"34010000001320000001,0012,340104\r\n"


@pytest.mark.parametrize("secret", sorted(SECRET_FIELDS))
def test_secret_fields_are_never_exported(tmp_path: Path, secret: str) -> None:
    fields = ["gb_id", secret]
    with pytest.raises(ValueError, match="never exported"):
        csv_header(fields)
    with pytest.raises(ValueError, match="never exported"):
        csv_rows([{"gb_id": "x", secret: "s3cret"}], fields)
    with pytest.raises(ValueError, match="never exported"):
        geojson_features([{"gb_id": "x", secret: "s3cret"}], fields, first=True)
    with pytest.raises(ValueError, match="never exported"):
        write_xlsx(tmp_path / "x.xlsx", [], fields)
    assert not (tmp_path / "x.xlsx").exists()


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown camera fields: colour"):
        csv_header(["gb_id", "colour"])


def test_geojson_stream_is_valid_json_in_any_batching() -> None:
    records = cameras()[:5]
    fields = ["gb_id", "lon", "lat"]
    for sizes in ([5], [1, 1, 1, 1, 1], [0, 2, 0, 3]):
        parts, first, start = [geojson_prefix()], True, 0
        for size in sizes:
            piece = geojson_features(records[start : start + size], fields, first=first)
            assert (piece == b"") == (size == 0)
            parts.append(piece)
            first = first and not piece
            start += size
        parts.append(geojson_suffix())
        doc = json.loads(b"".join(parts))
        assert [f["properties"]["gb_id"] for f in doc["features"]] == [r["gb_id"] for r in records]
    empty = json.loads(geojson_prefix() + geojson_suffix())
    assert empty == {"type": "FeatureCollection", "features": []}


def test_geojson_record_without_coordinates_keeps_what_it_has(tmp_path: Path) -> None:
    records: list[Mapping[str, object]] = [
        {"gb_id": "34010000001320000001", "lon": 117.2, "lat": None},
        {"gb_id": "34010000001320000002", "lon": 117.2, "lat": 31.8},
    ]
    fields = ["gb_id", "lon", "lat"]
    feature = json.loads(geojson_features(records[:1], fields, first=True))
    assert feature["geometry"] is None
    assert feature["properties"] == {"gb_id": "34010000001320000001", "lon": 117.2}
    with open_ledger(export_geojson(tmp_path / "g.geojson", records, fields)) as ledger:
        got = read_back(ledger)
    assert [(r["lon"], r["lat"]) for r in got] == [("117.2", None), ("117.2", "31.8")]


def test_xlsx_gb_id_is_text_formatted(tmp_path: Path) -> None:
    write_xlsx(tmp_path / "e.xlsx", cameras()[:2], ["gb_id", "name", "lon", "installed_at"])
    ws = load_workbook(tmp_path / "e.xlsx").active
    assert ws is not None
    header, first, second = list(ws.iter_rows(max_row=3))
    assert [c.value for c in header] == ["国标编码", "点位名称", "经度", "安装时间"]
    assert (first[0].value, first[0].data_type, first[0].number_format) == (
        "34010000001320000001",
        "s",
        "@",
    )
    assert first[2].data_type == "n"
    assert (second[1].value, second[1].data_type) == ("=1+1", "s")  # not a formula
    assert ws.freeze_panes == "A2"


def test_xlsx_with_english_headers(tmp_path: Path) -> None:
    write_xlsx(tmp_path / "e.xlsx", cameras()[:1], ["gb_id", "lon", "lat"], chinese=False)
    with open_ledger(tmp_path / "e.xlsx") as ledger:
        assert (ledger.sheet, ledger.fields) == ("cameras", ["gb_id", "lon", "lat"])


def test_xlsx_refuses_more_rows_than_a_sheet_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_write, "XLSX_MAX_ROWS", 10)

    def many() -> Iterator[dict[str, object]]:
        yield from cameras()

    with pytest.raises(IngestError, match="export them as CSV"):
        write_xlsx(tmp_path / "big.xlsx", many(), ["gb_id", "lon", "lat"])
    assert not (tmp_path / "big.xlsx").exists()


def test_csv_export_defuses_formulas_and_reimports_the_same_text(tmp_path: Path) -> None:
    from ingest.ledger.read import open_ledger
    from ingest.ledger.write import csv_header, csv_rows

    fields = ["gb_id", "name", "level", "lon", "lat"]
    rec = {"gb_id": "14010500001325000001", "name": '=HYPERLINK("http://x","点我")',
           "level": 2, "lon": 112.5, "lat": 37.8}  # fmt: skip
    path = tmp_path / "f.csv"
    path.write_bytes(csv_header(fields) + csv_rows([rec], fields))
    assert b"\t=HYPERLINK" in path.read_bytes()
    with open_ledger(path) as ledger:
        chunk = next(ledger.chunks())
    assert chunk.columns["name"] == [rec["name"]]

"""Reading ledgers (台账) as provinces keep them: CSV as Excel writes it, XLSX, GeoJSON."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from openpyxl import Workbook

import ingest.ledger.read as ledger_read
from ingest.errors import IngestError, LedgerFormatError
from ingest.ledger.read import Ledger, LedgerChunk, cell_text, open_ledger

GB = "34010000001320000001"
HEADER_ZH = ["国标编码", "点位名称", "经度", "纬度", "安装地址"]


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def read_all(ledger: Ledger, chunk_rows: int = 50_000) -> LedgerChunk:
    """All chunks of a ledger as one, checking each chunk on the way."""
    rows: list[int] = []
    columns: dict[str, list[str | None]] = {f: [] for f in ledger.fields}
    problems: list[tuple[int, str, str]] = []
    for chunk in ledger.chunks(chunk_rows):
        assert chunk.rows.dtype == np.int64
        assert list(chunk.columns) == ledger.fields
        assert all(len(v) == len(chunk.rows) for v in chunk.columns.values())
        rows += chunk.rows.tolist()
        for f, values in chunk.columns.items():
            columns[f] += values
        problems += chunk.problems
    return LedgerChunk(np.array(rows, dtype=np.int64), columns, problems)


def read_path(path: Path, **kwargs: object) -> tuple[Ledger, LedgerChunk]:
    with open_ledger(path) as ledger:
        return ledger, read_all(ledger, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# CSV: encodings and delimiters


def test_gbk_csv_from_excel_reads_chinese_headers(tmp_path: Path) -> None:
    # Excel in China saves "CSV (逗号分隔)" in the ANSI code page (GBK), with "\r\n".
    text = (
        "国标编码,点位名称,经度,纬度,安装地址\r\n"
        + f"{GB},蜀山区长江西路1号杆,117.2,31.8,长江西路\r\n"
    )
    path = write(tmp_path / "合肥.csv", text, "gbk")
    ledger, got = read_path(path)
    assert ledger.encoding == "gb18030"
    assert ledger.format == "csv"
    assert ledger.fields == ["gb_id", "name", "lon", "lat", "address"]
    assert ledger.headers["lon"] == "经度"
    assert got.rows.tolist() == [2]
    assert got.columns["name"] == ["蜀山区长江西路1号杆"]
    assert got.columns["lon"] == ["117.2"]


def test_utf8_bom_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "l.csv", f"国标编码,经度,纬度\n{GB},117.2,31.8\n", "utf-8-sig")
    ledger, got = read_path(path)
    assert ledger.encoding == "utf-8-sig"
    assert ledger.fields == ["gb_id", "lon", "lat"]  # the BOM is not part of the first header
    assert got.columns["gb_id"] == [GB]


def test_utf8_without_bom_csv(tmp_path: Path) -> None:
    ledger, got = read_path(write(tmp_path / "l.csv", f"gb_id,name\n{GB},长江西路\n"))
    assert ledger.encoding == "utf-8"
    assert got.columns["name"] == ["长江西路"]


def test_gbk_detected_even_when_the_first_megabyte_is_ascii(tmp_path: Path) -> None:
    lines = ["gb_id,lon,lat,name"]
    lines += [f"340100000013200{i:05d},117.2,31.8,camera {i}" for i in range(25_000)]
    lines += [f"{GB},117.2,31.8,长江西路"]
    path = write(tmp_path / "l.csv", "\r\n".join(lines) + "\r\n", "gbk")
    assert path.stat().st_size > 1 << 20
    ledger, got = read_path(path)
    assert ledger.encoding == "gb18030"
    assert got.columns["name"][-1] == "长江西路"
    assert got.rows[-1] == 25_002


def test_undecodable_bytes_later_in_the_file_say_where(tmp_path: Path) -> None:
    # The first megabyte is UTF-8; rows pasted in later from a GBK file are not.
    rows = 30_000
    head = "国标编码,经度,纬度,点位名称\n" + "".join(
        f"{GB},117.2,31.8,长江西路\n" for _ in range(rows)
    )
    data = head.encode("utf-8") + "34010000001320000002,117.2,31.8,长江\n".encode("gbk")
    assert len(data) > 1 << 20
    path = tmp_path / "mixed.csv"
    path.write_bytes(data)
    with open_ledger(path) as ledger, pytest.raises(LedgerFormatError) as err:
        read_all(ledger)
    assert err.value.line == rows + 2
    assert "UTF-8" in str(err.value)
    assert "mixed.csv" in str(err.value)


def test_tab_separated(tmp_path: Path) -> None:
    text = "国标编码\t点位名称\t经度\t纬度\n" + f"{GB}\t长江西路, 东\t117.2\t31.8\n"
    ledger, got = read_path(write(tmp_path / "l.tsv", text))
    assert ledger.delimiter == "\t"
    assert got.columns["name"] == ["长江西路, 东"]  # a comma is just text here


def test_semicolon_separated(tmp_path: Path) -> None:
    ledger, got = read_path(write(tmp_path / "l.csv", f"gb_id;lon;lat\n{GB};117,2;31,8\n"))
    assert ledger.delimiter == ";"
    assert got.columns["lon"] == ["117,2"]  # decimal commas are validation's business


def test_unicode_text_saved_by_excel_is_utf16_tabs(tmp_path: Path) -> None:
    text = "国标编码\t点位名称\t经度\t纬度\r\n" + f"{GB}\t长江西路\t117.2\t31.8\r\n"
    ledger, got = read_path(write(tmp_path / "l.txt", text, "utf-16"))
    assert ledger.encoding == "utf-16"
    assert got.columns["name"] == ["长江西路"]
    assert got.rows.tolist() == [2]


# --------------------------------------------------------------------------------------------
# CSV: rows, cells and line numbers


def test_quoted_newline_keeps_line_numbers(tmp_path: Path) -> None:
    text = (
        "国标编码,点位名称,经度,纬度,安装地址\r\n"
        f'{GB},"长江西路\r\n与潜山路\r\n交口",117.2,31.8,"合肥市, 蜀山区"\r\n'  # lines 2-4
        "34010000001320000002,黄山路,117.3,31.9,\r\n"  # line 5
        f'34010000001320000003,"说 ""东门""",117.4,31.7,x\r\n'  # line 6
    )
    _, got = read_path(write(tmp_path / "l.csv", text))
    assert got.rows.tolist() == [2, 5, 6]
    assert got.columns["name"] == ["长江西路\r\n与潜山路\r\n交口", "黄山路", '说 "东门"']
    assert got.columns["address"] == ["合肥市, 蜀山区", None, "x"]


def test_quoted_cells_across_block_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_read, "_BLOCK", 64)  # every few lines a new block
    lines = ["gb_id,name,lon,lat"]
    expected = []
    for i in range(200):
        name = f"杆{i}\n第二行" if i % 7 == 0 else f"杆{i}, 东" if i % 5 == 0 else f"杆{i}"
        lines.append(
            f'{GB},"{name}",117.2,31.8'
            if ("\n" in name or "," in name)
            else f"{GB},{name},117.2,31.8"
        )
        expected.append(name)
    _, got = read_path(write(tmp_path / "l.csv", "\n".join(lines) + "\n"))
    assert got.columns["name"] == expected
    line, want = 2, []
    for name in expected:
        want.append(line)
        line += 1 + name.count("\n")
    assert got.rows.tolist() == want


def test_every_cell_quoted_as_java_exporters_write(tmp_path: Path) -> None:
    rows = [["国标编码", "点位名称", "经度", "纬度", "安装地址"]]
    rows += [[f"3401040000132{i:07d}", f"杆{i}", "117.2", "31.8", ""] for i in range(500)]
    rows[100][4] = "合肥市, 蜀山区"  # the delimiter inside a cell
    rows[200][1] = '说 "东门"'  # an escaped quote: that block goes to the csv module
    rows[300][4] = "长江西路\n1号"  # a line break inside a cell
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL).writerows(rows)
    _, got = read_path(write(tmp_path / "l.csv", out.getvalue()))
    assert got.columns["address"][99] == "合肥市, 蜀山区"
    assert got.columns["name"][199] == '说 "东门"'
    assert got.columns["address"][299] == "长江西路\n1号"
    assert got.rows[:3].tolist() == [2, 3, 4]
    assert got.rows[-1] == 502  # one line more for the line break
    assert got.columns["address"][0] is None


def test_row_with_extra_cells_reported_with_its_line(tmp_path: Path) -> None:
    text = (
        "国标编码,点位名称,经度,纬度\n"
        f"{GB},长江西路,117.2,31.8\n"
        "34010000001320000002,长江西路,1号,117.2,31.8\n"  # unquoted comma in the name
        "34010000001320000003,黄山路,117.3,31.9\n"
    )
    _, got = read_path(write(tmp_path / "l.csv", text))
    assert got.rows.tolist() == [2, 4]  # the bad row is left out of the columns
    assert got.columns["gb_id"] == [GB, "34010000001320000003"]
    [(line, field, message)] = got.problems
    assert (line, field) == (3, "")
    assert "5 cells" in message and "4 columns" in message and "double quotes" in message


def test_row_with_missing_cells_reported(tmp_path: Path) -> None:
    text = f"国标编码,点位名称,经度,纬度\n{GB},长江西路,117.2\n"
    _, got = read_path(write(tmp_path / "l.csv", text))
    assert len(got.rows) == 0
    [(line, _, message)] = got.problems
    assert line == 2
    assert "3 cells" in message and "add the missing cells" in message


def test_trailing_empty_cells_are_not_a_problem(tmp_path: Path) -> None:
    # Excel writes a comma for every column it ever saw filled, named or not.
    text = f"国标编码,点位名称,经度,纬度,,\n{GB},长江西路,117.2,31.8,,\n{GB},黄山路,117.2,31.8,,,\n"
    text += f"{GB},潜山路,117.2,31.8\n"
    _, got = read_path(write(tmp_path / "l.csv", text))
    assert got.problems == []
    assert got.columns["name"] == ["长江西路", "黄山路", "潜山路"]


def test_blank_rows_skipped_but_counted_in_line_numbers(tmp_path: Path) -> None:
    text = f"gb_id,name,lon,lat\n\n{GB},a,1,2\n,,,\n , ,\u3000,\n{GB},b,1,2\n\n"
    _, got = read_path(write(tmp_path / "l.csv", text))
    assert got.rows.tolist() == [3, 6]
    assert got.columns["name"] == ["a", "b"]
    assert got.problems == []


def test_cells_are_stripped_and_empty_cells_are_none(tmp_path: Path) -> None:
    text = f"gb_id,name,lon,lat,address\n {GB}\t,\u3000长江西路\xa0,117.2 ,31.8,\n{GB},,  ,31.8,x\n"
    _, got = read_path(write(tmp_path / "l.csv", text))
    assert got.columns == {
        "gb_id": [GB, GB],
        "name": ["长江西路", None],
        "lon": ["117.2", None],
        "lat": ["31.8", "31.8"],
        "address": [None, "x"],
    }


def test_old_mac_line_endings(tmp_path: Path) -> None:
    _, got = read_path(write(tmp_path / "l.csv", f"gb_id,name,lon,lat\r{GB},a,1,2\r{GB},b,1,2\r"))
    assert got.rows.tolist() == [2, 3]
    assert got.columns["name"] == ["a", "b"]


def test_unclosed_quote_is_reported_where_it_opens(tmp_path: Path) -> None:
    rows = (
        [f"{GB},长江西路,117.2,31.8"] * 3
        + [f'{GB},"长江西路,117.2,31.8']
        + [f"{GB},x,1,2"] * 20_000
    )
    path = write(tmp_path / "l.csv", "gb_id,name,lon,lat\n" + "\n".join(rows) + "\n")
    with open_ledger(path) as ledger, pytest.raises(LedgerFormatError) as err:
        read_all(ledger)
    assert err.value.line == 5
    assert "never closed" in str(err.value)


def test_matches_the_csv_module_on_irregular_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random files full of quotes, line breaks in cells, blank and ragged rows, in every
    encoding and line ending, read in tiny blocks: the same rows, cells and line numbers as
    the csv module reading the whole file."""
    monkeypatch.setattr(ledger_read, "_BLOCK", 128)
    header = ["国标编码", "点位名称", "经度", "纬度", "备注", "安装地址"]
    names = ["gb_id", "name", "lon", "lat", None, "address"]
    cells = ["", " ", "\u3000", " a ", "合肥", "116.5", GB, "a,b", 'say "hi"', "l1\nl2", "x\r\ny"]
    for seed in range(40):
        rnd = random.Random(seed)
        delim = rnd.choice([",", "\t", ";"])
        eol = rnd.choice(["\r\n", "\n", "\r"])
        out = io.StringIO()
        writer = (
            csv.writer(out, delimiter=delim, lineterminator=eol, quoting=csv.QUOTE_ALL)
            if rnd.random() < 0.5
            else csv.writer(out, delimiter=delim, lineterminator=eol)
        )
        writer.writerow(header)
        for _ in range(rnd.randrange(0, 150)):
            k = rnd.random()
            row = [rnd.choice(cells) for _ in header]
            if k < 0.03 * rnd.random():
                out.write(eol)
                continue
            writer.writerow(row[:-1] if k < 0.06 else [*row, "extra"] if k < 0.09 else row)
        text = out.getvalue()
        path = write(tmp_path / f"f{seed}.csv", text, rnd.choice(["utf-8", "utf-8-sig", "gb18030"]))

        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
        next(reader)
        want_rows, want_problems = [], []
        want: dict[str, list[str | None]] = {n: [] for n in names if n}
        prev = reader.line_num
        for row in reader:
            line, prev = prev + 1, reader.line_num
            if not "".join(row).strip():
                continue
            if len(row) != len(header):
                want_problems.append(line)
                continue
            want_rows.append(line)
            for name, cell in zip(names, row, strict=True):
                if name:
                    want[name].append(cell.strip() or None)
        _, got = read_path(path, chunk_rows=rnd.choice([1, 7, 1000]))
        assert got.rows.tolist() == want_rows, seed
        assert [p[0] for p in got.problems] == want_problems, seed
        assert got.columns == want, seed


# --------------------------------------------------------------------------------------------
# Headers


def test_unknown_column_ignored_and_listed(tmp_path: Path) -> None:
    text = f"国标编码,备注,经度,纬度,联系电话\n{GB},已验收,117.2,31.8,110\n"
    ledger, got = read_path(write(tmp_path / "l.csv", text))
    assert ledger.fields == ["gb_id", "lon", "lat"]
    assert ledger.ignored_columns == ["备注", "联系电话"]
    assert got.columns["lon"] == ["117.2"]


def test_english_headers_any_case_and_spacing(tmp_path: Path) -> None:
    text = f"GB ID,Camera_Name,Longitude,LATITUDE,install-time\n{GB},a,117.2,31.8,2023-05-01\n"
    ledger, _ = read_path(write(tmp_path / "l.csv", text))
    assert ledger.fields == ["gb_id", "name", "lon", "lat", "installed_at"]


def test_required_marks_and_unit_suffixes_still_name_the_field(tmp_path: Path) -> None:
    text = f"*国标编码,经度(度),纬度（°）,安装高度（米）,录像保存天数(天)\n{GB},117.2,31.8,6,30\n"
    ledger, _ = read_path(write(tmp_path / "l.csv", text))
    assert ledger.fields == ["gb_id", "lon", "lat", "mount_height", "record_days"]
    assert ledger.headers["mount_height"] == "安装高度（米）"


def test_suffixes_that_change_the_meaning_are_not_guessed(tmp_path: Path) -> None:
    text = "点位名称,经度(GCJ02),纬度(GCJ02),安装高度(cm)\na,117.2,31.8,600\n"
    with pytest.raises(LedgerFormatError) as err:
        open_ledger(write(tmp_path / "l.csv", text))
    message = str(err.value)
    assert message.startswith("l.csv line 1: no column for 经度/lon")
    assert '"经度(GCJ02)" was not recognised' in message and "坐标系" in message


def test_duplicate_header_mapping_rejected(tmp_path: Path) -> None:
    text = f"国标编码,经度,lng,纬度\n{GB},117.2,117.2,31.8\n"
    with pytest.raises(LedgerFormatError) as err:
        open_ledger(write(tmp_path / "l.csv", text))
    assert err.value.line == 1
    assert '"经度" and "lng" both mean 经度/lon' in str(err.value)
    assert "rename one" in str(err.value)


def test_no_coordinates_nor_gb_id_rejected_with_advice(tmp_path: Path) -> None:
    with pytest.raises(LedgerFormatError) as err:
        open_ledger(write(tmp_path / "ledger.csv", "点位名称,地址\na,b\n"))
    assert err.value.line == 1
    assert str(err.value).startswith("ledger.csv line 1: no column for 经度/lon and 纬度/lat")
    assert "name the coordinate columns 经度 and 纬度" in str(err.value)


def test_longitude_without_latitude_rejected(tmp_path: Path) -> None:
    with pytest.raises(LedgerFormatError) as err:
        open_ledger(write(tmp_path / "ledger.csv", f"国标编码,经度\n{GB},117.2\n"))
    assert str(err.value) == (
        "ledger.csv line 1: no column for 纬度/lat; name the latitude column 纬度 or lat"
    )


def test_gb_id_alone_locates_cameras(tmp_path: Path) -> None:
    ledger, got = read_path(write(tmp_path / "l.csv", f"国标编码,点位名称\n{GB},a\n"))
    assert ledger.fields == ["gb_id", "name"]
    assert got.rows.tolist() == [2]


def test_title_rows_above_the_header_are_skipped(tmp_path: Path) -> None:
    text = f"合肥市视频监控点位台账,,,\n,,,\n国标编码,点位名称,经度,纬度\n{GB},a,117.2,31.8\n"
    ledger, got = read_path(write(tmp_path / "l.csv", text))
    assert ledger.header_row == 3
    assert got.rows.tolist() == [4]


def test_empty_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(LedgerFormatError, match="the file is empty"):
        open_ledger(write(tmp_path / "l.csv", ""))


def test_file_of_empty_lines_rejected(tmp_path: Path) -> None:
    with pytest.raises(LedgerFormatError, match="no header row"):
        open_ledger(write(tmp_path / "l.csv", ",,,\r\n,,,\r\n"))


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    ledger, got = read_path(write(tmp_path / "l.csv", "国标编码,经度,纬度\r\n"))
    assert ledger.fields == ["gb_id", "lon", "lat"]
    assert len(got.rows) == 0 and got.problems == []


# --------------------------------------------------------------------------------------------
# Chunks, progress, size


def test_chunks_are_bounded(tmp_path: Path) -> None:
    rows = [f"{GB},杆{i},117.2,31.8" if i % 1000 else f"{GB},bad" for i in range(1, 30_001)]
    path = write(tmp_path / "l.csv", "gb_id,name,lon,lat\n" + "\n".join(rows) + "\n")
    with open_ledger(path) as ledger:
        assert ledger.progress() < 0.1  # the header and one block
        chunks = ledger.chunks(2_500)
        first = next(chunks)
        assert ledger.progress() < 0.5  # streamed, not read whole
        sizes = [len(first.rows) + len(first.problems)]
        seen = len(first.rows)
        last = ledger.progress()
        for chunk in chunks:
            assert len(chunk.rows) <= 2_500
            sizes.append(len(chunk.rows) + len(chunk.problems))
            seen += len(chunk.rows)
            assert ledger.progress() >= last
            last = ledger.progress()
        assert ledger.progress() == 1.0
    assert max(sizes) <= 2_500
    assert sum(sizes) == 30_000
    assert seen == 30_000 - 30


def province_row(i: int) -> list[str]:
    address = f"合肥市蜀山区长江西路{i}号" + (",东" if i % 500 == 0 else "")  # quoted by csv
    hfov = "" if i % 3 else "60"
    return [
        f"3401040000132{i:07d}", f"长江西路{i}号杆", "一类", f"117.{i:06d}", "31.8", "WGS84",
        "340104", address, str(i % 360), hfov, "6", "合肥市公安局", "2023-05-01", "海康", "",
    ]  # fmt: skip


def test_large_generated_csv_reads_every_row(tmp_path: Path) -> None:
    """300k rows × 15 columns, as a province exports them (speed: bench/bench_ledger_read.py)."""
    header = [
        "国标编码", "点位名称", "点位类型", "经度", "纬度", "坐标系", "行政区划", "安装地址",
        "方向角", "水平视场角", "安装高度", "建设单位", "安装时间", "厂商", "备注",
    ]  # fmt: skip
    n = 300_000
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(province_row(i) for i in range(n))
    with open_ledger(path) as ledger:
        assert len(ledger.fields) == 14 and ledger.ignored_columns == ["备注"]
        total, last_row = 0, 1  # the header is line 1
        for chunk in ledger.chunks():
            assert len(chunk.rows) <= 50_000
            assert chunk.rows[0] == last_row + 1 and np.all(np.diff(chunk.rows) == 1)
            assert chunk.columns["gb_id"][0] == f"3401040000132{chunk.rows[0] - 2:07d}"
            assert chunk.columns["hfov"][:3].count(None) == 2
            total += len(chunk.rows)
            last_row = int(chunk.rows[-1])
    assert total == n
    assert last_row == n + 1


def test_a_ledger_is_read_once(tmp_path: Path) -> None:
    with open_ledger(write(tmp_path / "l.csv", f"gb_id\n{GB}\n")) as ledger:
        list(ledger.chunks())
        with pytest.raises(RuntimeError):
            ledger.chunks()
        assert ledger.size_bytes == len(f"gb_id\n{GB}\n")


# --------------------------------------------------------------------------------------------
# Formats


def test_format_from_extension_or_content(tmp_path: Path) -> None:
    assert open_ledger(write(tmp_path / "a.txt", f"gb_id\n{GB}\n")).format == "csv"
    geo = {"type": "FeatureCollection", "features": []}
    with pytest.raises(LedgerFormatError):  # no features: nothing locates cameras
        open_ledger(write(tmp_path / "upload.tmp", json.dumps(geo)))
    wb = Workbook()
    wb.active.append(["gb_id"])
    wb.save(tmp_path / "saved-as.csv")  # an Excel workbook with the wrong name
    assert open_ledger(tmp_path / "saved-as.csv").format == "xlsx"
    assert open_ledger(write(tmp_path / "x.dat", f"gb_id\n{GB}\n"), format="csv").format == "csv"
    with pytest.raises(ValueError, match="unknown ledger format"):
        open_ledger(tmp_path / "x.dat", format="pdf")


def test_web_page_saved_as_xls_is_rejected_with_advice(tmp_path: Path) -> None:
    path = write(tmp_path / "导出.xls", "<html><table><tr><td>国标编码</td></tr></table></html>")
    with pytest.raises(LedgerFormatError, match="web page"):
        open_ledger(path)


def test_errors_are_ingest_errors() -> None:
    assert issubclass(LedgerFormatError, IngestError)
    err = LedgerFormatError("no header", file="a.csv", line=3)
    assert (str(err), err.line, err.reason) == ("a.csv line 3: no header", 3, "no header")
    assert str(LedgerFormatError("empty", file="a.csv")) == "a.csv: empty"


def test_cell_text_renders_typed_cells_as_typed() -> None:
    assert cell_text(12.0) == "12"
    assert cell_text(116.39712812345) == "116.39712812345"
    assert cell_text(30) == "30"
    assert cell_text(dt.date(2023, 5, 1)) == "2023-05-01"
    assert cell_text(dt.datetime(2023, 5, 1)) == "2023-05-01"
    assert cell_text(dt.datetime(2023, 5, 1, 8, 30)) == "2023-05-01 08:30:00"
    assert cell_text("  ") is None
    assert cell_text(None) is None


# --------------------------------------------------------------------------------------------
# XLSX


def make_xlsx(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    wb = Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    wb.save(path)
    return path


def test_xlsx_reads_chinese_headers_and_dates(tmp_path: Path) -> None:
    path = make_xlsx(
        tmp_path / "台账.xlsx",
        {
            "Sheet1": [
                ["合肥市视频监控点位台账"],  # a title row above the header
                [],
                [
                    "国标编码",
                    "点位名称",
                    "经度",
                    "纬度",
                    "安装时间",
                    "录像保存天数",
                    "安装高度",
                    "备注",
                ],
                [GB, " 长江西路 ", 117.2345678912, 31.8, dt.date(2023, 5, 1), 30, 6.0, "x"],
                [],
                [
                    "34010000001320000002",
                    "黄山路",
                    117,
                    31.75,
                    dt.datetime(2023, 5, 2, 8, 0),
                    None,
                    4.5,
                ],
            ]
        },
    )
    ledger, got = read_path(path)
    assert (ledger.format, ledger.sheet, ledger.header_row) == ("xlsx", "Sheet1", 3)
    assert ledger.fields == [
        "gb_id",
        "name",
        "lon",
        "lat",
        "installed_at",
        "record_days",
        "mount_height",
    ]
    assert ledger.ignored_columns == ["备注"]
    assert got.rows.tolist() == [4, 6]  # sheet row numbers, blank row 5 skipped
    assert got.columns == {
        "gb_id": [GB, "34010000001320000002"],
        "name": ["长江西路", "黄山路"],
        "lon": ["117.2345678912", "117"],
        "lat": ["31.8", "31.75"],
        "installed_at": ["2023-05-01", "2023-05-02 08:00:00"],
        "record_days": ["30", None],
        "mount_height": ["6", "4.5"],
    }
    assert got.problems == []


def test_xlsx_merged_cells_fill_the_rows_they_cover(tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["合肥市点位台账"])
    ws.merge_cells("A1:D1")
    ws.append(["国标编码", "建设单位", "经度", "纬度"])
    for i in range(5):
        ws.append([f"3401000000132000000{i}", "蜀山分局" if i in (0, 3) else None, 117.2, 31.8])
    ws.merge_cells("B3:B5")  # 蜀山分局 owns the first three cameras …
    ws.merge_cells("B6:B7")  # … and the last two
    wb.save(tmp_path / "l.xlsx")
    _, got = read_path(tmp_path / "l.xlsx", chunk_rows=2)
    assert got.columns["owner"] == ["蜀山分局"] * 5
    assert got.rows.tolist() == [3, 4, 5, 6, 7]


def test_xlsx_numeric_gb_id_reported(tmp_path: Path) -> None:
    path = make_xlsx(
        tmp_path / "l.xlsx",
        {
            "台账": [
                ["国标编码", "经度", "纬度"],
                [34010000001320000001, 117.2, 31.8],
                [GB, 117.3, 31.9],
            ]
        },
    )
    _, got = read_path(path)
    assert got.rows.tolist() == [3]
    [(row, field, message)] = got.problems
    assert (row, field) == (2, "gb_id")
    assert "国标编码 was stored as a number" in message and "lost digits" in message
    assert "format the 国标编码 column as text in Excel" in message


def test_xlsx_picks_the_ledger_sheet_among_several(tmp_path: Path) -> None:
    path = make_xlsx(
        tmp_path / "l.xlsx",
        {
            "填表说明": [["请按模板填写"]],
            "统计": [["区县", "数量"], ["蜀山区", 3]],
            "摄像机台账": [["国标编码", "经度", "纬度"], [GB, 117.2, 31.8]],
        },
    )
    ledger, got = read_path(path)
    assert ledger.sheet == "摄像机台账"
    assert got.columns["gb_id"] == [GB]


def test_xlsx_finds_the_ledger_on_an_unnamed_later_sheet(tmp_path: Path) -> None:
    path = make_xlsx(
        tmp_path / "l.xlsx",
        {"说明": [["请按模板填写"]], "Sheet2": [["gb_id", "lon", "lat"], [GB, 117.2, 31.8]]},
    )
    assert open_ledger(path).sheet == "Sheet2"


def test_xlsx_without_a_ledger_sheet_rejected(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "l.xlsx", {"统计": [["区县", "数量"], ["蜀山区", 3]]})
    with pytest.raises(LedgerFormatError) as err:
        open_ledger(path)
    assert err.value.line == 1
    assert str(err.value).startswith("l.xlsx sheet 统计 row 1: no column for")


def test_xlsx_duplicate_header_mapping_rejected(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "l.xlsx", {"台账": [["设备编码", "国标编码", "经度", "纬度"]]})
    with pytest.raises(LedgerFormatError, match='"设备编码" and "国标编码" both mean'):
        open_ledger(path)


def test_corrupt_workbook_rejected_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "l.xlsx"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(LedgerFormatError, match="save it again"):
        open_ledger(path)


# --------------------------------------------------------------------------------------------
# GeoJSON


def point(lon: float, lat: float, **props: object) -> dict[str, object]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": props,
    }


def write_geojson(path: Path, features: list[object]) -> Path:
    doc = {"type": "FeatureCollection", "features": features}
    return write(path, json.dumps(doc, ensure_ascii=False))


def test_geojson_points(tmp_path: Path) -> None:
    features: list[object] = [
        point(117.2345678, 31.8, 国标编码=GB, 名称="长江西路", 备注="x", 录像保存天数=30),
        point(117.0, 31.75, 国标编码="34010000001320000002", 名称=" 黄山路 ", 经度=1.0, 纬度=2.0),
    ]
    ledger, got = read_path(write_geojson(tmp_path / "cams.geojson", features))
    assert ledger.format == "geojson"
    assert ledger.fields == ["gb_id", "name", "record_days", "lon", "lat"]
    assert ledger.ignored_columns == ["备注"]
    assert got.rows.tolist() == [0, 1]  # feature index
    assert got.columns["lon"] == ["117.2345678", "117"]  # the geometry wins over properties
    assert got.columns["lat"] == ["31.8", "31.75"]
    assert got.columns["name"] == ["长江西路", "黄山路"]
    assert got.columns["record_days"] == ["30", None]


def test_geojson_non_point_geometry_reported(tmp_path: Path) -> None:
    line = {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[1, 2], [3, 4]]}}
    features: list[object] = [
        point(117.2, 31.8, gb_id=GB),
        line,
        "junk",
        point(117.3, 31.9, gb_id=GB),
    ]
    _, got = read_path(write_geojson(tmp_path / "c.json", features))
    assert got.rows.tolist() == [0, 3]
    assert [(r, f) for r, f, _ in got.problems] == [(1, ""), (2, "")]
    assert "LineString, not a Point" in got.problems[0][2]


def test_geojson_null_geometry_uses_the_properties(tmp_path: Path) -> None:
    features: list[object] = [
        {
            "type": "Feature",
            "geometry": None,
            "properties": {"gb_id": GB, "lon": 117.2, "lat": 31.8},
        },
        {"type": "Feature", "geometry": None, "properties": {"gb_id": GB}},
    ]
    _, got = read_path(write_geojson(tmp_path / "c.geojson", features))
    assert got.columns["lon"] == ["117.2", None]


def test_geojson_numeric_gb_id_that_lost_digits_reported(tmp_path: Path) -> None:
    features: list[object] = [point(117.2, 31.8, gb_id=3.401e19), point(117.2, 31.8, gb_id=int(GB))]
    _, got = read_path(write_geojson(tmp_path / "c.geojson", features))
    assert got.columns["gb_id"] == [GB]  # a JSON integer keeps every digit
    assert [(r, f) for r, f, _ in got.problems] == [(0, "gb_id")]


def test_geojson_that_is_not_a_feature_collection_rejected(tmp_path: Path) -> None:
    with pytest.raises(LedgerFormatError, match="expected a GeoJSON FeatureCollection"):
        open_ledger(write(tmp_path / "c.geojson", "[1, 2]"))


def test_invalid_json_reports_its_line(tmp_path: Path) -> None:
    with pytest.raises(LedgerFormatError) as err:
        open_ledger(
            write(tmp_path / "c.geojson", '{"type": "FeatureCollection",\n "features": [,]}')
        )
    assert err.value.line == 2
    assert "not valid JSON" in str(err.value)


def test_geojson_chunks_are_bounded(tmp_path: Path) -> None:
    features: list[object] = [
        point(117.2, 31.8, gb_id=f"3401000000132{i:07d}") for i in range(5000)
    ]
    with open_ledger(write_geojson(tmp_path / "c.geojson", features)) as ledger:
        sizes = [len(c.rows) for c in ledger.chunks(1000)]
    assert sizes == [1000] * 5

"""Re-imports skip the lines an earlier import merged unchanged (`ingest.ledger.digest`), and
report exactly what reading every line reports."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient

from api.state import BOX, POOL, REGISTRY
from camera_registry.actor import Actor, Role
from ingest.ledger.digest import line_digests, write_remaining
from ingest.ledger.read import open_ledger
from ingest.ledger.source import import_ledger

from .test_import import HEADER, ledger, row

ADMIN = Actor("test:import-skip", Role.ADMIN)


async def _import(client: TestClient, path: Path, **kw: Any) -> Any:
    return await import_ledger(client.app[POOL], client.app[BOX], ADMIN, path, **kw)


def _seen(report: Any) -> tuple[Any, ...]:
    """Everything an import reports."""
    return (
        report.summary(),
        [(e.row, e.field, e.message) for e in report.errors],
        report.warnings,
        (report.rows_total, report.rows_bad, report.inserted, report.updated, report.unchanged),
        report.status,
    )


async def _audits(client: TestClient, region: str) -> int:
    return int(
        await client.app[POOL].fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'camera.import_update' "
            "AND region_code = $1",
            region,
        )
    )


async def test_unchanged_lines_are_not_read_again(client: TestClient, tmp_path: Path) -> None:
    path = ledger(tmp_path / "a.csv", [row(n, region="140301") for n in range(1, 31)])
    first = await _import(client, path)
    assert first.inserted == 30
    pool = client.app[POOL]
    # A write that bypasses every writer (no version bump): only a skipped line leaves it be.
    gb = row(5, region="140301")[0]
    await pool.execute("UPDATE cameras SET name = 'untouched' WHERE gb_id = $1", gb)
    again = await _import(client, path)
    assert (again.inserted, again.updated, again.unchanged, again.rows_total) == (0, 0, 30, 30)
    assert again.summary() == first.summary().replace("30 new, 0 updated, 0 unchanged",
                                                      "0 new, 0 updated, 30 unchanged")  # fmt: skip
    assert await pool.fetchval("SELECT name FROM cameras WHERE gb_id = $1", gb) == "untouched"
    assert await _audits(client, "140301") == 0
    commits = await pool.fetch(
        "SELECT detail FROM audit_log WHERE action = 'import.commit' AND actor = $1 "
        "ORDER BY id DESC LIMIT 2",
        ADMIN.name,
    )
    assert commits[0]["detail"]["columns"] == commits[1]["detail"]["columns"]
    # Reading every line finds the difference (and the digests stay usable afterwards).
    full = await _import(client, path, skip_unchanged=False)
    assert (full.updated, full.unchanged) == (1, 29)
    assert await pool.fetchval("SELECT name FROM cameras WHERE gb_id = $1", gb) == "点位5"


async def test_a_camera_edited_through_the_api_since_is_merged_again(
    client: TestClient, tmp_path: Path
) -> None:
    path = ledger(tmp_path / "b.csv", [row(n, region="140302") for n in range(1, 11)])
    await _import(client, path)
    pool = client.app[POOL]
    gb = row(3, region="140302")[0]
    cam = await pool.fetchrow("SELECT id, version FROM cameras WHERE gb_id = $1", gb)
    await client.app[REGISTRY].update(ADMIN, str(cam["id"]), cam["version"], {"name": "现场改名"})
    again = await _import(client, path)
    assert (again.inserted, again.updated, again.unchanged) == (0, 1, 9)
    rec = await pool.fetchrow(
        "SELECT before, after FROM audit_log WHERE action = 'camera.import_update' "
        "AND after->>'gb_id' = $1",
        gb,
    )
    assert rec["before"]["name"] == "现场改名" and rec["after"]["name"] == "点位3"
    # The merge remembered the line again: the next import skips all of it.
    await pool.execute("UPDATE cameras SET name = 'untouched' WHERE gb_id = $1", gb)
    third = await _import(client, path)
    assert (third.updated, third.unchanged) == (0, 10)
    assert await pool.fetchval("SELECT name FROM cameras WHERE gb_id = $1", gb) == "untouched"


async def test_report_with_skipped_lines_is_the_report_of_reading_them_all(
    client: TestClient, tmp_path: Path
) -> None:
    region = "140303"
    rows = [row(n, region=region) for n in range(1, 41)]
    await _import(client, ledger(tmp_path / "c1.csv", rows))
    edited = list(rows)
    edited[3] = row(4, region=region, name="改名")  # changed
    edited[10] = row(11, region=region, lat="北纬")  # bad, at its own row number
    edited.append(row(99, region=region))  # new
    # Repeats of skipped lines' 国标编码: one before its skipped line, one after.
    edited.insert(0, row(20, region=region, name="重复在前"))
    edited.append(row(30, region=region, name="重复在后"))
    path = ledger(tmp_path / "c2.csv", edited)
    for partial in (False, True):
        skipping = await _import(client, path, dry_run=True, partial=partial)
        reading = await _import(client, path, dry_run=True, partial=partial, skip_unchanged=False)
        assert _seen(skipping) == _seen(reading)
    assert [(e.row, e.field) for e in reading.errors] == [(13, "lat"), (22, "gb_id"), (44, "gb_id")]
    assert "is also on row 2" in reading.errors[1].message
    assert reading.unchanged == 37
    committed = await _import(client, path, partial=True)
    assert _seen(committed)[1:] == _seen(reading)[1:]
    assert (committed.inserted, committed.updated) == (1, 2)
    assert await _audits(client, region) == 2


async def test_other_settings_or_another_header_read_every_line(
    client: TestClient, tmp_path: Path
) -> None:
    region = "140304"
    rows = [row(n, region=region) for n in range(1, 6)]
    path = ledger(tmp_path / "d.csv", rows)
    await _import(client, path)
    pool = client.app[POOL]
    gb = row(2, region=region)[0]
    await pool.execute("UPDATE cameras SET name = 'untouched' WHERE gb_id = $1", gb)
    # Same lines, the coordinates read as GCJ-02: every camera moves.
    moved = await _import(client, path, crs="gcj02")
    assert (moved.updated, moved.unchanged) == (5, 0)
    # Same lines under a header with the columns renamed into other fields: read again.
    renamed = ["国标编码", "点位名称", "点位类型", "经度", "纬度", "方向角", "录像保存天数", "地址"]
    other = ledger(tmp_path / "d2.csv", rows, header=renamed)
    report = await _import(client, other)
    assert report.updated == 5


def test_digests_cover_single_line_records_only(tmp_path: Path) -> None:
    rows = [row(n) for n in range(1, 6)]
    plain = ledger(tmp_path / "p.csv", [*rows, rows[2]])  # line 7 repeats line 4
    with open_ledger(plain) as led:
        d = line_digests(led, crs="wgs84", scope=None)
    assert d is not None
    assert d.lines.tolist() == [2, 3, 5, 6]  # the repeated line is never skipped
    assert d.digest(2) != d.digest(3) and d.digest(4) == d.digest(7)
    with open_ledger(plain) as led:
        other = line_digests(led, crs="gcj02", scope=None)
    assert other is not None and other.digest(2) != d.digest(2)
    spanning = ledger(tmp_path / "s.csv", [rows[0], [*rows[1][:7], "两行\n备注"], rows[2]])
    with open_ledger(spanning) as led:
        assert line_digests(led, crs="wgs84", scope=None) is None


def test_the_remaining_lines_keep_their_row_numbers(tmp_path: Path) -> None:
    rows = [row(n) for n in range(1, 9)]
    rows[5] = row(6, lat="x")
    src = ledger(tmp_path / "r.csv", rows)
    with open_ledger(src) as led:
        d = line_digests(led, crs="wgs84", scope=None)
    assert d is not None
    dst = tmp_path / "rest.csv"
    assert write_remaining(src, dst, d, np.array([2, 3, 5, 9])) == 4
    with open_ledger(dst) as led:
        chunks = list(led.chunks(100))
    assert [r for c in chunks for r in c.rows.tolist()] == [4, 6, 7, 8]
    assert chunks[0].columns["gb_id"] == [row(n)[0] for n in (3, 5, 6, 7)]
    with src.open(newline="", encoding="utf-8") as a, dst.open(newline="", encoding="utf-8") as b:
        assert next(csv.reader(a)) == next(csv.reader(b)) == HEADER


async def test_gbk_ledger_read_by_the_reader_process_skips_like_the_thread(
    client: TestClient, tmp_path: Path
) -> None:
    region = "140305"
    rows = [row(n, region=region, name=f"路口{n}号") for n in range(1, 21)]
    await _import(client, ledger(tmp_path / "g1.csv", rows, encoding="gb18030"))
    edited = list(rows)
    edited[2] = row(3, region=region, name="改名")
    edited.append(row(12, region=region, name="重复"))  # repeats a skipped line's 国标编码
    path = ledger(tmp_path / "g2.csv", edited, encoding="gb18030")
    seen = []
    for reader in ("process", "thread"):
        for skip in (True, False):
            report = await _import(client, path, dry_run=True, reader=reader, skip_unchanged=skip)
            seen.append(_seen(report))
    assert seen[0] == seen[1] == seen[2] == seen[3]
    assert [(e.row, e.field) for e in report.errors] == [(22, "gb_id")]
    # A write that bypasses every writer stays: the skip really happened.
    pool = client.app[POOL]
    gb = row(7, region=region)[0]
    await pool.execute("UPDATE cameras SET name = 'untouched' WHERE gb_id = $1", gb)
    committed = await _import(client, path, partial=True, reader="process")
    assert (committed.updated, committed.unchanged) == (1, 19)
    assert await pool.fetchval("SELECT name FROM cameras WHERE gb_id = $1", gb) == "untouched"

"""Ledger import end to end against the real database: all-or-nothing, partial, idempotent."""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from api.state import BOX, POOL
from camera_registry.actor import Actor, Role
from geo.crs import wgs84_to_gcj02
from ingest.errors import LedgerFormatError
from ingest.ledger.source import import_ledger

from ..conftest import Tok, schema_dsn

HEADER = ["国标编码", "点位名称", "点位类型", "经度", "纬度", "方向角", "录像保存天数", "备注"]
ADMIN = Actor("test:import", Role.ADMIN)


def ledger(
    path: Path, rows: list[list[Any]], header: list[str] = HEADER, encoding: str = "utf-8"
) -> Path:
    with path.open("w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def row(serial: int, region: str = "140105", **over: Any) -> list[Any]:
    base = {
        "gb": f"{region}0000132{5}{serial:06d}",
        "name": f"点位{serial}",
        "level": "二类",
        "lon": 112.55 + serial * 1e-4,
        "lat": 37.80 + serial * 1e-4,
        "az": 90,
        "days": 30,
        "note": "",
    }
    base.update(over)
    return list(base.values())


async def _import(client: TestClient, path: Path, actor: Actor = ADMIN, **kw: Any) -> Any:
    return await import_ledger(client.app[POOL], client.app[BOX], actor, path, **kw)


async def _count(client: TestClient, prefix: str) -> int:
    return int(
        await client.app[POOL].fetchval(
            "SELECT count(*) FROM cameras WHERE gb_id LIKE $1", prefix + "%"
        )
    )


async def test_import_rejects_row_with_swapped_lat_lon_and_imports_nothing(
    client: TestClient, tmp_path: Path
) -> None:
    path = ledger(tmp_path / "a.csv", [row(1), row(2, lon=37.81, lat=112.56), row(3, level="四类")])
    report = await _import(client, path)
    assert not report.committed and report.status == "rejected"
    assert [(e.row, e.field) for e in report.errors] == [(3, "lat"), (4, "level")]
    assert "swapped" in report.errors[0].message
    assert await _count(client, "1401050000132500000") == 0
    assert "--partial" in report.summary()
    assert report.warnings == ["column '备注' is not a camera field and was ignored"]


async def test_partial_imports_the_good_rows_and_still_lists_the_bad(
    client: TestClient, tmp_path: Path
) -> None:
    path = ledger(tmp_path / "b.csv", [row(11), row(12, lat="北纬"), row(13)])
    report = await _import(client, path, partial=True)
    assert report.committed and report.inserted == 2 and report.rows_bad == 1
    assert [(e.row, e.field) for e in report.errors] == [(3, "lat")]
    assert await _count(client, "14010500001325000011") == 1


async def test_reimporting_the_same_file_changes_nothing(
    client: TestClient, tmp_path: Path
) -> None:
    path = ledger(tmp_path / "c.csv", [row(n, region="140106") for n in range(20, 40)])
    first = await _import(client, path)
    assert (first.inserted, first.updated) == (20, 0)
    pool = client.app[POOL]
    before = await pool.fetch(
        "SELECT id, version, updated_at FROM cameras WHERE region_code = '140106' ORDER BY id"
    )
    again = await _import(client, path)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 20)
    after = await pool.fetch(
        "SELECT id, version, updated_at FROM cameras WHERE region_code = '140106' ORDER BY id"
    )
    assert before == after


async def test_changed_row_is_updated_with_before_and_after_in_the_audit(
    client: TestClient, tmp_path: Path
) -> None:
    rows = [row(n, region="140107") for n in range(1, 4)]
    await _import(client, ledger(tmp_path / "d1.csv", rows))
    rows[1] = row(2, region="140107", name="改名后的点位", az=180)
    report = await _import(client, ledger(tmp_path / "d2.csv", rows))
    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 2)
    rec = await client.app[POOL].fetchrow(
        "SELECT before, after FROM audit_log WHERE action = 'camera.import_update' "
        "AND after->>'gb_id' = $1",
        "14010700001325000002",
    )
    assert rec["before"]["name"] == "点位2" and rec["after"]["name"] == "改名后的点位"
    assert rec["after"]["azimuth"] == 180 and rec["after"]["version"] == 2


async def test_columns_the_file_lacks_keep_their_stored_values(
    client: TestClient, tmp_path: Path
) -> None:
    await _import(client, ledger(tmp_path / "e1.csv", [row(1, region="140108", az=135)]))
    slim = ["国标编码", "点位名称", "点位类型", "经度", "纬度", "录像保存天数"]
    r = row(1, region="140108")
    report = await _import(client, ledger(tmp_path / "e2.csv", [[*r[:5], 30]], header=slim))
    assert report.unchanged == 1
    az = await client.app[POOL].fetchval("SELECT azimuth FROM cameras WHERE gb_id = $1", r[0])
    assert az == 135


async def test_gbk_ledger_with_amap_coordinates_is_stored_as_wgs84(
    client: TestClient, tmp_path: Path
) -> None:
    glon, glat = (float(v) for v in wgs84_to_gcj02(112.6, 37.9))
    header = ["设备编码", "名称", "级别", "经度", "纬度", "坐标系", "存储天数"]
    path = ledger(
        tmp_path / "gbk.csv",
        [["14010900001325000001", "晋源区晋祠路口", "三类", glon, glat, "高德", ""]],
        header=header,
        encoding="gb18030",
    )
    report = await _import(client, path)
    assert report.inserted == 1, report.errors
    lon, lat = await client.app[POOL].fetchrow(
        "SELECT lon, lat FROM cameras WHERE gb_id = '14010900001325000001'"
    )
    assert lon == pytest.approx(112.6, abs=1e-6) and lat == pytest.approx(37.9, abs=1e-6)


async def test_duplicate_gb_id_in_one_file_names_both_rows(
    client: TestClient, tmp_path: Path
) -> None:
    path = ledger(tmp_path / "dup.csv", [row(61), row(62), row(61, name="重复")])
    report = await _import(client, path)
    assert not report.committed
    assert [(e.row, e.field) for e in report.errors] == [(4, "gb_id")]
    assert "row 2" in report.errors[0].message


async def test_rows_without_gb_id_get_ids_and_a_reimport_finds_them_again(
    client: TestClient, tmp_path: Path
) -> None:
    header = ["行政区划", "点位名称", "点位类型", "经度", "纬度"]
    rows = [["140110", f"无编码点位{n}", "三类", 112.5, 37.7 + n * 1e-3] for n in range(3)]
    first = await _import(client, ledger(tmp_path / "g1.csv", rows, header=header))
    assert first.inserted == 3, first.errors
    ids = await client.app[POOL].fetch("SELECT gb_id FROM cameras WHERE region_code = '140110'")
    assert all(len(r["gb_id"]) == 20 and r["gb_id"].startswith("140110") for r in ids)
    again = await _import(client, ledger(tmp_path / "g2.csv", rows, header=header))
    assert (again.inserted, again.unchanged) == (0, 3)


async def test_dry_run_reports_counts_and_changes_nothing(
    client: TestClient, tmp_path: Path
) -> None:
    path = ledger(tmp_path / "dry.csv", [row(n, region="140121") for n in range(5)])
    report = await _import(client, path, dry_run=True)
    assert report.inserted == 5 and not report.committed
    assert await _count(client, "140121") == 0


async def test_dry_run_with_bad_rows_says_the_real_run_would_import_nothing(
    client: TestClient, tmp_path: Path
) -> None:
    rows = [row(1, region="140181"), row(2, region="140181", lat="x"),
            row(3, region="140181"), row(4, region="140181", level="四类")]  # fmt: skip
    path = ledger(tmp_path / "dry-bad.csv", rows)
    report = await _import(client, path, dry_run=True)
    assert report.status == "rejected" and not report.committed
    assert (report.inserted, report.updated, report.unchanged) == (2, 0, 0)  # with --partial
    assert report.summary() == (
        "dry-bad.csv: dry run: would import nothing: 2 of 4 rows are bad (lat: 1, level: 1); "
        "with --partial the 2 good rows would be imported (2 new, 0 updated, 0 unchanged)"
    )
    partial = await _import(client, path, dry_run=True, partial=True)
    assert partial.status == "succeeded"
    assert partial.summary() == (
        "dry-bad.csv: dry run: would import 2 of 4 rows (2 new, 0 updated, 0 unchanged); "
        "2 bad rows would be skipped (lat: 1, level: 1); nothing was changed"
    )
    assert await _count(client, "140181") == 0


async def test_rows_outside_the_importers_scope_are_bad_rows(
    client: TestClient, tmp_path: Path
) -> None:
    scoped = Actor("test:scoped", Role.TECHNICIAN, scope="1401")
    path = ledger(tmp_path / "scope.csv", [row(1, region="140122"), row(1, region="140211")])
    report = await _import(client, path, actor=scoped)
    assert [(e.row, e.field) for e in report.errors] == [(3, "region_code")]
    assert "scope" in report.errors[0].message


async def test_import_over_http_runs_as_a_job_with_progress_and_every_bad_row(
    client: TestClient, auth: Tok, tmp_path: Path
) -> None:
    path = ledger(
        tmp_path / "http.csv", [row(n, region="140123") for n in range(1, 6)] + [row(9, lon="x")]
    )
    h = await auth("technician")

    async def submit(query: str) -> dict[str, Any]:
        form = FormData()
        form.add_field("file", path.read_bytes(), filename="台账.csv", content_type="text/csv")
        resp = await client.post(f"/api/v1/imports?{query}", data=form, headers=h)
        assert resp.status == 202, await resp.text()
        job = await resp.json()
        for _ in range(200):
            got = await (await client.get(job["url"], headers=h)).json()
            if got["status"] not in ("queued", "running"):
                return got
            await asyncio.sleep(0.05)
        raise AssertionError("import job did not finish")

    rejected = await submit("")
    assert rejected["status"] == "rejected" and rejected["inserted"] == 0
    assert rejected["errors"] == [{"row": 7, "field": "lon", "message": "经度/lon is not a number"}]
    done = await submit("partial=1")
    assert done["status"] == "succeeded" and done["inserted"] == 5 and done["rows_bad"] == 1
    assert done["progress"] == 1
    errs = await (
        await client.get(
            f"{done['url'] if 'url' in done else '/api/v1/imports/' + done['id']}/errors", headers=h
        )
    ).json()
    assert [e["row"] for e in errs["items"]] == [7]
    other = await auth("technician", "1402")
    assert (await client.get(f"/api/v1/imports/{done['id']}", headers=other)).status == 404
    assert (
        await client.post("/api/v1/imports", data=b"x", headers=await auth("planner"))
    ).status == 403


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "geojson"])
async def test_export_reimports_unchanged(
    client: TestClient, auth: Tok, tmp_path: Path, fmt: str
) -> None:
    await _import(
        client, ledger(tmp_path / "x.csv", [row(n, region="140181") for n in range(1, 8)])
    )
    resp = await client.get(
        f"/api/v1/cameras/export?format={fmt}&region=140181", headers=await auth("planner")
    )
    assert resp.status == 200, await resp.text()
    path = tmp_path / f"export.{fmt}"
    path.write_bytes(await resp.read())
    report = await _import(client, path)
    assert (report.inserted, report.updated, report.unchanged) == (0, 0, 7), report.errors


@pytest.mark.parametrize("fmt", ["csv", "geojson", "xlsx"])
async def test_cli_export_writes_the_http_ledger_and_it_reimports_unchanged(
    client: TestClient, auth: Tok, database_url: str, schema: str, settings: Any,
    tmp_path: Path, fmt: str,
) -> None:  # fmt: skip
    await _import(
        client, ledger(tmp_path / "x.csv", [row(n, region="140183") for n in range(1, 6)])
    )
    env = {
        **os.environ,
        "CAMREG_DATABASE_URL": schema_dsn(database_url, schema),
        "CAMREG_DATA_DIR": str(settings.data_dir),
        "CAMREG_SECRET_KEY": settings.secret_key.get_secret_value(),
    }
    out = tmp_path / f"cli-export.{fmt}"
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", "export", str(out), "--region", "140183", "--level", "2"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == f"exported 5 cameras to {out} ({fmt})"
    if fmt != "xlsx":  # (a workbook carries its creation time)
        resp = await client.get(
            f"/api/v1/cameras/export?format={fmt}&region=140183&level=2",
            headers=await auth("planner"),
        )
        assert await asyncio.to_thread(out.read_bytes) == await resp.read()
    report = await _import(client, out)
    assert (report.inserted, report.updated, report.unchanged) == (0, 0, 5), report.errors


def test_cli_export_to_stdout_and_a_bad_filter(
    database_url: str, schema: str, settings: Any
) -> None:
    env = {
        **os.environ,
        "CAMREG_DATABASE_URL": schema_dsn(database_url, schema),
        "CAMREG_DATA_DIR": str(settings.data_dir),
        "CAMREG_SECRET_KEY": settings.secret_key.get_secret_value(),
    }

    def camreg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "api.cli", "export", *args],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip

    csv_out = camreg("--region", "1401")
    assert csv_out.returncode == 0, csv_out.stderr
    header = csv_out.stdout.splitlines()[0].lstrip("\ufeff")  # a BOM for Excel, if any
    assert header.startswith("国标编码,点位名称")
    bad = camreg("--region", "14x")
    assert bad.returncode == 2 and "region: use 2-6 leading digits" in bad.stderr
    assert camreg("--format", "xlsx").returncode == 2  # a workbook needs a file


def test_cli_import_prints_each_bad_row_and_exits_1(
    database_url: str, schema: str, settings: Any, tmp_path: Path
) -> None:
    path = ledger(tmp_path / "cli.csv", [row(1, region="140105"), row(2, lon=37.8, lat=112.5)])
    env = {
        **os.environ,
        "CAMREG_DATABASE_URL": schema_dsn(database_url, schema),
        "CAMREG_DATA_DIR": str(settings.data_dir),
        "CAMREG_SECRET_KEY": settings.secret_key.get_secret_value(),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "api.cli", "import", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "cli.csv: row 3: lat:" in proc.stderr and "swapped" in proc.stderr
    assert "cli.csv: nothing imported: 1 of 2 rows are bad (lat: 1)" in proc.stdout
    assert "use --partial to import the 1 good rows" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "api.cli", "import", "--partial", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 new" in proc.stdout


def test_cli_dry_run_of_a_file_with_bad_rows_exits_1_and_says_what_a_real_run_would_do(
    database_url: str, schema: str, settings: Any, tmp_path: Path
) -> None:
    rows = [row(1, region="140182"), row(2, region="140182", lat="x"),
            row(3, region="140182"), row(4, region="140182", level="四类")]  # fmt: skip
    path = ledger(tmp_path / "dry.csv", rows)
    env = {
        **os.environ,
        "CAMREG_DATABASE_URL": schema_dsn(database_url, schema),
        "CAMREG_DATA_DIR": str(settings.data_dir),
        "CAMREG_SECRET_KEY": settings.secret_key.get_secret_value(),
    }

    def camreg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "api.cli", "import", *args, str(path)],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip

    dry = camreg("--dry-run")
    assert dry.returncode == 1, dry.stderr
    assert "would import nothing: 2 of 4 rows are bad" in dry.stdout
    assert "with --partial the 2 good rows would be imported (2 new," in dry.stdout
    dry_partial = camreg("--dry-run", "--partial")
    assert dry_partial.returncode == 0, dry_partial.stderr
    assert "would import 2 of 4 rows (2 new, 0 updated, 0 unchanged)" in dry_partial.stdout


async def test_big_file_reader_process_reports_rows_and_file_errors_like_the_thread(
    client: TestClient, tmp_path: Path
) -> None:
    path = ledger(
        tmp_path / "p.csv", [row(n, region="140202") for n in range(1, 40)] + [row(99, lat="x")]
    )
    by_process = await _import(client, path, reader="process", partial=True)
    assert by_process.inserted == 39
    assert [(e.row, e.field) for e in by_process.errors] == [(41, "lat")]
    assert by_process.warnings == ["column '备注' is not a camera field and was ignored"]
    empty = tmp_path / "empty.csv"
    empty.write_text("名称,备注\n甲,乙\n", encoding="utf-8")
    with pytest.raises(LedgerFormatError, match=r"empty\.csv") as info:
        await _import(client, empty, reader="process")
    with pytest.raises(LedgerFormatError) as same:
        await _import(client, empty, reader="thread")
    assert str(info.value) == str(same.value)
    # An upload is stored under a private name: messages use the user's (`filename`).
    for reader in ("process", "thread"):
        with pytest.raises(LedgerFormatError, match=r"^小店区台账\.csv line 1: ") as named:
            await _import(client, empty, reader=reader, filename="小店区台账.csv")
        assert "empty.csv" not in str(named.value)


async def test_ctrl_c_reaching_the_reader_process_leaves_it_quiet_and_reading(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Big ledgers are read in a second process; a terminal's Ctrl-C reaches it too. It leaves
    the interrupt to the importer (no traceback of its own) and keeps its chunks coming."""
    import signal

    from ingest.ledger.source import _ProcessSource

    path = ledger(tmp_path / "big.csv", [row(n, region="140184") for n in range(1, 121)])
    source = _ProcessSource(path, b"k" * 32, "wgs84", None, chunk_rows=10)
    try:
        await source.start()
        assert source.proc.pid is not None
        await asyncio.sleep(0.5)  # the reader blocks on its queue of two chunks
        os.kill(source.proc.pid, signal.SIGINT)
        rows = 0
        while (chunk := await source.next()) is not None:
            rows += chunk.rows
        assert rows == 120
    finally:
        source.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_a_failure_in_the_import_process_reaches_the_server_as_itself() -> None:
    """What the import process sends for a failure: the exception itself when pickling keeps
    its class and words, else its kind, class name and words, rebuilt with the same text."""
    from camera_registry.store.bulk import ImportConnectionLost
    from ingest.errors import LedgerFormatError
    from ingest.ledger.aside import _portable, _relayed

    fmt = LedgerFormatError("bad header", file="a.csv", line=1)
    kind, exc = _portable(fmt)
    assert kind == "raise" and exc is fmt

    class Unpicklable(Exception):  # a local class: pickling it fails
        pass

    described = _portable(Unpicklable("merge: 不行"))
    assert described == ("fail", "other", "Unpicklable", "merge: 不行")
    rebuilt = _relayed(*described[1:])
    assert f"{rebuilt.__class__.__name__}: {rebuilt}" == "Unpicklable: merge: 不行"

    class GoneLocal(ConnectionResetError):
        pass

    lost = _relayed(*_portable(GoneLocal("reset"))[1:])
    assert isinstance(lost, OSError) and str(lost) == "reset"  # the job runner's "lost" kind

    class SlowLocal(TimeoutError):
        pass

    assert isinstance(_relayed(*_portable(SlowLocal("late"))[1:]), TimeoutError)
    assert isinstance(
        _relayed("connection_lost", "ImportConnectionLost", "gone"), ImportConnectionLost
    )

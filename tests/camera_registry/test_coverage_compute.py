"""Properties of one county's measurement (the worker-process side of a run), on arrays:
adding a camera never lowers coverage, and gaps plus covered cells partition the grid."""

from __future__ import annotations

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from camera_registry.planning.compute import CountyInput, CoverageParams, compute_county

from .coverage_fixtures import LAT0, LON0, lonlat, square

COUNTY = shapely.to_wkb(square(0.0, 0.0, 500.0))
VILLAGES = np.array([lonlat(x, y) for x, y in [(0, 149), (300, -300), (-450, 450)]])
JUNCTIONS = np.array([lonlat(x, y) for x, y in [(0, 70), (-200, 100), (400, 0)]])

# x, y on a 10 m lattice offset by 5 m, so no camera sits on the county border (where
# "inside" would depend on centimetres of projection round trip): some stand outside and
# still reach in.
position = st.integers(-60, 59).map(lambda k: k * 10.0 + 5.0)
camera = st.tuples(
    position,
    position,
    st.sampled_from([1.0, 2.0, 3.0, 9.0]),
    st.one_of(st.none(), st.floats(0, 359.9)),  # azimuth; None: an assumed disc
    st.floats(20, 120),  # hfov
    st.one_of(st.none(), st.floats(10, 200)),  # max view distance
)


def _county(
    cams: list[tuple[float, float, float, float | None, float, float | None]],
) -> CountyInput:
    rows = []
    for x, y, level, az, hfov, mvd in cams:
        lon, lat = lonlat(x, y)
        rows.append(
            [
                lon,
                lat,
                level,
                np.nan if az is None else az,
                hfov,
                np.nan if mvd is None else mvd,
                np.nan,
            ]
        )
    return CountyInput(
        adcode="140105",
        name="小店区",
        zone="urban",
        boundary_wkb=COUNTY,
        builtup_wkb=(),
        centre=(LON0, LAT0),
        cameras=np.array(rows, dtype=np.float64).reshape(-1, 7),
        village_ids=np.arange(1, 4),
        village_names=("a", "b", "c"),
        village_lonlat=VILLAGES,
        village_population=np.full(3, np.nan),
        junction_ids=np.arange(1, 4),
        junction_names=(None, None, None),
        junction_lonlat=JUNCTIONS,
        junction_weight=np.full(3, np.nan),
        junction_trunk=np.zeros(3, dtype=np.bool_),
        params=CoverageParams(),
    )


@settings(max_examples=40, deadline=None)
@given(st.lists(camera, max_size=12), camera)
def test_adding_a_camera_never_lowers_coverage(
    cams: list[tuple[float, float, float, float | None, float, float | None]],
    extra: tuple[float, float, float, float | None, float, float | None],
) -> None:
    before = compute_county(_county(cams)).summary
    after = compute_county(_county([*cams, extra])).summary
    for key in ("cells_covered", "villages_covered", "junctions_covered"):
        assert after[key] >= before[key], key
    assert after["cells"] == before["cells"] == 100


@settings(max_examples=40, deadline=None)
@given(st.lists(camera, max_size=12))
def test_gaps_and_covered_cells_partition_the_grid(
    cams: list[tuple[float, float, float, float | None, float, float | None]],
) -> None:
    res = compute_county(_county(cams))
    s = res.summary
    cell_gaps = [g for g in res.gaps if g.kind == "cell"]
    uncovered_area = sum(g.area_m2 or 0.0 for g in cell_gaps)
    assert uncovered_area == np.float64((s["cells"] - s["cells_covered"]) * 100 * 100)
    # The demand left for proposals is exactly what is uncovered.
    kinds = np.bincount(res.demand.kind, minlength=3)
    assert kinds.tolist() == [
        s["cells"] - s["cells_covered"],
        s["villages"] - s["villages_covered"],
        s["junctions"] - s["junctions_covered"],
    ]
    assumed = sum(1 for c in cams if c[3] is None and -500 < c[0] < 500 and -500 < c[1] < 500)
    assert s["cameras_assumed"] == assumed


def test_a_rural_county_is_gridded_only_where_built_up_or_drawn_urban() -> None:
    rural = _county([])
    # A 400 m built-up square half outside the county: only its inside half is gridded.
    town = shapely.to_wkb(square(500.0, 0.0, 200.0))
    res = compute_county(CountyInput(**{**rural.__dict__, "zone": "rural", "builtup_wkb": (town,)}))
    assert res.summary["zone"] == "rural"
    assert res.summary["cells"] == 2 * 4  # x in (300, 500) by y in (-200, 200): 2 x 4 cells
    assert compute_county(CountyInput(**{**rural.__dict__, "zone": "rural"})).summary["cells"] == 0
    # The policy's drawn urban polygon adds cells; a drawn rural one takes them away.
    drawn = CoverageParams(urban_polygons_wkb=shapely.to_wkb(square(-300.0, -300.0, 100.0)))
    res = compute_county(CountyInput(**{**rural.__dict__, "zone": "rural", "params": drawn}))
    assert res.summary["cells"] == 4
    carve = CoverageParams(rural_polygons_wkb=shapely.to_wkb(square(0.0, 0.0, 200.0)))
    res = compute_county(CountyInput(**{**rural.__dict__, "params": carve}))
    assert res.summary["cells"] == 100 - 16

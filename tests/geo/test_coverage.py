"""Stories for geo.coverage, geo.gaps and geo.project: a zone's coverage report adds up."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geo.coverage import (
    coverage_counts,
    covered_mask,
    grid_cells,
    summarise_zone,
)
from geo.errors import GeoError, InvalidZone
from geo.footprint import Footprints, covers, footprints
from geo.gaps import merge_uncovered_cells
from geo.project import LocalProjection, equal_area_km2, gauss_kruger_3deg_epsg

DEFAULTS = {1: 150.0, 2: 100.0, 3: 50.0, 9: 30.0}
KM_SQUARE = shapely.box(0.0, 0.0, 1000.0, 1000.0)


def _discs(x: list[float], y: list[float], radius: list[float]) -> Footprints:
    """360° domes: discs with a known radius, so tests are hand-checkable."""
    n = len(x)
    return footprints(
        x, y, [0.0] * n, [360.0] * n, radius, [1] * n, default_radius_by_level=DEFAULTS
    )


# --- projection -------------------------------------------------------------------


def test_local_projection_round_trips_and_measures_a_known_distance() -> None:
    proj = LocalProjection(116.4, 39.9)
    lon = np.array([116.40, 116.45, 116.30])
    lat = np.array([39.90, 39.95, 39.85])
    x, y = proj.forward(lon, lat)
    assert (x[0], y[0]) == pytest.approx((0.0, 0.0), abs=1e-6)
    back_lon, back_lat = proj.inverse(x, y)
    np.testing.assert_allclose(back_lon, lon, atol=1e-9)
    np.testing.assert_allclose(back_lat, lat, atol=1e-9)
    # 0.01° of latitude is ~1111 m anywhere.
    _, y1 = proj.forward(116.4, 39.91)
    assert float(y1) == pytest.approx(1111.0, rel=0.002)


def test_projection_rejects_swapped_centre() -> None:
    with pytest.raises(GeoError, match="longitude comes first"):
        LocalProjection(39.9, 116.4)


@pytest.mark.parametrize(
    ("lon", "epsg"), [(75.0, 4513), (116.4, 4527), (121.47, 4528), (135.0, 4533), (118.5, 4528)]
)
def test_gauss_kruger_zone_epsg_carries_the_zone_number(lon: float, epsg: int) -> None:
    # 118.5°E is on the boundary of zones 39 and 40; the tie goes east.
    assert gauss_kruger_3deg_epsg(lon) == epsg


def test_gauss_kruger_refuses_a_latitude_passed_as_longitude() -> None:
    with pytest.raises(GeoError, match="outside China"):
        gauss_kruger_3deg_epsg(39.9)


def test_equal_area_of_one_degree_cell_near_beijing() -> None:
    # Spherical-zone formula on the authalic sphere is within 0.5 % of the ellipsoid here.
    r = 6371.0
    expected = r * r * math.radians(1.0) * (math.sin(math.radians(40)) - math.sin(math.radians(39)))
    assert equal_area_km2(shapely.box(116, 39, 117, 40)) == pytest.approx(expected, rel=0.005)
    assert equal_area_km2(shapely.Polygon()) == 0.0


def test_projected_zone_polygon_keeps_its_area() -> None:
    proj = LocalProjection(116.5, 39.5)
    zone = proj.forward_geometry(shapely.box(116, 39, 117, 40))
    assert shapely.area(zone) / 1e6 == pytest.approx(equal_area_km2(shapely.box(116, 39, 117, 40)))


# --- grid and coverage ----------------------------------------------------------------


def test_km_square_has_100_by_100_cells_of_10_m() -> None:
    cx, cy = grid_cells(KM_SQUARE, 10.0)
    assert cx.shape == (10_000,)
    assert cx.min() == 5.0
    assert cy.max() == 995.0


def test_disc_of_200_m_in_a_km_square_covers_pi_times_0_04() -> None:
    cell = 10.0
    cx, cy = grid_cells(KM_SQUARE, cell)
    share = covered_mask(_discs([500.0], [500.0], [200.0]), cx, cy).mean()
    expected = math.pi * 200.0**2 / 1e6
    # Cells straddling the circle can go either way: perimeter × cell / area bounds the error.
    assert share == pytest.approx(expected, abs=2 * math.pi * 200.0 * cell / 1e6)


def test_village_149_m_from_a_150_m_camera_is_covered_and_151_m_is_not() -> None:
    summary = summarise_zone(
        "130102",
        "rural",
        KM_SQUARE,
        _discs([500.0], [500.0], [150.0]),
        villages_xy=([649.0, 500.0 + 151.0 / math.sqrt(2)], [500.0, 500.0 + 151.0 / math.sqrt(2)]),
    )
    assert (summary.villages_total, summary.villages_covered) == (2, 1)
    assert summary.village_share == 0.5


def test_zone_summary_counts_cells_cameras_and_junctions() -> None:
    fp = _discs([500.0, 5000.0], [500.0, 5000.0], [200.0, 100.0])
    summary = summarise_zone(
        "z1", "urban", KM_SQUARE, fp, cell_m=100.0, junctions_xy=([500.0, 10.0], [600.0, 10.0])
    )
    assert summary.cells_total == 100
    assert summary.area_km2 == pytest.approx(1.0)
    assert summary.cameras == 1  # the camera at (5000, 5000) stands outside
    assert summary.cameras_per_km2 == pytest.approx(1.0)
    assert summary.covered_share == summary.cells_covered / 100
    assert (summary.junctions_total, summary.junctions_covered) == (2, 1)
    assert (summary.villages_total, summary.villages_covered) == (0, 0)


def test_empty_zone_gives_an_empty_summary_not_a_crash() -> None:
    fp = _discs([0.0], [0.0], [100.0])
    assert grid_cells(shapely.Polygon())[0].shape == (0,)
    summary = summarise_zone("empty", "urban", shapely.Polygon(), fp)
    assert summary.cells_total == 0
    assert summary.covered_share is None
    assert summary.cameras_per_km2 is None
    assert covered_mask(fp, [], []).shape == (0,)


def test_no_cameras_covers_nothing() -> None:
    fp = footprints([], [], [], [], [], np.zeros(0, dtype=int), default_radius_by_level=DEFAULTS)
    cx, cy = grid_cells(KM_SQUARE, 100.0)
    assert not covered_mask(fp, cx, cy).any()


def test_self_intersecting_zone_is_refused_with_a_fixable_message() -> None:
    bow_tie = shapely.Polygon([(0, 0), (1000, 1000), (1000, 0), (0, 1000)])
    with pytest.raises(InvalidZone, match=r"Self-intersection.*make_valid"):
        grid_cells(bow_tie)
    with pytest.raises(InvalidZone, match="Polygon or MultiPolygon"):
        grid_cells(shapely.Point(0, 0))


def test_coverage_counts_overlapping_cameras_and_small_chunks_agree() -> None:
    fp = _discs([0.0, 50.0, 500.0], [0.0, 0.0, 0.0], [100.0, 100.0, 30.0])
    px = np.array([25.0, -90.0, 140.0, 500.0, 300.0])
    py = np.zeros(5)
    counts = coverage_counts(fp, px, py, chunk=2)
    assert counts.tolist() == [2, 1, 1, 1, 0]
    assert covered_mask(fp, px, py, chunk=2).tolist() == [True, True, True, True, False]


cams = st.lists(
    st.tuples(
        st.floats(0, 1000),
        st.floats(0, 1000),
        st.floats(0, 360),
        st.floats(10, 360),
        st.floats(5, 400),
    ),
    min_size=0,
    max_size=12,
)


def _fp(rows: list[tuple[float, float, float, float, float]]) -> Footprints:
    a = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return footprints(
        a[:, 0],
        a[:, 1],
        a[:, 2],
        a[:, 3],
        a[:, 4],
        np.ones(a.shape[0], dtype=int),
        default_radius_by_level=DEFAULTS,
    )


@settings(max_examples=50, deadline=None)
@given(
    rows=cams,
    extra=st.tuples(
        st.floats(0, 1000),
        st.floats(0, 1000),
        st.floats(0, 360),
        st.floats(10, 360),
        st.floats(5, 400),
    ),
)
def test_adding_a_camera_never_lowers_coverage(
    rows: list[tuple[float, float, float, float, float]],
    extra: tuple[float, float, float, float, float],
) -> None:
    cx, cy = grid_cells(KM_SQUARE, 50.0)
    before = covered_mask(_fp(rows), cx, cy)
    after = covered_mask(_fp([*rows, extra]), cx, cy)
    assert (after >= before).all()


@settings(max_examples=50, deadline=None)
@given(rows=cams)
def test_covered_and_uncovered_cells_partition_the_zone(
    rows: list[tuple[float, float, float, float, float]],
) -> None:
    cell = 50.0
    cx, cy = grid_cells(KM_SQUARE, cell)
    mask = covered_mask(_fp(rows), cx, cy)
    gaps = merge_uncovered_cells(cx, cy, mask, cell)
    assert sum(g.n_cells for g in gaps) == int((~mask).sum())
    gap_area = sum(g.area_m2 for g in gaps)
    assert gap_area + mask.sum() * cell * cell == pytest.approx(shapely.area(KM_SQUARE))
    assert all(shapely.is_valid(g.polygon) for g in gaps)
    areas = [g.area_m2 for g in gaps]
    assert areas == sorted(areas, reverse=True)


# --- gaps -------------------------------------------------------------------------------


def test_uncovered_cells_merge_into_edge_connected_patches_largest_first() -> None:
    # 3x3 grid of 10 m cells; uncovered: an L of three cells and one lone corner cell.
    cx, cy = np.meshgrid(np.arange(3) * 10.0 + 5.0, np.arange(3) * 10.0 + 5.0)
    cx, cy = cx.ravel(), cy.ravel()
    covered = np.ones(9, dtype=bool)
    covered[[0, 1, 3]] = False  # (5,5), (15,5), (5,15)
    covered[8] = False  # (25,25), diagonal-only neighbour of nothing uncovered
    gaps = merge_uncovered_cells(cx, cy, covered, 10.0)
    assert [g.n_cells for g in gaps] == [3, 1]
    assert gaps[0].area_m2 == pytest.approx(300.0)
    assert gaps[0].polygon.geom_type == "Polygon"
    assert gaps[0].priority == pytest.approx(300.0)


def test_weights_reorder_gaps_by_population_times_area() -> None:
    cx = np.array([5.0, 15.0, 55.0])
    cy = np.array([5.0, 5.0, 5.0])
    gaps = merge_uncovered_cells(cx, cy, np.zeros(3, dtype=bool), 10.0, weight=[1.0, 1.0, 10.0])
    assert [g.n_cells for g in gaps] == [1, 2]
    assert gaps[0].weight == 10.0
    assert gaps[0].priority == pytest.approx(1000.0)


def test_everything_covered_means_no_gaps_and_bad_weights_are_refused() -> None:
    assert merge_uncovered_cells([5.0], [5.0], [True], 10.0) == []
    assert merge_uncovered_cells([], [], [], 10.0) == []
    with pytest.raises(GeoError, match="non-negative"):
        merge_uncovered_cells([5.0], [5.0], [False], 10.0, weight=[-1.0])


def test_point_order_and_chunking_do_not_change_the_answer_and_nan_points_stay_uncovered() -> None:
    rng = np.random.default_rng(3)
    n_cam = 40
    fp = footprints(
        rng.uniform(0, 1000, n_cam),
        rng.uniform(0, 1000, n_cam),
        np.where(rng.random(n_cam) < 0.3, np.nan, rng.uniform(0, 360, n_cam)),
        rng.uniform(20, 120, n_cam),
        rng.uniform(20, 200, n_cam),
        np.ones(n_cam, dtype=int),
        default_radius_by_level=DEFAULTS,
    )
    cx, cy = grid_cells(KM_SQUARE, 20.0)
    reference = coverage_counts(fp, cx, cy)
    perm = rng.permutation(cx.size)
    shuffled = coverage_counts(fp, cx[perm], cy[perm], chunk=97)
    np.testing.assert_array_equal(shuffled, reference[perm])
    px = np.r_[cx[:5], np.nan]
    py = np.r_[cy[:5], 500.0]
    mask = covered_mask(fp, px, py, chunk=2)
    assert not mask[-1]
    np.testing.assert_array_equal(mask[:5], reference[:5] > 0)


def test_covered_mask_matches_brute_force_over_all_pairs() -> None:
    rng = np.random.default_rng(11)
    n_cam = 25
    fp = footprints(
        rng.uniform(0, 1000, n_cam),
        rng.uniform(0, 1000, n_cam),
        rng.uniform(0, 360, n_cam),
        rng.uniform(20, 180, n_cam),
        rng.uniform(20, 250, n_cam),
        np.ones(n_cam, dtype=int),
        default_radius_by_level=DEFAULTS,
        mount_height=rng.uniform(3, 10, n_cam),
        tilt_deg=rng.uniform(5, 40, n_cam),
    )
    cx, cy = grid_cells(KM_SQUARE, 25.0)
    cam = np.tile(np.arange(n_cam), cx.size)
    pt = np.repeat(np.arange(cx.size), n_cam)
    brute = covers(fp, cam, cx[pt], cy[pt]).reshape(cx.size, n_cam).sum(axis=1)
    np.testing.assert_array_equal(coverage_counts(fp, cx, cy, chunk=500), brute)

"""Stories for geo.footprint: ledger lens data becomes sectors that coverage can trust."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st

from geo.errors import GeoError
from geo.footprint import (
    DETECT,
    IDENTIFY,
    OBSERVE,
    RECOGNISE,
    Footprints,
    covers,
    dori_distance_m,
    footprints,
    hfov_from_lens,
    sector_polygons,
)

DEFAULTS = {1: 150.0, 2: 100.0, 3: 50.0, 9: 30.0}


def _one(
    azimuth: float,
    hfov: float,
    radius: float,
    *,
    mount_height: list[float] | None = None,
    tilt_deg: list[float] | None = None,
) -> Footprints:
    return footprints(
        [0.0],
        [0.0],
        [azimuth],
        [hfov],
        [radius],
        [1],
        default_radius_by_level=DEFAULTS,
        mount_height=mount_height,
        tilt_deg=tilt_deg,
    )


def test_design_md_lens_example_gives_62_degrees_64_m_detect_and_12_8_m_recognise() -> None:
    assert float(hfov_from_lens(4.0, 4.8)) == pytest.approx(61.93, abs=0.01)
    assert float(dori_distance_m(1920, 4.0, 4.8, DETECT)) == pytest.approx(64.0)
    assert float(dori_distance_m(1920, 4.0, 4.8, RECOGNISE)) == pytest.approx(12.8)
    assert float(dori_distance_m(1920, 4.0, 4.8, OBSERVE)) == pytest.approx(25.6)
    assert float(dori_distance_m(1920, 4.0, 4.8, IDENTIFY)) == pytest.approx(6.4)


def test_missing_or_zero_lens_data_yields_nan_not_a_division_error() -> None:
    out = hfov_from_lens([4.0, 0.0, np.nan], [4.8, 4.8, 4.8])
    assert out[0] > 0
    assert np.isnan(out[1:]).all()
    assert np.isnan(dori_distance_m([1920, 0], [4.0, 4.0], [4.8, 4.8], DETECT)[1])


def test_radius_is_the_smaller_of_max_view_distance_and_dori_distance() -> None:
    fp = footprints(
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [90.0, 90.0, 90.0],
        [np.nan, 60.0, 60.0],
        [200.0, 30.0, np.nan],
        [2, 2, 2],
        default_radius_by_level=DEFAULTS,
        dori_px_per_m=DETECT,
        h_px=[1920, 1920, np.nan],
        focal_mm=4.0,
        sensor_mm=4.8,
    )
    # Camera 0: HFOV from the lens, DORI 64 m beats 200 m. Camera 1: 30 m beats 64 m.
    # Camera 2: no resolution, no max distance -> level 2 default.
    np.testing.assert_allclose(fp.radius_m, [64.0, 30.0, 100.0])
    assert fp.hfov_deg[0] == pytest.approx(61.93, abs=0.01)
    assert not fp.assumed.any()


def test_unknown_azimuth_becomes_an_assumed_full_disc_of_the_level_default() -> None:
    fp = footprints(
        [0.0, 10.0],
        [0.0, 0.0],
        [np.nan, 45.0],
        [60.0, np.nan],
        [500.0, 80.0],
        [3, 1],
        default_radius_by_level=DEFAULTS,
    )
    assert fp.assumed.tolist() == [True, True]
    np.testing.assert_allclose(fp.radius_m, [50.0, 150.0])
    assert (fp.hfov_deg == 360.0).all()
    # Behind the "camera" is covered too: bearings are ignored for an assumed disc.
    assert covers(fp, [0], [0.0], [-49.0]).all()


def test_level_without_a_default_radius_is_rejected_with_the_configured_levels() -> None:
    with pytest.raises(GeoError, match=r"level 4,.*\[1, 2, 3, 9\]"):
        footprints([0.0], [0.0], [0.0], [60.0], [50.0], [4], default_radius_by_level=DEFAULTS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hfov": [0.0]}, "HFOV"),
        ({"hfov": [400.0]}, "HFOV"),
        ({"max_view_distance": [-5.0]}, "max view distance"),
        ({"x": [np.nan]}, "no projected position"),
    ],
)
def test_impossible_ledger_values_raise_naming_the_camera(
    kwargs: dict[str, list[float]], message: str
) -> None:
    args: dict[str, object] = {
        "x": [0.0],
        "y": [0.0],
        "azimuth": [0.0],
        "hfov": [60.0],
        "max_view_distance": [50.0],
        "level": [1],
    }
    args.update(kwargs)
    with pytest.raises(GeoError, match=message):
        footprints(**args, default_radius_by_level=DEFAULTS)  # type: ignore[arg-type]


def test_sector_area_matches_pi_r_squared_times_hfov_over_360() -> None:
    fp = footprints(
        [0.0, 1000.0, 2000.0],
        [0.0, 0.0, 0.0],
        [30.0, 350.0, np.nan],
        [62.0, 120.0, 60.0],
        [100.0, 250.0, 80.0],
        [1, 1, 3],
        default_radius_by_level=DEFAULTS,
    )
    polys = sector_polygons(fp)
    assert shapely.is_valid(polys).all()
    expected = np.pi * fp.radius_m**2 * fp.hfov_deg / 360.0
    np.testing.assert_allclose(shapely.area(polys), expected, rtol=0.01)


def test_dead_zone_is_cut_out_of_the_sector_and_of_coverage() -> None:
    # 6 m pole, tilted 20° down, 90° HFOV -> VFOV ~58.7°, lower edge at ~49.4° below horizon.
    fp = _one(0.0, 90.0, 100.0, mount_height=[6.0], tilt_deg=[20.0])
    vfov = math.degrees(2 * math.atan(math.tan(math.radians(45.0)) * 9 / 16))
    expected_near = 6.0 / math.tan(math.radians(20.0 + vfov / 2))
    assert fp.near_m[0] == pytest.approx(expected_near)
    assert not covers(fp, [0], [0.0], [expected_near - 0.1])[0]
    assert covers(fp, [0], [0.0], [expected_near + 0.1])[0]
    area = float(shapely.area(sector_polygons(fp))[0])
    assert area == pytest.approx(np.pi * (100.0**2 - expected_near**2) / 4, rel=0.01)


def test_point_just_inside_and_just_outside_a_sector_edge() -> None:
    fp = _one(90.0, 60.0, 100.0)  # facing east, edges at bearings 60° and 120°
    bearings = np.radians([59.5, 60.5, 119.5, 120.5, 90.0, 90.0])
    dist = np.array([50.0, 50.0, 50.0, 50.0, 99.9, 100.1])
    px, py = dist * np.sin(bearings), dist * np.cos(bearings)
    assert covers(fp, np.zeros(6, dtype=int), px, py).tolist() == [
        False,
        True,
        True,
        False,
        True,
        False,
    ]


def test_sector_facing_north_covers_across_the_0_360_wrap() -> None:
    fp = _one(350.0, 40.0, 100.0)  # covers 330°..10°
    bearings = np.radians([5.0, 355.0, 331.0, 329.0, 11.0, 9.0])
    px, py = 50.0 * np.sin(bearings), 50.0 * np.cos(bearings)
    assert covers(fp, np.zeros(6, dtype=int), px, py).tolist() == [
        True,
        True,
        True,
        False,
        False,
        True,
    ]


def test_azimuth_is_normalised_so_minus_10_equals_350() -> None:
    a = _one(-10.0, 40.0, 100.0)
    b = _one(350.0, 40.0, 100.0)
    assert a.azimuth_deg[0] == pytest.approx(b.azimuth_deg[0])


def test_no_cameras_gives_empty_footprints_and_polygons() -> None:
    fp = footprints([], [], [], [], [], np.zeros(0, dtype=int), default_radius_by_level=DEFAULTS)
    assert len(fp) == 0
    assert sector_polygons(fp).shape == (0,)


@given(
    azimuth=st.floats(0.0, 360.0),
    hfov=st.floats(5.0, 359.0),
    bearing=st.floats(0.0, 360.0),
    dist=st.floats(1.0, 99.0),
)
def test_covers_agrees_with_the_drawn_polygon_away_from_edges(
    azimuth: float, hfov: float, bearing: float, dist: float
) -> None:
    fp = _one(azimuth, hfov, 100.0)
    off = abs((bearing - azimuth + 180.0) % 360.0 - 180.0) - hfov / 2.0
    if abs(off) < 2.0:  # the polygon's chords cut the arc; stay clear of boundaries
        return
    px = dist * math.sin(math.radians(bearing))
    py = dist * math.cos(math.radians(bearing))
    poly = sector_polygons(fp, n_arc=64)[0]
    assert bool(covers(fp, [0], [px], [py])[0]) == bool(shapely.contains_xy(poly, px, py))


def test_subset_and_concat_keep_cameras_aligned() -> None:
    fp = footprints(
        [0.0, 10.0, 20.0],
        [0.0, 0.0, 0.0],
        [0.0, np.nan, 180.0],
        [60.0, 60.0, 90.0],
        [50.0, 50.0, 70.0],
        [1, 3, 2],
        default_radius_by_level=DEFAULTS,
    )
    both = Footprints.concat([fp.subset([2]), fp.subset([0, 1])])
    np.testing.assert_array_equal(both.x, [20.0, 0.0, 10.0])
    np.testing.assert_array_equal(both.radius_m, [70.0, 50.0, 50.0])
    assert both.assumed.tolist() == [False, False, True]
    assert len(Footprints.concat([])) == 0

"""Stories for geo.crs: ledger coordinates from GPS, 高德 and 百度 end up in one WGS-84 store."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geo.crs import (
    CHINA_BBOX,
    CRS_NAMES,
    bd09_to_gcj02,
    bd09_to_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    haversine_m,
    in_china_bbox,
    looks_swapped,
    normalise_crs,
    to_wgs84,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)
from geo.errors import GeoError, UnknownCRS

china_lon = st.floats(min_value=73.5, max_value=135.0, allow_nan=False)
china_lat = st.floats(min_value=18.0, max_value=53.5, allow_nan=False)


def _reference_wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """Scalar transcription of the published algorithm, independent of the vectorised code."""
    a = 6378245.0
    ee = 0.00669342162296594323
    x, y = lon - 105.0, lat - 35.0
    d_lat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    d_lat += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    d_lat += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    d_lat += (160.0 * math.sin(y / 12.0 * math.pi) + 320 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    d_lon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    d_lon += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    d_lon += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    d_lon += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2 / 3
    rad_lat = lat / 180.0 * math.pi
    magic = 1 - ee * math.sin(rad_lat) ** 2
    sqrt_magic = math.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((a * (1 - ee)) / (magic * sqrt_magic) * math.pi)
    d_lon = (d_lon * 180.0) / (a / sqrt_magic * math.cos(rad_lat) * math.pi)
    return lon + d_lon, lat + d_lat


def _reference_gcj02_to_bd09(lon: float, lat: float) -> tuple[float, float]:
    x_pi = math.pi * 3000.0 / 180.0
    z = math.sqrt(lon * lon + lat * lat) + 0.00002 * math.sin(lat * x_pi)
    theta = math.atan2(lat, lon) + 0.000003 * math.cos(lon * x_pi)
    return z * math.cos(theta) + 0.0065, z * math.sin(theta) + 0.006


@given(lon=china_lon, lat=china_lat)
def test_gcj02_round_trip_stays_under_half_a_metre_across_china(lon: float, lat: float) -> None:
    there = wgs84_to_gcj02(lon, lat)
    back = gcj02_to_wgs84(*there)
    assert float(haversine_m(lon, lat, *back)) < 0.5
    # and from the other side: a point read off 高德 survives the trip to WGS-84 and back
    wgs = gcj02_to_wgs84(lon, lat)
    assert float(haversine_m(lon, lat, *wgs84_to_gcj02(*wgs))) < 0.5


def test_gcj02_round_trip_stays_under_half_a_metre_for_100k_random_points() -> None:
    rng = np.random.default_rng(20240501)
    lon = rng.uniform(73.5, 135.0, 100_000)
    lat = rng.uniform(18.0, 53.5, 100_000)
    back_lon, back_lat = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
    assert back_lon.shape == lon.shape
    assert back_lon.dtype == np.float64
    error_m = haversine_m(lon, lat, back_lon, back_lat)
    assert error_m.max() < 0.5
    # the iteration should reach the 1e-7 degree target, i.e. centimetres, not just 0.5 m
    assert error_m.max() < 0.02


def test_gcj02_offset_is_large_enough_that_skipping_it_would_misplace_cameras() -> None:
    lon = np.array([116.404, 121.4737, 113.2644])
    lat = np.array([39.915, 31.2304, 23.1291])
    assert (haversine_m(lon, lat, *wgs84_to_gcj02(lon, lat)) > 100).all()


@given(lon=china_lon, lat=china_lat)
def test_bd09_round_trip_stays_under_half_a_metre_across_china(lon: float, lat: float) -> None:
    assert float(haversine_m(lon, lat, *bd09_to_gcj02(*gcj02_to_bd09(lon, lat)))) < 0.5
    assert float(haversine_m(lon, lat, *bd09_to_wgs84(*wgs84_to_bd09(lon, lat)))) < 0.5


def test_known_point_matches_published_offset() -> None:
    # wandergis/coordtransform README, input (116.404, 39.915) for each direction
    assert np.allclose(
        wgs84_to_gcj02(116.404, 39.915), (116.41024449916938, 39.91640428150164), atol=1e-9
    )
    assert np.allclose(
        gcj02_to_bd09(116.404, 39.915), (116.41036949371029, 39.92133699351021), atol=1e-9
    )
    assert np.allclose(
        bd09_to_gcj02(116.404, 39.915), (116.39762729119315, 39.90865673957631), atol=1e-9
    )
    # googollee/eviltransform test vectors: (wgs lon, wgs lat, gcj lon, gcj lat)
    published = np.array(
        [
            (121.5272106, 31.1774276, 121.531541859215, 31.17530398364597),  # Shanghai
            (113.912316, 22.543847, 113.9171764808363, 22.540796131694766),  # Shenzhen
            (116.377817, 39.911954, 116.38404722455657, 39.91334545536069),  # Beijing
        ]
    )
    gcj_lon, gcj_lat = wgs84_to_gcj02(published[:, 0], published[:, 1])
    assert np.allclose(gcj_lon, published[:, 2], atol=1e-9)
    assert np.allclose(gcj_lat, published[:, 3], atol=1e-9)
    # the inverse recovers the WGS-84 side to well under a metre
    wgs_lon, wgs_lat = gcj02_to_wgs84(published[:, 2], published[:, 3])
    assert (haversine_m(wgs_lon, wgs_lat, published[:, 0], published[:, 1]) < 0.05).all()
    # Tiananmen: matches an independent scalar transcription of the constants
    lon, lat = wgs84_to_gcj02(116.3912757, 39.906217)
    ref_lon, ref_lat = _reference_wgs84_to_gcj02(116.3912757, 39.906217)
    assert float(haversine_m(lon, lat, ref_lon, ref_lat)) < 1e-3
    assert float(haversine_m(lon, lat, 116.3975, 39.9076)) < 5  # the rounded textbook value
    bd_lon, bd_lat = gcj02_to_bd09(lon, lat)
    assert float(haversine_m(bd_lon, bd_lat, *_reference_gcj02_to_bd09(ref_lon, ref_lat))) < 1e-3


def test_outside_china_is_identity() -> None:
    # London, New York, Tokyo (east of the GCJ box), Sydney, Jakarta (south of it)
    lon = np.array([-0.1276, -74.006, 139.6917, 151.2093, 106.8456])
    lat = np.array([51.5072, 40.7128, 35.6895, -33.8688, -6.2088])
    for convert in (wgs84_to_gcj02, gcj02_to_wgs84):
        out_lon, out_lat = convert(lon, lat)
        assert np.array_equal(out_lon, lon)
        assert np.array_equal(out_lat, lat)


def test_missing_coordinates_stay_missing_instead_of_becoming_numbers() -> None:
    lon = np.array([np.nan, 116.404, np.inf])
    lat = np.array([39.9, np.nan, 39.9])
    out_lon, out_lat = gcj02_to_wgs84(lon, lat)
    assert np.isnan(out_lon[0])
    assert np.isnan(out_lat[1])
    assert np.isinf(out_lon[2])
    assert np.isnan(to_wgs84(lon, lat, "百度")[0][0])


def test_scalars_and_lists_come_back_as_float64_arrays() -> None:
    lon, lat = wgs84_to_gcj02(116.404, 39.915)
    assert isinstance(lon, np.ndarray)
    assert lon.shape == ()
    assert lon.dtype == np.float64
    lon, lat = gcj02_to_wgs84([116.404, 121.47], [39.915, 31.23])
    assert lon.shape == (2,)
    assert lat.dtype == np.float64
    # a single latitude broadcasts against many longitudes
    lon, lat = bd09_to_wgs84([116.40, 116.41, 116.42], 39.915)
    assert lat.shape == (3,)


def test_per_row_crs_column_converts_each_row_by_its_own_system() -> None:
    wgs_lon = np.array([116.404, 121.4737, 113.2644, 104.0665, 120.1551, 108.9398])
    wgs_lat = np.array([39.915, 31.2304, 23.1291, 30.5723, 30.2741, 34.3416])
    gcj = wgs84_to_gcj02(wgs_lon, wgs_lat)
    bd = wgs84_to_bd09(wgs_lon, wgs_lat)
    column = ["高德", "百度", None, "", "WGS84", "BD-09"]
    pick = {"gcj": gcj, "bd": bd, "wgs": (wgs_lon, wgs_lat)}
    row_source = ["gcj", "bd", "wgs", "wgs", "wgs", "bd"]
    ledger_lon = np.array([pick[s][0][i] for i, s in enumerate(row_source)])
    ledger_lat = np.array([pick[s][1][i] for i, s in enumerate(row_source)])

    out_lon, out_lat = to_wgs84(ledger_lon, ledger_lat, column)

    assert (haversine_m(out_lon, out_lat, wgs_lon, wgs_lat) < 0.5).all()
    # rows already in WGS-84 are passed through bit-for-bit
    assert np.array_equal(out_lon[2:5], wgs_lon[2:5])
    # the input arrays are not modified in place
    assert ledger_lon[0] == gcj[0][0]


def test_per_row_crs_treats_empty_spreadsheet_cells_as_wgs84() -> None:
    column = np.array([np.nan, None, "  ", "GPS"], dtype=object)
    lon = np.full(4, 116.404)
    lat = np.full(4, 39.915)
    out_lon, out_lat = to_wgs84(lon, lat, column)
    assert np.array_equal(out_lon, lon)
    assert np.array_equal(out_lat, lat)


def test_one_crs_name_applies_to_the_whole_batch() -> None:
    lon, lat = wgs84_to_gcj02([116.404, 121.4737], [39.915, 31.2304])
    out_lon, out_lat = to_wgs84(lon, lat, "火星坐标")
    assert (haversine_m(out_lon, out_lat, [116.404, 121.4737], [39.915, 31.2304]) < 0.5).all()
    assert np.array_equal(to_wgs84(lon, lat, None)[0], lon)


def test_per_row_crs_column_of_the_wrong_length_is_rejected() -> None:
    with pytest.raises(GeoError, match="shape"):
        to_wgs84([116.4, 116.5], [39.9, 39.9], ["gcj02", "bd09", "wgs84"])


def test_unknown_crs_in_a_ledger_column_is_not_silently_treated_as_wgs84() -> None:
    with pytest.raises(UnknownCRS, match="北京54"):
        to_wgs84([116.4, 116.5], [39.9, 39.9], ["gcj02", "北京54"])


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("WGS84", "wgs84"),
        ("wgs-84", "wgs84"),
        (" WGS 84 ", "wgs84"),
        ("ＷＧＳ８４", "wgs84"),  # full-width input from a Chinese IME
        ("GPS", "wgs84"),
        ("CGCS2000", "wgs84"),
        ("gcj02", "gcj02"),
        ("GCJ-02", "gcj02"),
        ("gcj_02", "gcj02"),
        ("火星坐标", "gcj02"),
        ("火星坐标系", "gcj02"),
        ("高德", "gcj02"),
        ("腾讯", "gcj02"),
        ("bd09", "bd09"),
        ("BD-09", "bd09"),
        ("百度", "bd09"),
        ("百度坐标", "bd09"),
    ],
)
def test_crs_names_users_type_are_normalised(typed: str, expected: str) -> None:
    assert normalise_crs(typed) == expected
    assert expected in CRS_NAMES


@pytest.mark.parametrize("typed", ["", "北京54", "西安80", "bd09mc", "utm50n", "坐标系"])
def test_unknown_crs_names_accepted_values(typed: str) -> None:
    with pytest.raises(UnknownCRS) as excinfo:
        normalise_crs(typed)
    message = str(excinfo.value)
    assert repr(typed) in message
    for accepted in ("wgs84", "gcj02", "bd09", "GPS", "CGCS2000", "火星坐标", "高德", "百度"):
        assert accepted in message
    assert isinstance(excinfo.value, GeoError)


def test_in_china_bbox_admits_mainland_cities_and_rejects_typos() -> None:
    lon = np.array([116.404, 87.6168, 126.6424, 109.5119, 0.0, 116.404])
    lat = np.array([39.915, 43.8256, 45.7567, 18.2528, 0.0, 3.9915])
    assert in_china_bbox(lon, lat).tolist() == [True, True, True, True, False, False]
    lon_min, lat_min, lon_max, lat_max = CHINA_BBOX
    assert in_china_bbox(lon_min, lat_min).item()
    assert in_china_bbox(lon_max, lat_max).item()
    assert not in_china_bbox(np.nan, 39.9).item()


def test_swapped_lat_lon_detected() -> None:
    # 纬度,经度 pasted into the 经度,纬度 columns for Beijing and Urumqi, then two correct rows
    lon = np.array([39.915, 43.8256, 116.404, 87.6168, 0.0, np.nan])
    lat = np.array([116.404, 87.6168, 39.915, 43.8256, 0.0, 39.9])
    assert looks_swapped(lon, lat).tolist() == [True, True, False, False, False, False]
    assert looks_swapped(39.915, 116.404).dtype == np.bool_


def test_haversine_one_degree_latitude() -> None:
    one_degree = 6371008.8 * math.pi / 180.0
    assert float(haversine_m(116.0, 39.0, 116.0, 40.0)) == pytest.approx(one_degree, abs=1e-6)
    assert float(haversine_m(0.0, 0.0, 0.0, 1.0)) == pytest.approx(111195.08, abs=0.01)


def test_haversine_is_vectorised_and_symmetric() -> None:
    rng = np.random.default_rng(7)
    lon1, lon2 = rng.uniform(73.5, 135.0, (2, 1000))
    lat1, lat2 = rng.uniform(18.0, 53.5, (2, 1000))
    forward = haversine_m(lon1, lat1, lon2, lat2)
    assert forward.shape == (1000,)
    assert np.allclose(forward, haversine_m(lon2, lat2, lon1, lat1))
    assert (haversine_m(lon1, lat1, lon1, lat1) == 0).all()
    # antipodes: rounding must not push arcsin out of its domain
    assert float(haversine_m(0.0, 0.0, 180.0, 0.0)) == pytest.approx(math.pi * 6371008.8)

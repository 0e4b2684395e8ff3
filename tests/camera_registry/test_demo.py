"""The Shanxi region table and the demo camera generator built on it."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import date

import pytest

from camera_registry.demo.cameras import COLUMNS, SHANXI_BBOX, generate_cameras
from camera_registry.demo.regions import Region, region_name, shanxi_regions
from camera_registry.fields import BY_NAME
from camera_registry.gbid import gb_id_problem, region_code_problem

N = 20_000
LON_MIN, LAT_MIN, LON_MAX, LAT_MAX = SHANXI_BBOX
CITIES = {
    "1401": "太原市", "1402": "大同市", "1403": "阳泉市", "1404": "长治市",
    "1405": "晋城市", "1406": "朔州市", "1407": "晋中市", "1408": "运城市",
    "1409": "忻州市", "1410": "临汾市", "1411": "吕梁市",
}  # fmt: skip


@pytest.fixture(scope="module")
def cams() -> dict[str, list[object]]:
    return generate_cameras(N, seed=11)


def test_every_shanxi_region_code_is_valid_and_inside_shanxi() -> None:
    regions = shanxi_regions()
    codes = [r.code for r in regions]

    assert len(regions) == 117  # 26 districts + 11 county-level cities + 80 counties
    assert len(set(codes)) == len(codes)
    assert {c[:4] for c in codes} == set(CITIES)
    for r in regions:
        assert region_code_problem(r.code) is None, r
        assert r.code.startswith("14"), r
        assert r.code[4:] != "00", r
        assert r.city == CITIES[r.code[:4]], r
        assert r.kind == ("urban" if r.name.endswith("区") else "rural"), r
        assert LON_MIN <= r.lon <= LON_MAX, r
        assert LAT_MIN <= r.lat <= LAT_MAX, r
        assert 10 < r.area_km2 < 4000, r
    assert Counter(r.kind for r in regions) == {"urban": 26, "rural": 91}
    # 2018-2019 reorganisations: 大同 and 长治 districts, 太谷 and 怀仁 upgraded.
    for current in ("140213", "140214", "140215", "140403", "140404", "140405", "140406"):
        assert current in codes
    for current in ("140703", "140681"):
        assert current in codes
    for retired in ("140202", "140211", "140227", "140402", "140411", "140421", "140726"):
        assert retired not in codes


def test_demo_cameras_have_valid_unique_gb_ids_matching_their_region(
    cams: dict[str, list[object]],
) -> None:
    ids = [str(g) for g in cams["gb_id"]]
    assert [gb_id_problem(g) for g in ids] == [None] * N
    assert len(set(ids)) == N
    assert all(g[:6] == code for g, code in zip(ids, cams["region_code"], strict=True))
    assert {g[8:10] for g in ids} == {"00", "01", "04"}
    assert Counter(g[8:10] for g in ids).most_common(1)[0][0] == "00"
    assert {g[10:13] for g in ids} == {"131", "132"}
    assert {g[13] for g in ids} == {"0", "5"}
    # Serials count up from 000001 within each region.
    serials: dict[str, list[int]] = defaultdict(list)
    for g in ids:
        serials[g[:6]].append(int(g[14:]))
    for numbers in serials.values():
        assert numbers == list(range(1, len(numbers) + 1))
    # Network identities never repeat either.
    for col in ("ip", "mac", "serial", "stream_main"):
        assert len(set(cams[col])) == N, col


def test_demo_chunks_continue_serials_without_collisions(cams: dict[str, list[object]]) -> None:
    next_serial = {str(code): count + 1 for code, count in Counter(cams["region_code"]).items()}
    more = generate_cameras(5_000, seed=12, serial_start=next_serial)
    assert [gb_id_problem(str(g)) for g in more["gb_id"]] == [None] * 5_000
    for col in ("gb_id", "ip", "mac", "serial"):
        assert not set(cams[col]) & set(more[col]), col
    first = {str(g)[:6]: int(str(g)[14:]) for g in reversed(more["gb_id"])}
    assert all(serial == next_serial.get(code, 1) for code, serial in first.items())


def test_demo_is_reproducible_for_a_seed() -> None:
    a = generate_cameras(500, seed=7)
    assert a == generate_cameras(500, seed=7)
    b = generate_cameras(500, seed=8)
    assert a["name"] != b["name"]
    assert a["lon"] != b["lon"]
    assert tuple(a) == COLUMNS
    assert all(col in BY_NAME for col in COLUMNS)
    assert all(len(v) == 500 for v in a.values())
    assert all(len(v) == 0 for v in generate_cameras(0).values())


def test_demo_points_fall_inside_shanxi(cams: dict[str, list[object]]) -> None:
    by_code = {r.code: r for r in shanxi_regions()}
    for lon, lat, code in zip(cams["lon"], cams["lat"], cams["region_code"], strict=True):
        assert isinstance(lon, float)
        assert isinstance(lat, float)
        assert LON_MIN <= lon <= LON_MAX
        assert LAT_MIN <= lat <= LAT_MAX
        seat = by_code[str(code)]
        dx = (lon - seat.lon) * 111.320 * math.cos(math.radians(seat.lat))
        dy = (lat - seat.lat) * 110.574
        limit = 3 * math.sqrt(2) * (2.0 if seat.kind == "urban" else 8.0) + 0.1
        assert math.hypot(dx, dy) <= limit, (code, lon, lat)


def test_demo_prefers_urban_districts(cams: dict[str, list[object]]) -> None:
    kinds = {r.code: r.kind for r in shanxi_regions()}
    per_region = Counter(cams["region_code"])
    urban = [c for code, c in per_region.items() if kinds[str(code)] == "urban"]
    rural = [c for code, c in per_region.items() if kinds[str(code)] == "rural"]
    assert sum(urban) / len(urban) > 1.5 * sum(rural) / len(rural)


def test_demo_fields_follow_the_camera_rules(cams: dict[str, list[object]]) -> None:
    levels = Counter(cams["level"])
    assert set(levels) == {"1", "2", "3"}
    assert levels["1"] < levels["2"] < levels["3"]
    for level, days in zip(cams["level"], cams["record_days"], strict=True):
        assert days == {"1": 90, "2": 30}.get(str(level), days)
        assert days in (90, 30, None)
    assert {d for lv, d in zip(cams["level"], cams["record_days"], strict=True) if lv == "3"} == {
        30,
        None,
    }
    azimuths = cams["azimuth"]
    assert 0.05 < azimuths.count(None) / N < 0.15
    assert all(a is None or (isinstance(a, float) and 0 <= a < 360) for a in azimuths)
    assert set(cams["hfov"]) == {65.0, 46.1, 35.4}  # 4, 6, 8 mm on 1/2.8"
    assert all(isinstance(d, float) and 30 <= d <= 150 for d in cams["max_view_distance"])
    for d in cams["installed_at"]:
        assert date(2016, 1, 1) <= date.fromisoformat(str(d)) <= date(2024, 12, 31)
    for name, address, code in zip(cams["name"], cams["address"], cams["region_code"], strict=True):
        prefix = f"{region_name(str(code)[:4])}{region_name(str(code))}"
        assert str(name).startswith(prefix)
        assert str(address).startswith("山西省" + prefix)
    streams = {
        "海康威视": "/Streaming/Channels/10",
        "大华": "/cam/realmonitor?channel=1&subtype=",
        "宇视": "/media/video",
    }
    for vendor, ip, main, sub in zip(
        cams["vendor"], cams["ip"], cams["stream_main"], cams["stream_sub"], strict=True
    ):
        assert str(ip).startswith("10.")
        assert str(main).startswith(f"rtsp://{ip}:554{streams[str(vendor)]}")
        assert str(sub).startswith(f"rtsp://{ip}:554{streams[str(vendor)]}")
        assert main != sub


def test_region_names_resolve_city_and_province_prefixes() -> None:
    assert region_name("140105") == "小店区"
    assert region_name("140215") == "云州区"
    assert region_name("140404") == "上党区"
    assert region_name("1401") == "太原市"
    assert region_name("140100") == "太原市"
    assert region_name("1411") == "吕梁市"
    assert region_name("14") == "山西省"
    assert region_name("140000") == "山西省"
    assert region_name("11") == "北京市"
    assert region_name("1499") is None
    assert region_name("149999") is None
    assert region_name("") is None


def test_demo_accepts_a_custom_region_list() -> None:
    one = Region("140105", "小店区", "太原市", "urban", 112.5654, 37.7362, 295.0)
    cams = generate_cameras(300, seed=3, regions=[one])
    assert set(cams["region_code"]) == {"140105"}
    assert sorted(int(str(g)[14:]) for g in cams["gb_id"]) == list(range(1, 301))
    with pytest.raises(ValueError, match="region"):
        generate_cameras(1, regions=[])

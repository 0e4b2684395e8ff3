"""GB IDs and column validation, without a database."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from camera_registry.crypto import CredentialBox
from camera_registry.gbid import gb_id_problem, make_gb_id, parse_gb_id
from camera_registry.validate import validate_columns
from geo.crs import wgs84_to_bd09

BOX = CredentialBox(base64.b64decode(base64.b64encode(b"k" * 32)))


def test_gb_id_fields_are_read_by_position() -> None:
    g = parse_gb_id("14010500011320500001")
    assert (g.region_code, g.grassroots, g.industry, g.type_code, g.network, g.serial) == (
        "140105",
        "00",
        "01",
        "132",
        "0",
        "500001",
    )


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("1401050001132050000", "20 digits"),
        ("14010500011320500001x", "20 digits"),
        ("1401050001132O500001", "20 digits"),
        ("00010500011320500001", "province"),
        ("14000500011320500001", "city"),
        ("14010500011180500001", "camera type"),
        ("14010500011329500001", "reserves"),
    ],
)
def test_gb_id_problems_name_the_digits_at_fault(value: str, words: str) -> None:
    problem = gb_id_problem(value)
    assert problem is not None and words in problem


@given(st.integers(0, 999_999), st.sampled_from(["140105", "110101", "650102"]))
def test_generated_gb_ids_are_valid_and_carry_their_region(serial: int, region: str) -> None:
    value = make_gb_id(region, serial)
    assert gb_id_problem(value) is None and value[:6] == region and value.endswith(f"{serial:06d}")


@given(st.text(alphabet="0123456789", min_size=20, max_size=20))
def test_vectorised_gb_id_check_agrees_with_the_scalar_rule(value: str) -> None:
    _, errors = validate_columns({"gb_id": [value], "name": ["n"], "level": ["3"]}, [2], box=BOX)
    assert (len(errors) == 0) == (gb_id_problem(value) is None)


def test_ledger_text_cells_are_typed_and_bad_cells_reported_per_row() -> None:
    cols: dict[str, list[str | None]] = {
        "gb_id": ["14010500001320000001", "14010500001320000002", "bad", None],
        "name": ["甲", "乙", "丙", "丁"],
        "level": ["一类", "2", "三类", "九类"],
        "lon": ["112.56", "112.57", "112.58", "east"],
        "lat": ["37.81", "37.82", "37.83", "37.84"],
        "record_days": ["90", None, None, None],
        "installed_at": ["2023/05/01", "20230502", None, None],
        "mac": ["44-19-B6-01-02-03", None, None, None],
    }
    batch, errors = validate_columns(cols, np.array([2, 3, 4, 5]), box=BOX)
    assert batch.rows.tolist() == [2, 3]
    assert batch.cols["level"] == [1, 2]
    assert batch.cols["mac"][0] == "44:19:b6:01:02:03"
    assert str(batch.cols["installed_at"][1]) == "2023-05-02"
    assert {(e.row, e.field) for e in errors} == {
        (4, "gb_id"),
        (5, "region_code"),
        (5, "level"),
        (5, "lon"),
    }


def test_per_row_crs_column_converts_baidu_points() -> None:
    blon, blat = wgs84_to_bd09(112.56, 37.81)
    cols = {
        "gb_id": ["14010500001320000001"],
        "name": ["甲"],
        "level": ["3"],
        "lon": [str(float(blon))],
        "lat": [str(float(blat))],
        "crs": ["百度"],
    }
    batch, errors = validate_columns(cols, [2], box=BOX)
    assert not errors
    assert batch.cols["lon"][0] == pytest.approx(112.56, abs=1e-5)
    assert batch.cols["lat"][0] == pytest.approx(37.81, abs=1e-5)


def test_credentials_are_sealed_and_equal_pairs_share_one_seal() -> None:
    cols = {
        "gb_id": ["14010500001320000001", "14010500001320000002"],
        "name": ["a", "b"],
        "level": ["3", "3"],
        "username": ["admin", "admin"],
        "password": ["pw", "pw"],
    }
    batch, errors = validate_columns(cols, [2, 3], box=BOX)
    assert not errors
    sealed = batch.cols["credentials"]
    assert sealed[0] == sealed[1] and b"pw" not in sealed[0]
    assert BOX.open(sealed[0]) == ("admin", "pw")


def test_mixed_crs_column_converts_each_row_by_its_own_system() -> None:
    from geo.crs import wgs84_to_gcj02

    glon, glat = (float(v) for v in wgs84_to_gcj02(112.6, 37.9))
    cols = {
        "gb_id": ["14010500001320000001", "14010500001320000002", "14010500001320000003"],
        "name": ["a", "b", "c"],
        "level": ["3", "3", "3"],
        "lon": ["112.6", str(glon), "112.6"],
        "lat": ["37.9", str(glat), "37.9"],
        "crs": ["WGS84", "高德", "火星文"],
    }
    batch, errors = validate_columns(cols, [2, 3, 4], box=BOX)
    assert [(e.row, e.field) for e in errors] == [(4, "crs")]
    assert batch.cols["lon"] == pytest.approx([112.6, 112.6], abs=1e-6)
    assert batch.cols["lat"] == pytest.approx([37.9, 37.9], abs=1e-6)

"""The layout policy: strict parsing, errors naming the key, the shipped default file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from camera_registry.planning.policy import default_policy_text, load_policy
from camera_registry.planning.policy_model import Policy, PolicyError, parse_policy


def keys(exc: pytest.ExceptionInfo[PolicyError]) -> list[str]:
    return [e.field for e in exc.value.errors]


def test_the_shipped_default_file_is_the_default_policy(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(default_policy_text(), encoding="utf-8")
    assert load_policy(path) == Policy.default()
    d = Policy.default()
    assert (d.urban.cell_size_m, d.urban.target_cell_share) == (100.0, 0.95)
    assert (d.rural.village_entrance_radius_m, d.rural.target_village_share) == (150.0, 1.0)
    assert d.junctions.target_share == 1.0
    assert set(d.default_radius_m) == {1, 2, 3, 9}


def test_every_default_field_is_documented_in_the_shipped_file() -> None:
    text = default_policy_text()
    shipped = tomllib.loads(text)
    for section in Policy.model_fields:
        assert f"[{section}]" in text, section
        value = getattr(Policy.default(), section)
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                assert name in shipped[section] or f"# {name} =" in text, f"{section}.{name}"


def test_an_unknown_key_is_an_error_with_its_dotted_path() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy({"urban": {"cel_size_m": 50}, "colour": "red"})
    assert sorted(keys(info)) == ["colour", "urban.cel_size_m"]
    assert "unknown key" in str(info.value)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"urban": {"cell_size_m": -100}}, "urban.cell_size_m"),
        ({"urban": {"cell_size_m": 0}}, "urban.cell_size_m"),
        ({"urban": {"target_cell_share": 1.2}}, "urban.target_cell_share"),
        ({"rural": {"village_entrance_radius_m": 0}}, "rural.village_entrance_radius_m"),
        ({"default_radius_m": {"1": 0, "2": 60, "3": 40, "9": 30}}, "default_radius_m.1"),
        ({"default_radius_m": {"1": 80, "2": 60}}, "default_radius_m"),
        ({"default_radius_m": {"1": 80, "2": 60, "3": 40, "9": 30, "4": 1}}, "default_radius_m"),
        ({"dori": {"px_per_m": 0}}, "dori.px_per_m"),
        ({"weights": {"village": -1}}, "weights.village"),
        ({"proposal_camera": {"hfov_deg": 400}}, "proposal_camera.hfov_deg"),
        ({"proposal_camera": {"h_px": "wide"}}, "proposal_camera.h_px"),
        ({"zones": {"urban": ["1401"], "rural": ["1401"]}}, "zones"),
        ({"zones": {"urban": ["14A"]}}, "zones.urban.0"),
        (
            {"zones": {"polygons": [{"kind": "urban", "ring": [[0, 0], [1, 1], [1, 0], [0, 1]]}]}},
            "zones.polygons.0.ring",
        ),
        ({"zones": {"polygons": [{"kind": "city", "ring": [[0, 0], [1, 0], [0, 1]]}]}},
         "zones.polygons.0.kind"),
    ],
)  # fmt: skip
def test_an_impossible_value_is_an_error_naming_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(data)
    assert keys(info) == [key]


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_shares_outside_0_1_are_refused_and_inside_accepted(share: float) -> None:
    data = {"rural": {"target_village_share": share}}
    if 0.0 <= share <= 1.0:
        assert parse_policy(data).rural.target_village_share == share
    else:
        with pytest.raises(PolicyError) as info:
            parse_policy(data)
        assert keys(info) == ["rural.target_village_share"]


def test_zone_classification_by_prefix_then_by_name() -> None:
    p = parse_policy({"zones": {"urban": ["1401"], "rural": ["140123"]}})
    assert p.zone_kind("140123", "娄烦县") == "rural"  # the longer prefix wins
    assert p.zone_kind("140121", "清徐县") == "urban"
    assert p.zone_kind("140212", "新荣区") == "urban"  # by name: a 市辖区
    assert p.zone_kind("140221", "阳高县") == "rural"
    poly = parse_policy(
        {"zones": {"polygons": [{"kind": "urban", "name": "新城",
                                 "ring": [[112.6, 37.7], [112.7, 37.7], [112.7, 37.78]]}]}}
    )  # fmt: skip
    assert poly.zone_polygons("urban") is not None and poly.zone_polygons("rural") is None


def test_proposal_reach_is_limited_by_dori_density() -> None:
    # 1920 px over 90°: at 25 px/m the scene may be 76.8 m wide, i.e. 38.4 m away.
    assert Policy.default().proposal_radius_m() == pytest.approx(38.4)
    wide_range = parse_policy({"proposal_camera": {"radius_m": 20}})
    assert wide_range.proposal_radius_m() == 20


def test_a_file_that_is_not_toml_says_so(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[urban\ncell_size_m = 1", encoding="utf-8")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(path)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")

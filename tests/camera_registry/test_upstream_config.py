"""`[[gb28181.upstreams]]` is validated like every setting: the message names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from camera_registry.config import load_settings
from camera_registry.errors import ConfigError

GOOD = """
[[gb28181.upstreams]]
name = "province"
server_id = "14000000002000000001"
host = "10.0.0.1"
password = "pw-7f3k-unique"
local_id = "14010000002000000001"
"""


def load(tmp_path: Path, text: str) -> object:
    return load_settings(_write(tmp_path, text), environ={})


def test_defaults_are_the_issue_s(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, GOOD), environ={})
    (up,) = settings.gb28181.upstreams
    assert (up.port, up.transport, up.register_expires, up.keepalive_s) == (5060, "udp", 3600, 60)
    assert (up.keepalive_misses, up.charset, up.regions, up.catalog_group_size) == (
        3,
        "GB2312",
        (),
        1,
    )
    assert up.sip_domain == "1400000000"
    assert up.items_per_s == 500.0
    assert "pw-7f3k-unique" not in repr(settings)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "camreg.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('server_idx = "1"\n', r"gb28181\.upstreams\.0\.server_idx: Extra inputs"),
        ("catalog_group_size = 32\n", r"catalog_group_size above 16 does not fit one UDP"),
        ('regions = ["140"]\n', r"region '140' must be a 2, 4 or 6-digit"),
        ('transport = "sctp"\n', r"gb28181\.upstreams\.0\.transport"),
        ("keepalive_misses = 0\n", r"gb28181\.upstreams\.0\.keepalive_misses"),
    ],
)
def test_bad_upstream_keys_stop_start_up_naming_the_key(
    tmp_path: Path, extra: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, GOOD + extra)


def test_local_id_must_be_a_platform_id(tmp_path: Path) -> None:
    text = GOOD.replace('local_id = "14010000002000000001"', 'local_id = "14010500001320000001"')
    with pytest.raises(
        ConfigError, match=r"local_id: Value error, digits 11-13 \(132\) must be 200"
    ):
        load(tmp_path, text)


def test_upstream_names_are_unique(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"upstream names must be unique; repeated: \['province'\]"
    ):
        load(tmp_path, GOOD + GOOD)

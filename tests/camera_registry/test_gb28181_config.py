"""The [gb28181] table: defaults derived from the server ID, bad keys stop start-up by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from camera_registry.config import Settings, load_settings
from camera_registry.errors import ConfigError


def settings_from(tmp_path: Path, toml: str) -> Settings:
    path = tmp_path / "camreg.toml"
    path.write_text(toml, encoding="utf-8")
    return load_settings(path, environ={})


def test_domain_and_accepted_regions_default_from_the_server_id(tmp_path: Path) -> None:
    s = settings_from(tmp_path, '[gb28181]\nserver_id = "14010000002000000001"\n')
    assert s.gb28181.sip_domain == "1401000000"
    assert s.gb28181.accepted_regions == ("14",)
    assert s.gb28181.sip_port == 5060
    assert s.gb28181.enabled


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('server_id = "14010000001320000001"', "gb28181.server_id"),  # a camera type, not 200
        ('server_id = "9901000000200000001"', "gb28181.server_id"),  # 19 digits
        ('server_id = "99010000002000000001"', "gb28181.server_id"),  # no province 99
        ('domain = "14010"', "gb28181.domain"),
        ("sip_port = 70000", "gb28181.sip_port"),
        ('regions = ["14x"]', "gb28181.regions"),
        ("keepalive_timeout_s = 0", "gb28181.keepalive_timeout_s"),
        ("sip_prot = 5060", "gb28181.sip_prot"),  # misspelt key
    ],
)
def test_bad_gb28181_key_stops_start_up_naming_it(tmp_path: Path, toml: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        settings_from(tmp_path, f"[gb28181]\n{toml}\n")


def test_default_password_is_secret_in_repr(tmp_path: Path) -> None:
    s = settings_from(tmp_path, '[gb28181]\npassword = "s3cret-dev1ce"\n')
    assert "s3cret-dev1ce" not in repr(s)
    assert s.gb28181.password.get_secret_value() == "s3cret-dev1ce"

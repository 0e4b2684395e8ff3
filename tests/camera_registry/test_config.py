"""Settings: one validated object; a misspelt key is an error, not a silent default."""

from __future__ import annotations

from pathlib import Path

import pytest

from camera_registry.config import load_settings
from camera_registry.errors import ConfigError


def test_environment_and_toml_are_merged_with_flags_winning(tmp_path: Path) -> None:
    cfg = tmp_path / "camreg.toml"
    cfg.write_text('http_port = 9000\ndata_dir = "/srv/camreg"\n', encoding="utf-8")
    s = load_settings(cfg, environ={"CAMREG_HTTP_PORT": "9100"}, http_host="::1")
    assert (s.http_port, s.http_host, s.data_dir) == (9100, "::1", Path("/srv/camreg"))
    assert s.pg_dir == Path("/srv/camreg/pg")


def test_unknown_environment_variable_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CAMREG_HTTP_PROT"):
        load_settings(environ={"CAMREG_HTTP_PROT": "1"})


def test_unknown_toml_key_and_bad_value_are_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("htp_port = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="htp_port"):
        load_settings(cfg, environ={})
    with pytest.raises(ConfigError, match="http_port"):
        load_settings(environ={"CAMREG_HTTP_PORT": "99999"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", environ={})


def test_database_url_is_a_secret_in_reprs() -> None:
    s = load_settings(environ={"CAMREG_DATABASE_URL": "postgresql://u:hunter2@db/x"})
    assert "hunter2" not in repr(s)
    assert s.database_url is not None
    assert s.database_url.get_secret_value().endswith("@db/x")

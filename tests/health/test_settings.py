"""The `[health]` config table: defaults kept in one place, overrides applied, bad keys named."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from camera_registry.config import ConfigError, HealthSettings, load_settings
from health.diagnosis import Thresholds
from health.settings import DEPRECATED_DIAGNOSIS_KEYS, HealthConfigError, health_runtime
from health.status import StatusPolicy
from health.worker import WorkerConfig


def test_an_empty_table_keeps_the_health_defaults() -> None:
    runtime = health_runtime(HealthSettings())
    assert runtime.worker == WorkerConfig()
    assert runtime.policy == StatusPolicy()
    assert runtime.thresholds == Thresholds()


def test_a_config_file_sets_intervals_hysteresis_and_thresholds(tmp_path: Path) -> None:
    path = tmp_path / "camreg.toml"
    path.write_text(
        """[health]
interval_level1_s = 120
interval_s = 600
per_host = 2
offline_after = 5
online_after = 3
sample_seconds = 3
recheck_s = 300
confirm_after = 3
faults = ["signal_loss", "frozen", "stripes"]

[health.diagnosis]
dark_mean = 40
frozen_frames = 20
ptz_check = true
ptz_min_change = 0.2
""",
        encoding="utf-8",
    )
    settings = load_settings(path, environ={})
    runtime = health_runtime(settings.health, WorkerConfig(concurrency=50))
    w = runtime.worker
    assert (w.interval_level1_s, w.interval_s, w.per_host, w.sample_seconds) == (120, 600, 2, 3)
    assert w.concurrency == 50  # what the command line set stays
    assert (runtime.policy.offline_after, runtime.policy.online_after) == (5, 3)
    assert (runtime.policy.recheck_s, runtime.policy.confirm_after) == (300, 3)
    assert runtime.thresholds.faults == ("signal_loss", "frozen", "stripes")
    assert runtime.thresholds.dark_mean == 40.0
    assert runtime.thresholds.frozen_frames == 20
    assert isinstance(runtime.thresholds.frozen_frames, int)
    assert runtime.thresholds.ptz_check is True and runtime.thresholds.ptz_min_change == 0.2


@pytest.mark.parametrize(
    ("diagnosis", "message"),
    [
        ({"dark_maen": 40}, "health.diagnosis.dark_maen: unknown threshold"),
        ({"frozen_frames": 10.5}, "health.diagnosis.frozen_frames: must be a whole number"),
        ({"frozen_frames": 1}, "frozen_frames must be at least 2"),
        ({"frozen_moving_share": 1.5}, "frozen_moving_share is a share in (0, 1]"),
        ({"blur_laplacian_vra": 50}, "health.diagnosis.blur_laplacian_vra: unknown threshold"),
        ({"ptz_check": 1}, "health.diagnosis.ptz_check: must be true or false"),
        ({"dark_mean": True}, "health.diagnosis.dark_mean: must be a number, not True"),
        ({"ptz_pan": 0.9}, "ptz_pan is a relative pan in ONVIF's generic space"),
        ({"ptz_settle_s": 30}, "ptz_settle_s must be at most 10 s"),
    ],
)
def test_a_bad_threshold_is_named(diagnosis: dict[str, float | bool], message: str) -> None:
    with pytest.raises(HealthConfigError) as err:
        health_runtime(HealthSettings(diagnosis=diagnosis))
    assert message in str(err.value)


def test_an_old_key_name_starts_with_a_deprecation_naming_the_new_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A config written for the first diagnosis still starts; its old value measured something
    else, so the new check runs at its default until the new key is set."""
    path = tmp_path / "camreg.toml"
    path.write_text(
        "[health.diagnosis]\nblur_laplacian_var = 80\nnoise_residual = 9\ndark_mean = 35\n",
        encoding="utf-8",
    )
    settings = load_settings(path, environ={})
    with caplog.at_level("WARNING", logger="health.settings"):
        runtime = health_runtime(settings.health)
    assert runtime.thresholds.blur_reblur == Thresholds().blur_reblur
    assert runtime.thresholds.noise_level == Thresholds().noise_level
    assert runtime.thresholds.dark_mean == 35.0
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "health.diagnosis.blur_laplacian_var is deprecated: use health.diagnosis.blur_reblur" in m
        for m in messages
    )
    assert any("use health.diagnosis.noise_level" in m for m in messages)


@pytest.mark.parametrize("old", sorted(DEPRECATED_DIAGNOSIS_KEYS))
def test_every_old_key_names_a_threshold_that_exists(old: str) -> None:
    new, _why = DEPRECATED_DIAGNOSIS_KEYS[old]
    assert new in {f.name for f in fields(Thresholds)}
    runtime = health_runtime(HealthSettings(diagnosis={old: 1}))
    assert runtime.thresholds == Thresholds()


def test_an_old_and_a_new_key_together_are_an_error() -> None:
    with pytest.raises(HealthConfigError) as err:
        health_runtime(HealthSettings(diagnosis={"blur_laplacian_var": 50, "blur_reblur": 0.4}))
    message = str(err.value)
    assert "health.diagnosis.blur_laplacian_var and health.diagnosis.blur_reblur" in message
    assert "remove blur_laplacian_var" in message


def test_an_unknown_fault_check_is_named() -> None:
    with pytest.raises(HealthConfigError, match="unknown check 'snow'"):
        health_runtime(HealthSettings(faults=("signal_loss", "snow")))


def test_unknown_and_impossible_health_keys_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "camreg.toml"
    path.write_text("[health]\nintervall_s = 600\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="intervall_s"):
        load_settings(path, environ={})
    path.write_text("[health]\nper_host = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="per_host"):
        load_settings(path, environ={})


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_commands_refuse_to_start_on_a_bad_threshold(tmp_path: Path, command: str) -> None:
    path = tmp_path / "camreg.toml"
    path.write_text("[health.diagnosis]\nblurr = 3\n", encoding="utf-8")
    camreg = str(Path(sys.executable).parent / "camreg")
    proc = subprocess.run(
        [camreg, "--config", str(path), command],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "CAMREG_DATA_DIR": str(tmp_path / "data")},
    )
    assert proc.returncode == 2, proc.stderr
    assert "health.diagnosis.blurr: unknown threshold" in proc.stderr


def test_the_readme_example_is_the_defaults(tmp_path: Path) -> None:
    """The `[health]` example in README.md loads and spells out the defaults it claims."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    example = readme.split("```toml\n[health]", 1)[1].split("```", 1)[0]
    path = tmp_path / "camreg.toml"
    path.write_text("[health]" + example, encoding="utf-8")
    runtime = health_runtime(load_settings(path, environ={}).health)
    assert runtime == health_runtime(HealthSettings())

"""One validated settings object, loaded once at startup.

Sources, lowest precedence first: defaults, a TOML file (`--config` or `CAMREG_CONFIG`), then
`CAMREG_*` environment variables. Unknown keys are errors in every source, because a misspelt
key silently ignored is a setting the operator believes is in force.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from camera_registry.errors import ConfigError

ENV_PREFIX = "CAMREG_"
_ROLES = frozenset({"technician", "planner", "commander", "admin"})


PROTOCOLS = ("rtsp", "hls", "flv", "webrtc", "rtmp")
Protocol = Literal["rtsp", "hls", "flv", "webrtc", "rtmp"]


class Relay(BaseModel):
    """A media server (ZLMediaKit / MediaMTX style) that pulls cameras and serves players.

    `urls` are player URL templates per protocol, with `{stream_key}` and `{sign}` (and
    optionally `{expires}`), e.g. `http://relay:8080/live/{stream_key}.flv?sign={sign}`.
    The relay authenticates to us (source lookups, play hooks) with `secret`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=64)
    regions: tuple[str, ...] = Field(default=(), description="region-code prefixes; () = all")
    urls: dict[Protocol, str]
    secret: SecretStr = Field(min_length=16)


class HealthSettings(BaseModel):
    """The `[health]` table: probe intervals, status hysteresis and diagnosis thresholds.

    Unset values keep the health package's defaults (DESIGN.md §2), so those live in one place;
    `health.settings.health_runtime` checks the diagnosis keys against the thresholds it knows
    and `camreg serve`/`camreg worker` refuse to start on a bad one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_level1_s: float | None = Field(
        default=None, gt=0, le=86_400, description="protocol probe interval, level 1 (default 300)"
    )
    interval_s: float | None = Field(
        default=None, gt=0, le=86_400, description="protocol probe interval, others (default 900)"
    )
    max_backoff_s: float | None = Field(
        default=None, gt=0, le=7 * 86_400, description="longest re-probe wait offline (3600)"
    )
    diagnose_every_s: float | None = Field(
        default=None, gt=0, le=30 * 86_400, description="frame diagnosis period (86400: daily)"
    )
    sample_seconds: float | None = Field(
        default=None, gt=0, le=60, description="seconds of frames per diagnosis (2.0)"
    )
    per_host: int | None = Field(
        default=None, ge=1, le=64, description="concurrent sessions per device host (4)"
    )
    offline_after: int | None = Field(
        default=None, ge=1, le=100, description="consecutive failures before offline (3)"
    )
    online_after: int | None = Field(
        default=None, ge=1, le=100, description="consecutive successes before online (2)"
    )
    recheck_s: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="a first faulty diagnosis is checked again this soon (600: 10 minutes)",
    )
    confirm_after: int | None = Field(
        default=None, ge=1, le=10, description="faulty diagnoses in a row that confirm (2)"
    )
    faults: tuple[str, ...] | None = Field(
        default=None,
        description="diagnosis checks that make a camera degraded; others are warnings "
        "(signal_loss, frozen, noise, occlusion, colour_cast, blur)",
    )
    diagnosis: dict[str, float] = Field(
        default_factory=dict,
        description="diagnosis thresholds by name (dark_mean, bright_mean, low_contrast_std, "
        "frozen_frames, blur_reblur, noise_level, stripes_amplitude, shake_px, "
        "occlusion_share, colour_cast_offset, scene_change…)",
    )


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL DSN; unset means the embedded cluster under data_dir/pg",
    )
    data_dir: Path = Field(default=Path(".camreg"), description="embedded DB, keys, tokens")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    secret_key: SecretStr | None = Field(
        default=None,
        description="base64 32-byte key for credential encryption; else data_dir/secret.key",
    )
    db_pool_min: int = Field(default=2, ge=1, le=100)
    db_pool_max: int = Field(default=10, ge=1, le=500)
    db_command_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1024)
    max_page_size: int = Field(default=10_000, ge=1, le=100_000)
    default_page_size: int = Field(default=100, ge=1, le=10_000)
    import_chunk_rows: int = Field(default=50_000, ge=100, le=1_000_000)
    max_concurrent_imports: int = Field(
        default=1, ge=1, le=16, description="imports running at once; later uploads queue"
    )
    job_stale_after_s: float = Field(
        default=60.0,
        ge=0.5,
        le=3600,
        description="a queued/running job (coverage run, scan, import) whose process has not "
        "refreshed its heartbeat for this long is marked failed: its server stopped",
    )
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    link_ttl_s: int = Field(default=300, ge=10, le=86_400, description="stream link lifetime")
    link_ttl_by_role: dict[str, int] = Field(default_factory=dict)
    link_secret: SecretStr | None = Field(
        default=None, description="HMAC key for stream links; else derived from the secret key"
    )
    relays: tuple[Relay, ...] = ()
    allow_direct_credentials: tuple[str, ...] = Field(
        default=(), description="roles whose direct RTSP links carry the camera's credentials"
    )
    map_tiles_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s\"'<>]+$",
        description="web map base layer, a {z}/{x}/{y} tile URL template (e.g. 天地图 with the "
        "deployment's key); unset: offline map drawn from our own region boundaries",
    )
    map_tiles_crs: Literal["wgs84", "gcj02"] = Field(
        default="wgs84", description="datum of the tiles; gcj02 tiles get our points shifted"
    )
    map_tiles_attribution: str = Field(default="", max_length=200)
    map_tiles_subdomains: str = Field(default="abc", pattern="^[0-9a-z]{1,16}$")
    health: HealthSettings = Field(
        default_factory=HealthSettings, description="[health] table of the config file"
    )

    @field_validator("allow_direct_credentials")
    @classmethod
    def _roles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(value) - _ROLES
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; use {sorted(_ROLES)}")
        return value

    @field_validator("link_ttl_by_role")
    @classmethod
    def _role_ttls(cls, value: dict[str, int]) -> dict[str, int]:
        cls._roles(tuple(value))
        bad = {k: v for k, v in value.items() if not 10 <= v <= 86_400}
        if bad:
            raise ValueError(f"link lifetimes must be 10-86400 s, not {bad}")
        return value

    def link_ttl(self, role: str) -> int:
        return self.link_ttl_by_role.get(role, self.link_ttl_s)

    @property
    def pg_dir(self) -> Path:
        return self.data_dir / "pg"


_ENV_FIELDS = {name.upper(): name for name in Settings.model_fields}


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key in {"CAMREG_CONFIG", "CAMREG_TEST_DATABASE_URL"}:
            continue
        name = _ENV_FIELDS.get(key[len(ENV_PREFIX) :])
        if name is None:
            known = ", ".join(sorted(ENV_PREFIX + k for k in _ENV_FIELDS))
            raise ConfigError(f"unknown environment variable {key}; known ones: {known}")
        out[name] = value
    return out


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings; `overrides` (from CLI flags) win over everything else."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    path = config_file or env.get("CAMREG_CONFIG")
    if path:
        try:
            data.update(tomllib.loads(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    data.update(_from_env(env))
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        source = f" (from {path} and CAMREG_* variables)" if path else " (CAMREG_* variables)"
        raise ConfigError(f"invalid settings{source}: {problems}") from None

"""One validated settings object, loaded once at startup.

Sources, lowest precedence first: defaults, a TOML file (`--config` or `CAMREG_CONFIG`), then
`CAMREG_*` environment variables. Unknown keys are errors in every source, because a misspelt
key silently ignored is a setting the operator believes is in force.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from camera_registry.errors import ConfigError
from camera_registry.gbid import PROVINCES

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
    diagnosis: dict[str, float | bool] = Field(
        default_factory=dict,
        description="diagnosis thresholds by name (dark_mean, bright_mean, low_contrast_std, "
        "frozen_frames, blur_reblur, noise_level, stripes_amplitude, shake_px, "
        "occlusion_share, colour_cast_offset, scene_change…), and ptz_check = true to move "
        "PTZ cameras for the 云台失控 check",
    )


_PLATFORM_ID = r"^[0-9]{20}$"


def platform_id_problem(value: str) -> str | None:
    """Why `value` cannot be a GB/T 28181 platform ID (type 200), or None."""
    if not re.fullmatch(_PLATFORM_ID, value):
        return "must be exactly 20 digits (GB/T 28181 encoding rule A)"
    if value[:2] not in PROVINCES:
        return f"digits 1-2 ({value[:2]}) are not a GB/T 2260 province code"
    if value[10:13] != "200":
        return f"digits 11-13 ({value[10:13]}) must be 200 (中心信令服务器) for a platform"
    return None


class UpstreamSettings(BaseModel):
    """One upper platform (上级平台) we cascade to as its lower platform: `[[gb28181.upstreams]]`.

    The same model validates the admin API's POST/PATCH, so a key the file rejects the API
    rejects too, with the same message.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, description="shown in the API and metrics")
    server_id: str = Field(description="the upper platform's 20-digit SIP ID (type 200)")
    domain: str | None = Field(
        default=None, pattern="^[0-9]{10}$", description="its SIP domain; default server_id[:10]"
    )
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=5060, ge=1, le=65535)
    transport: Literal["udp", "tcp"] = "udp"
    password: SecretStr = Field(min_length=1, max_length=128, description="sealed at rest")
    local_id: str = Field(description="our 20-digit type-200 ID towards this platform")
    register_expires: int = Field(default=3600, ge=60, le=86_400)
    keepalive_s: float = Field(default=60, gt=0, le=3600)
    keepalive_misses: int = Field(default=3, ge=1, le=100)
    charset: Literal["GB2312", "UTF-8"] = "GB2312"
    regions: tuple[str, ...] = Field(
        default=(), description="region-code prefixes it may see (2-6 digits); () = all"
    )
    catalog_group_size: int = Field(
        default=1, ge=1, le=200, description="catalog items per MESSAGE (UDP at most 16)"
    )
    catalog_items_per_s: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="catalog pacing per upstream; default 5000 over TCP, 500 over UDP",
    )
    notify_interval_s: float = Field(
        default=5.0, ge=0.1, le=3600, description="catalog changes are coalesced this long"
    )
    enabled: bool = True

    @field_validator("server_id", "local_id")
    @classmethod
    def _platform_id(cls, value: str) -> str:
        problem = platform_id_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for prefix in value:
            if not re.fullmatch(r"[0-9]{2}(?:[0-9]{2}){0,2}", prefix):
                raise ValueError(f"region {prefix!r} must be a 2, 4 or 6-digit civil-code prefix")
            if prefix[:2] not in PROVINCES:
                raise ValueError(f"region {prefix!r}: {prefix[:2]} is not a province code")
        return value

    @model_validator(mode="after")
    def _udp_group(self) -> UpstreamSettings:
        if self.transport == "udp" and self.catalog_group_size > 16:
            raise ValueError(
                "catalog_group_size above 16 does not fit one UDP datagram safely; "
                'use transport = "tcp" or a smaller group'
            )
        return self

    @property
    def sip_domain(self) -> str:
        return self.domain or self.server_id[:10]

    @property
    def items_per_s(self) -> float:
        if self.catalog_items_per_s is not None:
            return self.catalog_items_per_s
        return 5000.0 if self.transport == "tcp" else 500.0


class MediaServer(BaseModel):
    """The ZLMediaKit that receives GB/T 28181 devices' RTP (`[gb28181.media]`).

    Players get the signed link of the relay (`[[relays]]`) serving the region; the relay is
    normally this same ZLMediaKit, with URL templates for its `rtp` app.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    api_url: str = Field(pattern=r"^https?://[^\s\"'<>]+$", description="ZLMediaKit HTTP API")
    secret: SecretStr = Field(min_length=1, description="its api.secret")
    rtp_ip: str = Field(min_length=1, description="the address devices send RTP to")
    tcp_mode: Literal["udp", "passive", "active"] = "udp"
    invite_timeout_s: float = Field(default=10.0, gt=0, le=120)
    max_sessions_per_device: int = Field(default=4, ge=1, le=64)
    output_url: str | None = Field(
        default=None,
        pattern=r"^(rtsp|rtmp|https?)://[^\s\"'<>]+$",
        description="the media server's output of a stream, read by frame diagnosis of GB "
        "channels: a template with {stream_key} (and {sign}, a short link the play hook "
        "admits), e.g. rtsp://zlm:554/rtp/{stream_key}?sign={sign}; none: not diagnosed",
    )

    @field_validator("output_url")
    @classmethod
    def _output_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "{stream_key}" not in value:
            raise ValueError("put {stream_key} where the media server names the stream")
        try:
            value.format(stream_key="k", sign="s")
        except (KeyError, IndexError, ValueError):
            raise ValueError("only {stream_key} and {sign} may be used in braces") from None
        return value


class Gb28181Settings(BaseModel):
    """The `[gb28181]` table: our SIP server for GB/T 28181 devices and lower platforms.

    `server_id` is our own 20-digit ID (type 200, a 中心信令服务器); the SIP domain (and digest
    realm) defaults to its first 10 digits. `password` is the default device password; it is
    sealed with the credential key the moment the store needs it and never returned.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    sip_host: str | None = Field(default=None, description="SIP listen address; the HTTP host")
    sip_port: int = Field(default=5060, ge=0, le=65535, description="UDP and TCP; 0 picks one")
    server_id: str = Field(default="14000000002000000001", description="our ID, type 200")
    domain: str | None = Field(default=None, description="SIP domain; first 10 digits of the ID")
    password: SecretStr = Field(default=SecretStr("12345678"), min_length=1, max_length=64)
    charset: Literal["GB2312", "UTF-8"] = "GB2312"
    keepalive_timeout_s: float = Field(
        default=180.0, gt=0, le=86_400, description="missed keepalives: 3 × 60 s"
    )
    catalog_idle_timeout_s: float = Field(
        default=40.0,
        gt=0,
        le=600,
        description="a catalog is closed as partial after this long without a MESSAGE; above "
        "a device's 32 s of retransmissions (Timer F), or its last MESSAGE can arrive late",
    )
    # catalog items waiting for the store beyond which catalog intake pauses (backpressure)
    catalog_backlog_items: int = Field(default=16_000, ge=1, le=1_000_000)
    # items of one catalog buffered before they go to the store (a city's catalog streams)
    catalog_batch_items: int = Field(default=2_000, ge=1, le=100_000)
    min_expires: int = Field(default=60, ge=1, le=86_400)
    max_expires: int = Field(default=86_400, ge=60, le=7 * 86_400)
    rate_per_source: float = Field(default=50.0, gt=0, le=100_000)
    # registered lower platforms (type 200) push whole catalogs: a budget of their own
    platform_rate_per_source: float = Field(default=5_000.0, gt=0, le=100_000)
    keepalive_flush_s: float = Field(
        default=1.0, gt=0, le=60, description="keepalives are written in batches this often"
    )
    query_on_register: bool = Field(
        default=True, description="query Catalog and DeviceInfo after each (re-)registration"
    )
    media: MediaServer | None = Field(default=None, description="live video; unset: none")
    upstreams: tuple[UpstreamSettings, ...] = Field(
        default=(), description="[[gb28181.upstreams]]: upper platforms we cascade to"
    )
    cascade_host: str | None = Field(
        default=None, description="address our cascade SIP sockets bind to; default http_host"
    )

    @field_validator("upstreams")
    @classmethod
    def _unique_names(cls, value: tuple[UpstreamSettings, ...]) -> tuple[UpstreamSettings, ...]:
        names = [u.name for u in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"upstream names must be unique; repeated: {dupes}")
        return value

    regions: tuple[str, ...] = Field(
        default=(),
        description="region-code prefixes of the device IDs we accept; () = our own province",
    )

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [r for r in value if not (r.isdigit() and 2 <= len(r) <= 6)]
        if bad:
            raise ValueError(f"region prefixes must be 2-6 digits, not {bad}")
        return value

    @field_validator("server_id")
    @classmethod
    def _server_id(cls, value: str) -> str:
        from camera_registry.gbid import PROVINCES

        if len(value) != 20 or not value.isdigit():
            raise ValueError("must be exactly 20 digits (GB/T 28181 encoding rule A)")
        if value[:2] not in PROVINCES:
            raise ValueError(f"digits 1-2 ({value[:2]}) are not a GB/T 2260 province code")
        if value[10:13] != "200":
            raise ValueError(f"digits 11-13 ({value[10:13]}) must be 200 (中心信令服务器)")
        return value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 10 or not value.isdigit()):
            raise ValueError("must be 10 digits (the first 10 of a GB/T 28181 ID)")
        return value

    @property
    def sip_domain(self) -> str:
        return self.domain or self.server_id[:10]

    @property
    def accepted_regions(self) -> tuple[str, ...]:
        return self.regions or (self.server_id[:2],)


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
    import_aside_min_bytes: int = Field(
        default=16 * 1024**2,
        ge=0,
        description="an uploaded ledger this large or larger is imported by a process of its "
        "own at the lowest CPU priority, so the server's readers keep their latency",
    )
    import_statement_timeout_s: float = Field(
        default=3600.0,
        ge=1,
        le=86_400,
        description="longest single database statement of an import (its merge); a longer "
        "wait means the database is gone or wedged, and the import fails",
    )
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
    record_days_level1: int = Field(
        default=90,
        ge=1,
        le=3650,
        description="录像保存天数 the web map proposes for a new 一类 camera (GB/T 28181 makes it "
        "mandatory for 一类; the technician sees and may change it)",
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
    gb28181: Gb28181Settings = Field(
        default_factory=Gb28181Settings, description="[gb28181] table: the SIP server"
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

"""The 农村覆盖、城市加密 layout policy as validated data (DESIGN.md §2 "Layout policy").

Policy is data, not code: planners edit a TOML file (`camera_registry/data/policy.default.toml`
documents every field) and `camera_registry.policy.load_policy` reads it; this module only
validates a plain dict, so it stays free of I/O. It lives here rather than in geo/ because it
is configuration and needs pydantic, which geo/ (numpy, shapely, pyproj only) does not import;
geo/ takes the numbers it yields as plain arguments. Unknown keys are errors (a typo such as
`cel_size_m` would otherwise silently fall back to the default and change every result), and
impossible values (a negative cell size, a share above 1, a radius of 0) are errors naming the
key by its dotted path, e.g. `urban.cell_size_m`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import shapely
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from camera_registry.errors import FieldError, RegistryError

__all__ = ["Policy", "PolicyError", "ZoneKind", "parse_policy"]

ZoneKind = Literal["urban", "rural"]
Share = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Metres = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Weight = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
RegionPrefix = Annotated[str, Field(pattern=r"^[0-9]{2,6}$")]
LEVELS = (1, 2, 3, 9)  # GB/T 28181 PointType: 一类, 二类, 三类, other


class PolicyError(RegistryError):
    """A policy that cannot be used; `errors` names every bad key by its dotted path.

    A registry error since the policy moved out of `geo/`: it is the planner's input, checked
    before any geometry runs.
    """

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        lines = "; ".join(f"{key}: {msg}" for key, msg in errors)
        super().__init__(
            f"invalid layout policy: {lines}", [FieldError(key, msg) for key, msg in errors]
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ZonePolygon(_Strict):
    """A drawn area that is urban or rural whatever its county is (a new town, a park)."""

    kind: ZoneKind
    name: str | None = None
    ring: list[tuple[float, float]] = Field(min_length=3)  # WGS-84 (lon, lat); closed for you

    @field_validator("ring")
    @classmethod
    def _lonlat(cls, ring: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for lon, lat in ring:
            if not (math.isfinite(lon) and math.isfinite(lat)) or abs(lon) > 180 or abs(lat) > 90:
                raise ValueError(f"({lon}, {lat}) is not a WGS-84 lon, lat point")
        if not shapely.is_valid(shapely.Polygon(ring)) or shapely.Polygon(ring).area == 0:
            raise ValueError("the ring crosses itself or encloses no area; redraw it")
        return ring

    def polygon(self) -> shapely.Geometry:
        return shapely.Polygon(self.ring)


class Zones(_Strict):
    """Which regions are urban (densify: cell grid) and which rural (villages, checkpoints)."""

    urban: list[RegionPrefix] = []  # region codes or prefixes always urban
    rural: list[RegionPrefix] = []  # region codes or prefixes always rural
    urban_name_suffix: str = "区"  # by default a 市辖区 (name ends in 区) is urban, else rural
    polygons: list[ZonePolygon] = []

    @model_validator(mode="after")
    def _disjoint(self) -> Zones:
        both = sorted(set(self.urban) & set(self.rural))
        if both:
            raise ValueError(f"region codes listed as both urban and rural: {both}")
        return self


class Urban(_Strict):
    cell_size_m: Metres = 100.0
    target_cell_share: Share = 0.95
    target_cameras_per_km2: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None


class Rural(_Strict):
    village_entrance_radius_m: Metres = 150.0
    target_village_share: Share = 1.0


class Junctions(_Strict):
    target_share: Share = 1.0  # "no blind corner at road intersections"


class Dori(_Strict):
    # IEC 62676-4 px/m: 25 detect, 62.5 observe, 125 recognise, 250 identify.
    px_per_m: Annotated[float, Field(gt=0.0, le=1000.0, allow_inf_nan=False)] = 25.0


class Weights(_Strict):
    """Priority of a gap: population where given, else a fixed weight, else area."""

    use_population: bool = True
    village: Weight = 100.0  # a village without a population counts as this many people
    junction: Weight = 50.0  # an uncovered junction (× its own weight when the data gives one)
    trunk_junction: Weight = 150.0  # an uncovered trunk-road checkpoint
    cell_per_km2: Weight = 1000.0  # uncovered urban area, per km² (roughly people per km²)


class ProposalCamera(_Strict):
    """The camera a proposal adds: reach = min(radius, DORI distance for `dori.px_per_m`)."""

    hfov_deg: Annotated[float, Field(gt=0.0, le=360.0, allow_inf_nan=False)] = 90.0
    h_px: Annotated[int, Field(gt=0, le=20000)] = 1920
    radius_m: Metres = 60.0


def _default_radii() -> dict[int, float]:
    return {1: 80.0, 2: 60.0, 3: 40.0, 9: 30.0}


class Policy(_Strict):
    """The whole layout policy; `Policy.default()` is the national-norm baseline."""

    zones: Zones = Zones()
    urban: Urban = Urban()
    rural: Rural = Rural()
    junctions: Junctions = Junctions()
    dori: Dori = Dori()
    default_radius_m: dict[int, Metres] = Field(default_factory=_default_radii)
    weights: Weights = Weights()
    proposal_camera: ProposalCamera = ProposalCamera()

    @field_validator("default_radius_m")
    @classmethod
    def _every_level(cls, radii: dict[int, float]) -> dict[int, float]:
        unknown = sorted(set(radii) - set(LEVELS))
        if unknown:
            raise ValueError(f"levels are {list(LEVELS)}; unknown {unknown}")
        missing = sorted(set(LEVELS) - set(radii))
        if missing:
            raise ValueError(f"give a radius for every level; missing {missing}")
        return radii

    @classmethod
    def default(cls) -> Policy:
        return cls()

    def zone_kind(self, adcode: str, name: str) -> ZoneKind:
        """Urban or rural for a county: the longest listed prefix decides, else the name rule."""
        best: tuple[int, ZoneKind] | None = None
        for kind, prefixes in (("urban", self.zones.urban), ("rural", self.zones.rural)):
            for p in prefixes:
                if adcode.startswith(p) and (best is None or len(p) > best[0]):
                    best = (len(p), kind)  # type: ignore[assignment]
        if best is not None:
            return best[1]
        return "urban" if name.endswith(self.zones.urban_name_suffix) else "rural"

    def zone_polygons(self, kind: ZoneKind) -> shapely.Geometry | None:
        """The drawn overrides of one kind as one WGS-84 geometry, or None when there are none."""
        polys = [p.polygon() for p in self.zones.polygons if p.kind == kind]
        return shapely.union_all(polys) if polys else None

    def proposal_radius_m(self) -> float:
        """Reach of a proposed camera: its radius, or less when DORI density runs out first.

        DORI distance d = H_px·f / (w·P) and f/w = 1 / (2·tan(HFOV/2)) give
        d = H_px / (2·tan(HFOV/2)·P) without knowing the lens.
        """
        cam = self.proposal_camera
        half = math.radians(min(cam.hfov_deg, 179.0) / 2.0)
        dori = cam.h_px / (2.0 * math.tan(half) * self.dori.px_per_m)
        return min(cam.radius_m, dori)


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "policy"


def parse_policy(data: Mapping[str, Any]) -> Policy:
    """Validate a policy dict (as read from TOML); every problem is named by its dotted key."""
    try:
        return Policy.model_validate(dict(data))
    except ValidationError as exc:
        errors = []
        for e in exc.errors():
            msg = "unknown key (check the spelling)" if e["type"] == "extra_forbidden" else e["msg"]
            errors.append((_dotted(e["loc"]), msg))
        raise PolicyError(errors) from None

"""The layout policy as a coverage run sees it: validated input, stored JSON, run parameters.

A run stores the policy it used (as JSON) and hashes it into its inputs version, and both the
CLI (`--policy FILE`, TOML) and the API (`policy` object) must reject a bad policy naming the
key at fault. This module is the one place that turns a policy into the plain
:class:`~camera_registry.coverage_compute.CoverageParams` the worker processes take.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .coverage_compute import CoverageParams
from .errors import FieldError, RegistryError


class PolicyInvalid(RegistryError):
    status = 422
    title = "Invalid layout policy"


class _Policy(BaseModel):
    """Interim policy model (the full one is geo/policy.py); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cell_m: float = Field(default=100.0, gt=0, le=10_000)
    village_entrance_m: float = Field(default=150.0, gt=0, le=10_000)
    default_radius_by_level: dict[int, float] = Field(
        default_factory=lambda: {1: 100.0, 2: 80.0, 3: 50.0, 9: 50.0}
    )
    urban_regions: tuple[str, ...] = ()
    rural_regions: tuple[str, ...] = ()
    proposal_radius_m: float = Field(default=100.0, gt=0, le=10_000)
    cell_weight: float = Field(default=1.0, ge=0)
    village_weight: float = Field(default=10.0, ge=0)
    junction_weight: float = Field(default=5.0, ge=0)


def _errors(exc: ValidationError, prefix: str) -> list[FieldError]:
    out = []
    for err in exc.errors():
        loc = ".".join([prefix, *(str(p) for p in err["loc"])])
        msg = "unknown policy key" if err["type"] == "extra_forbidden" else err["msg"]
        out.append(FieldError(loc, msg))
    return out


def parse_policy(data: Mapping[str, Any] | None, *, field: str = "policy") -> dict[str, Any]:
    """Validate a policy (None = defaults) and return its canonical JSON form."""
    try:
        model = _Policy.model_validate(dict(data or {}))
    except ValidationError as exc:
        errors = _errors(exc, field)
        keys = ", ".join(e.field for e in errors)
        raise PolicyInvalid(f"the layout policy is invalid at {keys}; fix it", errors) from None
    return json.loads(model.model_dump_json())


def read_policy_file(path: Path) -> dict[str, Any]:
    """A TOML policy file, validated like the API's `policy` object."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyInvalid(
            f"cannot read policy {path}: {exc}", [FieldError("policy", str(exc))]
        ) from None
    return parse_policy(data)


def policy_hash(policy: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(policy, sort_keys=True).encode()).hexdigest()[:16]


def params(policy: Mapping[str, Any]) -> CoverageParams:
    p = _Policy.model_validate(dict(policy))
    return CoverageParams(
        cell_m=p.cell_m,
        village_entrance_m=p.village_entrance_m,
        default_radius_by_level=dict(p.default_radius_by_level),
        proposal_radius_m=p.proposal_radius_m,
        cell_weight=p.cell_weight,
        village_weight=p.village_weight,
        junction_weight=p.junction_weight,
    )


def zone_of(policy: Mapping[str, Any], adcode: str, name: str) -> str:
    """农村覆盖、城市加密: city districts (names ending in 区) are urban unless the policy says."""
    p = _Policy.model_validate(dict(policy))
    if any(adcode.startswith(r) for r in p.rural_regions):
        return "rural"
    if any(adcode.startswith(r) for r in p.urban_regions):
        return "urban"
    return "urban" if name.endswith("区") else "rural"

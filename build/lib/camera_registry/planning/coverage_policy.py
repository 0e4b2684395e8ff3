"""The layout policy as a coverage run sees it: validated input, stored JSON, run parameters.

The policy model is :mod:`camera_registry.policy_model` (TOML files are read by
:mod:`camera_registry.policy`).
A run stores the policy it used as canonical JSON and hashes it into its inputs version, and
both the CLI (`--policy FILE`) and the API (`policy` object) reject a bad policy naming the
dotted key at fault. This module is the one place that turns a policy into the plain
:class:`~camera_registry.coverage_compute.CoverageParams` the worker processes take.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import shapely

from camera_registry.errors import FieldError, RegistryError
from camera_registry.planning.compute import CoverageParams
from camera_registry.planning.policy import load_policy
from camera_registry.planning.policy_model import Policy, PolicyError
from camera_registry.planning.policy_model import parse_policy as _parse


class PolicyInvalid(RegistryError):
    """A layout policy given with a request does not validate; errors name the keys."""


def _invalid(exc: PolicyError, prefix: str | None) -> PolicyInvalid:
    errors = [
        FieldError(f"{prefix}.{e.field}" if prefix else e.field, e.message) for e in exc.errors
    ]
    keys = ", ".join(e.field for e in errors)
    return PolicyInvalid(f"the layout policy is invalid at {keys}; fix it and ask again", errors)


def parse_policy(data: Mapping[str, Any] | None, *, field: str = "policy") -> dict[str, Any]:
    """Validate a policy (None = the defaults) and return its canonical JSON form."""
    try:
        model = _parse(dict(data or {}))
    except PolicyError as exc:
        raise _invalid(exc, field) from None
    return model.model_dump(mode="json")


def read_policy_file(path: Path) -> dict[str, Any]:
    """A TOML policy file, validated like the API's `policy` object (blocking: use a thread)."""
    try:
        return load_policy(path).model_dump(mode="json")
    except PolicyError as exc:
        raise _invalid(exc, None) from None


def policy_hash(policy: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(policy, sort_keys=True).encode()).hexdigest()[:16]


def model(policy: Mapping[str, Any]) -> Policy:
    return _parse(dict(policy))


def params(policy: Mapping[str, Any]) -> CoverageParams:
    """Plain numbers for the workers; weights in one unit (people, or people-equivalents)."""
    p = model(policy)
    cell_km2 = p.urban.cell_size_m**2 / 1e6
    urban = p.zone_polygons("urban")
    rural = p.zone_polygons("rural")
    return CoverageParams(
        cell_m=p.urban.cell_size_m,
        village_entrance_m=p.rural.village_entrance_radius_m,
        default_radius_by_level={int(k): float(v) for k, v in p.default_radius_m.items()},
        proposal_radius_m=p.proposal_radius_m(),
        cell_weight=p.weights.cell_per_km2 * cell_km2,
        village_weight=p.weights.village,
        use_population=p.weights.use_population,
        junction_weight=p.weights.junction,
        trunk_junction_weight=p.weights.trunk_junction,
        urban_polygons_wkb=None if urban is None else shapely.to_wkb(urban),
        rural_polygons_wkb=None if rural is None else shapely.to_wkb(rural),
    )


def zone_of(policy: Mapping[str, Any], adcode: str, name: str) -> str:
    """农村覆盖、城市加密: the policy's zone rule (by default districts, names in 区, are urban)."""
    return model(policy).zone_kind(adcode, name)

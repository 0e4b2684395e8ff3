"""The `[health]` config table turned into what the health package runs with.

`camera_registry.config` cannot import `health` (DESIGN.md §1), so it carries the table as plain
values; this module checks the diagnosis keys against `Thresholds` and fills in defaults, so a
misspelt threshold stops `camreg serve`/`camreg worker` at start-up instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, fields

from camera_registry.config import HealthSettings
from health.diagnosis import Thresholds
from health.errors import HealthError, InvalidPolicy, InvalidThresholds
from health.status import StatusPolicy
from health.worker import WorkerConfig

log = logging.getLogger(__name__)


class HealthConfigError(HealthError, ValueError):
    """A `[health]` value the health package cannot run with; the message names the key."""


# `[health.diagnosis]` keys of the first diagnosis (before issue 12) → the key that replaced
# them, and why the old value is not carried over. Every one of them measured something else
# (a variance of the Laplacian is not a re-blur ratio, a share of similar pixels is not a share
# of moving blocks), so copying the number would silently switch a check off or make it fire
# on everything: a deployed config still starts, says which key to set, and runs the new check
# at its tuned default.
DEPRECATED_DIAGNOSIS_KEYS: dict[str, tuple[str, str]] = {
    "blur_laplacian_var": ("blur_reblur", "variance of the Laplacian; now a re-blur ratio 0–1"),
    "noise_residual": ("noise_level", "spatial median residual; now temporal change in levels"),
    "frozen_similarity": (
        "frozen_moving_share",
        "share of similar pixels; now the share of 8×8 blocks that may still move",
    ),
    "frozen_pixel_tolerance": (
        "frozen_block_change",
        "per-pixel tolerance; now the mean change of an 8×8 block",
    ),
    "colour_cast_share": ("colour_cast_factor", "share of saturated pixels; now CIELAB D/M"),
    "colour_cast_min_saturation": (
        "colour_cast_offset",
        "HSV saturation; now the CIELAB chroma offset",
    ),
    "colour_cast_pixel_saturation": (
        "colour_cast_pixel_value",
        "per-pixel HSV saturation; the cast is now weighed over every lit pixel",
    ),
}


def _resolve_aliases(diagnosis: dict[str, float | bool]) -> dict[str, float | bool]:
    """The table with old key names dropped after a deprecation warning naming the new key.

    Both the old and the new name given is an error: which one was meant cannot be guessed.
    """
    out = dict(diagnosis)
    for old, (new, why) in DEPRECATED_DIAGNOSIS_KEYS.items():
        if old not in out:
            continue
        if new in out:
            raise HealthConfigError(
                f"health.diagnosis.{old} and health.diagnosis.{new} are both set; {old} is the "
                f"old name of {new} ({why}): remove {old}"
            )
        default = getattr(Thresholds(), new)
        log.warning(
            "health.diagnosis.%s is deprecated: use health.diagnosis.%s (%s); the old value %s "
            "is not carried over, %s = %s (the default) applies until it is set",
            old,
            new,
            why,
            out[old],
            new,
            default,
        )
        del out[old]
    return out


@dataclass(frozen=True, slots=True)
class HealthRuntime:
    worker: WorkerConfig
    policy: StatusPolicy
    thresholds: Thresholds


_WORKER_KEYS = (
    "interval_level1_s",
    "interval_s",
    "max_backoff_s",
    "diagnose_every_s",
    "sample_seconds",
    "per_host",
)


def health_runtime(cfg: HealthSettings, base: WorkerConfig | None = None) -> HealthRuntime:
    """Worker config, status policy and thresholds from the `[health]` table.

    `base` carries what the command line already set (concurrency, batch…); the table's values
    override its defaults.
    """
    worker = base or WorkerConfig()
    changes = {k: getattr(cfg, k) for k in _WORKER_KEYS if getattr(cfg, k) is not None}
    worker = dataclasses.replace(worker, **changes)
    status = {
        k: getattr(cfg, k) for k in ("offline_after", "online_after", "recheck_s", "confirm_after")
    }
    try:
        policy = StatusPolicy(**{k: v for k, v in status.items() if v is not None})
    except InvalidPolicy as exc:
        raise HealthConfigError(f"health: {exc}") from None
    known = {f.name: f for f in fields(Thresholds) if f.name != "faults"}
    diagnosis = _resolve_aliases(cfg.diagnosis)
    unknown = sorted(set(diagnosis) - set(known))
    if unknown:
        raise HealthConfigError(
            f"health.diagnosis.{unknown[0]}: unknown threshold; known ones: {', '.join(known)}"
        )
    values: dict[str, float | int | bool | tuple[str, ...]] = {}
    if cfg.faults is not None:
        values["faults"] = tuple(cfg.faults)
    for name, value in diagnosis.items():
        if known[name].type in (bool, "bool"):
            # A switch, not a threshold: `ptz_check = 1` may be a typo for a threshold.
            if not isinstance(value, bool):
                raise HealthConfigError(f"health.diagnosis.{name}: must be true or false")
            values[name] = value
        elif isinstance(value, bool):
            raise HealthConfigError(f"health.diagnosis.{name}: must be a number, not {value}")
        elif known[name].type in (int, "int"):
            if value != int(value):
                raise HealthConfigError(f"health.diagnosis.{name}: must be a whole number")
            values[name] = int(value)
        else:
            values[name] = float(value)
    try:
        thresholds = Thresholds(**values)  # type: ignore[arg-type]
    except InvalidThresholds as exc:
        raise HealthConfigError(f"health.diagnosis: {exc}") from None
    return HealthRuntime(worker, policy, thresholds)

"""The `[health]` config table turned into what the health package runs with.

`camera_registry.config` cannot import `health` (DESIGN.md §1), so it carries the table as plain
values; this module checks the diagnosis keys against `Thresholds` and fills in defaults, so a
misspelt threshold stops `camreg serve`/`camreg worker` at start-up instead of being ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from camera_registry.config import HealthSettings
from health.diagnosis import Thresholds
from health.errors import HealthError, InvalidPolicy, InvalidThresholds
from health.status import StatusPolicy
from health.worker import WorkerConfig


class HealthConfigError(HealthError, ValueError):
    """A `[health]` value the health package cannot run with; the message names the key."""


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
    unknown = sorted(set(cfg.diagnosis) - set(known))
    if unknown:
        raise HealthConfigError(
            f"health.diagnosis.{unknown[0]}: unknown threshold; known ones: {', '.join(known)}"
        )
    values: dict[str, float | int | tuple[str, ...]] = {}
    if cfg.faults is not None:
        values["faults"] = tuple(cfg.faults)
    for name, value in cfg.diagnosis.items():
        if known[name].type in (int, "int"):
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

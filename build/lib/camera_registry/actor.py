"""Who is acting: the principal every registry call is made for.

Roles gate what an endpoint may do (checked by the API); the region scope limits which
cameras exist for the caller at all, so it is applied inside the registry's SQL and cannot be
forgotten by a handler.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    TECHNICIAN = "technician"
    PLANNER = "planner"
    COMMANDER = "commander"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Actor:
    name: str
    role: Role
    token_id: str | None = None
    scope: str | None = None  # region-code prefix, e.g. "1401"; None = whole deployment
    remote_addr: str | None = None
    rate_limit: int | None = None  # requests per minute for this token; None = unlimited

    def covers(self, region_code: str) -> bool:
        return self.scope is None or region_code.startswith(self.scope)

    @classmethod
    def cli(cls, what: str = "cli") -> Actor:
        import getpass

        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return cls(name=f"{what}:{user}", role=Role.ADMIN)

"""The registry's error hierarchy.

Every failure a caller can act on is a `RegistryError` subclass carrying the fields at fault,
so the API can answer with problem+json and the CLI can print the row and column, from the
same object. Messages say what to do, not only what went wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one input field; `row` is set for ledger rows (as the user numbers them)."""

    field: str
    message: str
    row: int | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"field": self.field, "message": self.message}
        if self.row is not None:
            out["row"] = self.row
        return out


class RegistryError(Exception):
    """Base of everything the registry raises on purpose."""

    status = 500
    title = "Registry error"

    def __init__(self, detail: str, errors: Iterable[FieldError] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors: list[FieldError] = list(errors)


class ValidationFailed(RegistryError):
    status = 422
    title = "Invalid camera data"


class BadRequest(RegistryError):
    status = 400
    title = "Bad request"


class NotFound(RegistryError):
    status = 404
    title = "Not found"


class Forbidden(RegistryError):
    status = 403
    title = "Forbidden"


class Unauthorized(RegistryError):
    status = 401
    title = "Unauthorized"


class TooManyRequests(RegistryError):
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: str) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class DuplicateCamera(RegistryError):
    status = 409
    title = "Duplicate camera"


class VersionConflict(RegistryError):
    status = 412
    title = "Version conflict"


class PreconditionRequired(RegistryError):
    status = 428
    title = "Precondition required"


class ConfigError(RegistryError):
    title = "Configuration error"


class DatabaseUnavailable(RegistryError):
    status = 503
    title = "Database unavailable"


class EmbeddedDatabaseBusy(DatabaseUnavailable):
    title = "Embedded database already in use"

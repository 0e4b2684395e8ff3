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
    """Base of everything the registry raises on purpose.

    Domain errors say what went wrong and what to do; they carry no HTTP status: `api/problems.py`
    maps each class to one, and the CLI prints the same message with the row and field.
    """

    def __init__(self, detail: str, errors: Iterable[FieldError] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors: list[FieldError] = list(errors)


class ValidationFailed(RegistryError):
    """Input that breaks a rule of the domain (a GB ID, a level without a position, …)."""


class BadRequest(RegistryError):
    """A request that is malformed in itself (a parameter of the wrong form)."""


class NotFound(RegistryError):
    """No such object, or none the caller's scope may see (the two are not told apart)."""


class Forbidden(RegistryError):
    """The caller's role or scope does not admit this action."""


class Unauthorized(RegistryError):
    """No usable credential: missing, unknown, expired or revoked token."""


class TooManyRequests(RegistryError):
    """The caller's token is over its rate limit; `retry_after` says when to come back."""

    def __init__(self, detail: str, retry_after: str) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class DuplicateCamera(RegistryError):
    """A camera with this GB ID (or identity) is registered already."""


class VersionConflict(RegistryError):
    """The object changed since the caller read it (a stale If-Match)."""


class PreconditionRequired(RegistryError):
    """An edit that must say which version it edits (If-Match) did not."""


class ConfigError(RegistryError):
    """Settings that cannot work; the message names the key."""


class DatabaseUnavailable(RegistryError):
    """PostgreSQL cannot be reached or started."""


class EmbeddedDatabaseBusy(DatabaseUnavailable):
    """Another server already runs on this embedded data directory."""

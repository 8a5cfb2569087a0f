"""Domain errors the services raise and the edges (API, pages, tasks) translate."""

from __future__ import annotations


class DomainError(Exception):
    """Base of errors a caller can show: ``code`` is stable, ``field`` names the input."""

    code = "invalid"

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFoundError(DomainError):
    """Also what "exists but not yours" looks like: no enumeration oracle."""

    code = "not_found"


class InvalidStateError(DomainError):
    code = "invalid_state"


class NoRegistryMatchError(DomainError):
    code = "no_registry_match"


class ConflictError(DomainError):
    code = "conflict"

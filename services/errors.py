"""Typed errors of the adapter layer. Entry points map them to HTTP codes and user-facing words."""

from __future__ import annotations


class ServiceError(Exception):
    """Base for errors raised by services/."""


class NotFoundError(ServiceError):
    pass


class ConflictError(ServiceError):
    """A compare-and-set lost: somebody else changed the record first."""


class StaleVersionError(ConflictError):
    def __init__(self, request_id: str, expected: int, actual: int):
        self.request_id = request_id
        self.expected = expected
        self.actual = actual
        super().__init__(f"request {request_id} is at version {actual}, not {expected}")


class StoreUnavailableError(ServiceError):
    pass


class RedisConfigError(ServiceError):
    """Redis is configured in a way that could lose scheduled revocations (e.g. an evicting maxmemory-policy)."""

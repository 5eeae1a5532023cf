"""One Services object per worker process, built before the first job (and, with `--fork`, before RQ forks its
work horses, so they inherit it)."""

from __future__ import annotations

from services.composition import Runtime, Services
from services.settings import get_settings

_services: Services | None = None


def services() -> Services:
    global _services
    if _services is None:
        _services = Services(Runtime(get_settings()))
    return _services


def install(instance: Services) -> None:
    """Used by the worker command (and tests running jobs in-process) to provide the object graph."""
    global _services
    _services = instance

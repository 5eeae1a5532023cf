"""RQ jobs: the emergency-account watch (periodic) and one incident's missing steps (after a checklist tick)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from jobs.context import services


def watch() -> dict[str, Any]:
    return asdict(services().emergency_watch.poll())


def drive_incident(incident_id: str) -> dict[str, str]:
    return services().emergency_watch.drive(incident_id)

"""RQ job: make an approved request's role assignment (or apply an approved extension)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from jobs.context import services


def activate_grant(request_id: str, attempt: int = 1) -> dict[str, Any]:
    return asdict(services().grants.activate(request_id, attempt))

"""RQ job: end a grant (expiry, deactivation, reconciler). Idempotent and generation-checked."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from jobs.context import services


def revoke_grant(request_id: str, generation: int, reason: str = "expired", attempt: int = 1) -> dict[str, Any]:
    return asdict(services().grants.revoke(request_id, generation, reason, attempt))

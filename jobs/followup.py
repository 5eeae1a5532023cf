"""RQ jobs: follow-up steps around a grant (session revocation, runbook steps, activity passes, the expiry warning,
the end notice). Planned after the grant or its removal is confirmed; never part of either."""

from __future__ import annotations

from typing import Any

from jobs.context import services


def plan_steps(request_id: str, phase: str) -> dict[str, Any]:
    return {"planned": services().followups.plan(request_id, phase)}


def run_step(request_id: str, key: str, attempt: int = 1) -> dict[str, Any]:
    return services().followups.run(request_id, key, attempt)

"""What the grant steps share: the worker actor, their retry limits, their outcome and the needs-review refusal
(services.workflow.activation for one entitlement, services.workflow.bundle_grant for a bundle)."""

from __future__ import annotations

from dataclasses import dataclass

from policies.model import Actor

WORKER = Actor.system("worker")
TRANSIENT_RETRIES = 5
REMOVAL_WAIT_ATTEMPTS = 40


@dataclass(frozen=True)
class Outcome:
    request_id: str
    state: str
    detail: str = ""


class _NeedsReview(Exception):
    """An assignment exists that breakglass did not make (permanent, or another tool's): never adopted."""

"""RQ job: deliver a receipt (ticket note + evidence, channel notice, requester message), with retries."""

from __future__ import annotations

from typing import Any

from jobs.context import services


def post_receipt(request_id: str, kind: str, attempt: int = 1) -> dict[str, Any]:
    return services().receipts.post(request_id, kind, attempt)

"""RQ job: the scheduled access review (checked hourly; posts once per `reviews.every`)."""

from __future__ import annotations

from typing import Any

from jobs.context import services


def post_review() -> dict[str, Any]:
    return services().reviews.post_if_due()

"""The approval flow's three cards, as thin views over `status.request_card`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cards.status import request_card
from policies.record import RequestRecord


def approval_card(record: RequestRecord, now: datetime, approver_ids: list[str]) -> dict[str, Any]:
    """What an approver sees (personal card, or the answer to a refresh): Approve / Deny, plus `refresh`."""
    return request_card(record, now=now, viewer="approver", approver_ids=approver_ids)


def approval_base_card(record: RequestRecord, now: datetime, approver_ids: list[str]) -> dict[str, Any]:
    """What gets posted to the channel: read-only for everyone, refreshed into the approver view for approvers."""
    return request_card(record, now=now, viewer="readonly", approver_ids=approver_ids)


def decided_card(record: RequestRecord, now: datetime) -> dict[str, Any]:
    """Replaces every copy once the request is decided: read-only, no refresh."""
    return request_card(record, now=now, viewer="readonly")

"""RQ jobs: approval cards, card updates for every copy, decision notices."""

from __future__ import annotations

from typing import Any

from jobs.context import services


def notify_approvers(request_id: str, backups: bool = False) -> dict[str, Any]:
    return {"notified": services().notifier.notify_approvers(request_id, backups=backups)}


def update_cards(request_id: str, version: int | None = None) -> dict[str, Any]:
    # `version` only makes the job id unique per transition; the cards always show the latest state.
    return {"updated": services().notifier.update_cards(request_id)}


def notify_decision(request_id: str) -> dict[str, Any]:
    s = services()
    record = s.runtime.store.require(request_id)
    last = record.history[-1]
    text = {"approved": f"Your request {record.id} for {record.decision.entitlement_name} was approved.",
            "denied": f"Your request {record.id} for {record.decision.entitlement_name} was denied: {last.reason}",
            "approval_expired": f"Your request {record.id} expired: no approver answered in time."}.get(
        record.state.value, f"Your request {record.id} is now {record.state.value}.")
    return {"sent": s.notifier.tell_requester(request_id, text)}


def send_request_card(request_id: str) -> dict[str, Any]:
    """A request created from a ticket: the caller gets its card in Teams (and can cancel it there)."""
    return {"sent": services().notifier.send_request_card(request_id)}

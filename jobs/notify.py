"""RQ jobs: approval cards, card updates for every copy, decision notices."""

from __future__ import annotations

from typing import Any

from jobs.context import services
from policies.lifecycle import State
from policies.record import RequestRecord


def notify_approvers(request_id: str, backups: bool = False) -> dict[str, Any]:
    return {"notified": services().notifier.notify_approvers(request_id, backups=backups)}


def update_cards(request_id: str, version: int | None = None) -> dict[str, Any]:
    # `version` only makes the job id unique per transition; the cards always show the latest state.
    return {"updated": services().notifier.update_cards(request_id)}


def notify_decision(request_id: str) -> dict[str, Any]:
    s = services()
    return {"sent": s.notifier.tell_requester(request_id, decision_text(s.runtime.store.require(request_id)))}


def decision_text(record: RequestRecord) -> str:
    """An approval is announced by its grant job after the Graph request, so it says how the grant went too."""
    subject = f"Your request {record.id} for {record.access_name}"
    state = record.state
    comments = "".join(f" {a.approver_name or a.approver} wrote: “{a.reason}”." for a in record.approvals
                       if a.reason and a.verdict.value == "approve")
    if state is State.ACTIVE and record.grant is not None:
        return (f"{subject} was approved; the access is active until {record.grant.ends_at:%Y-%m-%d %H:%M} UTC."
                f"{comments}")
    if state in {State.APPROVED, State.ACTIVATING}:
        return f"{subject} was approved; the access is being set up.{comments}"
    if state is State.APPLIED:
        return f"{subject} was approved and added to {record.request.extends}."
    if state is State.FAILED:
        return f"{subject} was approved, but the access could not be granted: {record.failure}"
    if state is State.DENIED:
        return f"{subject} was denied: {record.history[-1].reason}"
    if state is State.APPROVAL_EXPIRED:
        return f"Your request {record.id} expired: no approver answered in time."
    return f"Your request {record.id} is now {state.value.replace('_', ' ')}."


def notify_extension_asked(extension_id: str) -> dict[str, Any]:
    """Someone other than the original requester (the holder) asked to extend a grant: the original requester hears
    it in their own chat, since the grant was asked in their name."""
    s = services()
    store = s.runtime.store
    extension = store.require(extension_id)
    original = store.require(extension.request.extends or "")
    return {"sent": s.notifier.tell(original.request.requester, extension_asked_text(extension, original))}


def extension_asked_text(extension: RequestRecord, original: RequestRecord) -> str:
    from policies.durations import format_duration

    asker = extension.requester_name or extension.request.requester
    holds = " (who holds the role)" if extension.request.requester == extension.request.target else ""
    status = {State.PENDING_APPROVAL: "it is waiting for approval", State.APPROVED: "it was approved by policy",
              State.DENIED: "the policy denied it"}.get(extension.state, f"it is {extension.state.value}")
    return (f"{asker}{holds} asked to extend {original.id} ({original.access_name}), which you "
            f"requested, by {format_duration(extension.request.duration)}: request {extension.id}; {status}.")


def send_request_card(request_id: str) -> dict[str, Any]:
    """A request created from a ticket: the caller gets its card in Teams (and can cancel it there)."""
    return {"sent": services().notifier.send_request_card(request_id)}


def policy_weakened(previous: str, digest: str, weakened: list[str]) -> dict[str, Any]:
    """On-call hears once that a reloaded policy loosened a tier-0 rule (the change itself is audited)."""
    sent = services().notifier.alert("Policy weakened for a tier-0 role", [
        ("Previous policy", previous), ("New policy", digest), ("Weakened", str(len(weakened)))], "critical",
        "\n".join(weakened))
    return {"sent": sent}

"""Granting a bundle: several entitlements in one request, all or nothing.

The grant is a loop over the bundle's members; each member goes through the same per-member step a single grant
does (`GrantService._assign` for the assignment and its read-back, `GrantService._remove` for the removal and its
read-back), so a new kind of entitlement only has to slot in behind that step.

All or nothing:
- every member is confirmed by read-back before the request becomes ACTIVE, and each member's activation is audited
  on its own (`grant.activated` with `member`), as the JIT procedure asks;
- if a member fails for good, the members assigned before it are removed: the intent is written first (the
  request's `failure` is set while it is still ACTIVATING, and `grant.rollback_started` names what will be removed),
  then each removal is audited (`grant.rollback_requested`, `grant.rolled_back`); only when nothing is left does the
  request end FAILED (ticket note and alert). A removal Graph refuses for now (PIM's five-minute floor, an outage)
  is retried by the grant job, which sees the `failure` and resumes the rollback; the reconciler re-drives an
  ACTIVATING request like any other, so a lost job still ends in a rollback, never in partial access.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from policies.assignable import Assignable
from policies.lifecycle import Event, State
from policies.model import Grant, GrantMode
from policies.record import RequestRecord
from services.ports import ActiveDurationTooShortError, GraphError, GraphThrottledError, GraphUnavailableError
from services.state import queue as jobs
from services.state.queue import job_id
from services.workflow.grant_outcome import (
    REMOVAL_WAIT_ATTEMPTS,
    TRANSIENT_RETRIES,
    WORKER,
    Outcome,
    _NeedsReview,
)

# The grant service (services.workflow.activation.GrantService) is handed in, not imported: it imports this module.
GrantService = Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """One entitlement of a bundle as Graph sees it: who receives what (a role at a scope, or a group's membership or
    ownership). `role` and `scope` are the target's ledger key."""

    entitlement: str
    name: str
    principal: str
    target: Assignable

    @property
    def role(self) -> str:
        return self.target.ledger_role

    @property
    def scope(self) -> str:
        return self.target.scope


class MemberFailedError(Exception):
    """A member could not be granted for good: the bundle is rolled back."""

    def __init__(self, member: Member, reason: str, alert: str = "grant_failed"):
        self.member = member
        self.reason = reason
        self.alert = alert
        super().__init__(reason)


def members_of(service: GrantService, record: RequestRecord) -> list[Member]:
    """The bundle's members as decided (the decision keeps them in the bundle's order), scoped by the policy now."""
    policy = service.policies.current()
    out = []
    for decided in record.decision.members:
        ent = policy.entitlement(decided.entitlement)
        out.append(Member(entitlement=decided.entitlement, name=decided.entitlement_name or decided.entitlement,
                          principal=record.request.target, target=decided.assignable(ent.scope if ent else "/")))
    return out


class BundleGrant:
    def __init__(self, service: GrantService):
        self.s = service

    # --- grant -------------------------------------------------------------------------------------------------

    def activate(self, record: RequestRecord, head: bytes | None, attempt: int) -> Outcome:

        members = members_of(self.s, record)
        if record.failure:  # an earlier attempt failed a member: finish taking the others away
            return self.roll_back(record, attempt)
        duration = record.decision.granted_duration or record.request.duration
        start = self.s.clock.now().replace(microsecond=0)
        end = start + duration
        grants: list[Grant] = []
        for member in members:
            try:
                grant = self.grant_member(record, member, start, end, duration, head, attempt)
            except MemberFailedError as failed:
                return self.start_rollback(record, failed, attempt)
            head = None
            if grant is None:  # waiting (a removal under way, Graph throttling): a later attempt goes on
                return Outcome(record.id, "activating", f"waiting on {member.entitlement}")
            grants.append(grant)
        # Every member confirmed: each activation audited on its own, then the request moves on in one step.
        ends_at = min(g.ends_at for g in grants)
        for member, grant in zip(members, grants, strict=True):
            read_back = {"entra_ends_at": grant.entra_ends_at.isoformat()} if grant.entra_ends_at else {}
            self.s.audit.append("grant.activated", actor=WORKER.object_id, request_id=record.id, data={
                "mode": grant.mode.value, "generation": grant.generation, "starts_at": grant.starts_at.isoformat(),
                "ends_at": ends_at.isoformat(), "assignment_id": grant.assignment_id, "adopted": grant.adopted,
                "bundle": record.request.entitlement, "member": member.entitlement, "role": member.role,
                **read_back})
        grants = [g.model_copy(update={"ends_at": ends_at}) for g in grants]
        new = self.s.store.update(record.id, lambda r: r.apply(
            Event.ACTIVATED, WORKER, self.s.clock.now(), reason=f"{len(grants)} {grants[0].mode.value} assignments "
                                                                f"verified", grant=grants[0], grants=tuple(grants))
            if r.state is State.ACTIVATING else r)
        if new.state is not State.ACTIVE:
            return Outcome(record.id, new.state.value, "state changed during activation")
        self.s.schedule_revoke(new)
        self.s._after_activation(new)
        self.s.metrics.inc("grants", "activated")
        return Outcome(record.id, "active", f"until {ends_at.isoformat()}")

    def grant_member(self, record: RequestRecord, member: Member, start: datetime, end: datetime,
                     duration: timedelta, head: bytes | None, attempt: int) -> Grant | None:
        """The per-member step: hold the ledger, audit the intent, assign and read back. None: not yet (a retry of
        the whole bundle is queued); MemberFailedError: never (roll the bundle back)."""

        s = self.s
        ledger = s.store.ledger_hold(member.principal, member.role, member.scope, record.id, end)
        if ledger.removing:
            if attempt >= REMOVAL_WAIT_ATTEMPTS:
                raise MemberFailedError(member, f"{member.name}: the previous assignment of this role was not "
                                                "removed in time")
            s.audit.append("grant.waiting_for_removal", actor=WORKER.object_id, request_id=record.id,
                           data={"attempt": attempt, "removing": ledger.removing, "member": member.entitlement})
            self._retry(record, attempt, s._backoff(min(attempt, 6) / 3))
            return None
        others = set(ledger.holders) - {record.id}
        s.audit.append("grant.requested", actor=WORKER.object_id, request_id=record.id, head=head, data={
            "mode": s.mode.value, "principal": member.principal, "role": member.role, "scope": member.scope,
            **({"kind": "group", "group": member.target.object_id, "access": member.scope}
               if member.target.is_group else {}),
            "ends_at": end.isoformat(), "attempt": attempt, "shared_with": sorted(others),
            "bundle": record.request.entitlement, "member": member.entitlement})
        try:
            return s._assign(record, member.principal, member.target, start, end, duration, ledger.assignment_id,
                             others=others, previous_end=s._other_end(ledger, record.id))
        except _NeedsReview as review:
            raise MemberFailedError(member, f"needs review: {member.name}: {review}", "needs_review") from None
        except (GraphUnavailableError, GraphThrottledError) as exc:
            if attempt < TRANSIENT_RETRIES:
                delay = max(s._backoff(2 ** (attempt - 1)), timedelta(seconds=exc.retry_after or 0))
                s.metrics.inc("job_retries", "activate_grant")
                s.audit.append("grant.retry_scheduled", actor=WORKER.object_id, request_id=record.id,
                               data={"error": str(exc)[:300], "attempt": attempt, "member": member.entitlement,
                                     "in_seconds": round(delay.total_seconds(), 3)})
                self._retry(record, attempt, delay)
                return None
            raise MemberFailedError(member, f"{member.name}: Graph unavailable after {attempt} attempts: "
                                            f"{exc}") from None
        except GraphError as exc:
            raise MemberFailedError(member, f"{member.name}: {exc.code}: {exc.message or exc}") from None

    def _retry(self, record: RequestRecord, attempt: int, delay: timedelta) -> None:
        self.s.queue.enqueue_at(self.s.clock.now() + delay, jobs.ACTIVATE_GRANT, record.id, attempt + 1,
                                jid=job_id("grant", record.id, attempt + 1))

    # --- rollback ----------------------------------------------------------------------------------------------

    def start_rollback(self, record: RequestRecord, failed: MemberFailedError, attempt: int) -> Outcome:
        """Write the intent (the failure on the still-ACTIVATING request, and what is to be removed), then remove."""

        s = self.s
        member = failed.member
        # The failed member's hold goes without touching Graph: nothing there is ours for it.
        s.store.ledger_release(member.principal, member.role, member.scope, record.id, generation=-1)
        reason = f"bundle rolled back: {failed.reason}"[:500]
        new = s.store.update(record.id, lambda r: r.with_changes(s.clock.now(), failure=reason, end_reason="failed")
                             if r.state is State.ACTIVATING and not r.failure else r)
        if new.state is not State.ACTIVATING:
            return Outcome(record.id, new.state.value, "state changed during activation")
        held = [m.entitlement for m in members_of(s, new) if record.id in s.store.ledger(m.principal, m.role,
                                                                                             m.scope).holders]
        s.audit.append("grant.rollback_started", actor=WORKER.object_id, request_id=record.id, data={
            "failed_member": member.entitlement, "reason": failed.reason[:500], "alert": failed.alert,
            "to_remove": held})
        return self.roll_back(new, attempt, alert=failed.alert)

    def roll_back(self, record: RequestRecord, attempt: int, alert: str = "grant_failed") -> Outcome:
        """Remove every member this request still holds (idempotent: a retry only finds what is left), then FAILED."""

        s = self.s
        for member in members_of(s, record):
            ledger = s.store.ledger(member.principal, member.role, member.scope)
            pending = ledger.removing == f"{record.id}:{ledger.generation}"
            if record.id not in ledger.holders and not pending:
                continue
            s.audit.append("grant.rollback_requested", actor=WORKER.object_id, request_id=record.id, data={
                "member": member.entitlement, "role": member.role, "assignment_id": ledger.assignment_id,
                "attempt": attempt})
            release = s.store.ledger_release(member.principal, member.role, member.scope, record.id,
                                             ledger.generation)
            removed = False
            if release.remove_assignment:
                now = s.clock.now()
                grant = s._grant(record, member.principal, member.target, mode=GrantMode(ledger.mode or s.mode.value),
                                 generation=release.generation, starts_at=now, ends_at=now,
                                 assignment_id=release.assignment_id)
                try:
                    s._remove(grant)
                except GraphError as exc:
                    # PIM refuses a removal within five minutes of the assignment; Graph may be down. Either way the
                    # rollback is retried (the request stays ACTIVATING with its failure, so the reconciler re-drives
                    # it too) and nothing is called FAILED while access remains.
                    floor = isinstance(exc, ActiveDurationTooShortError)
                    delay = s.pim_min_active + timedelta(seconds=2) if floor else s._backoff(
                        2 ** min(attempt, 6) / 3)
                    s.audit.append("grant.rollback_retry", actor=WORKER.object_id, request_id=record.id, data={
                        "member": member.entitlement, "error": str(exc)[:300], "attempt": attempt,
                        "in_seconds": round(delay.total_seconds(), 3)})
                    self._retry(record, attempt, delay)
                    return Outcome(record.id, "activating", f"rollback of {member.entitlement} retried")
                removed = True
                s.store.ledger_cleared(member.principal, member.role, member.scope, release.generation)
            s.audit.append("grant.rolled_back", actor=WORKER.object_id, request_id=record.id, data={
                "member": member.entitlement, "removed_in_graph": removed,
                "still_covered_by": sorted(release.remaining)})
        first = members_of(s, record)[0]
        return s._fail(record, first.principal, first.role, first.scope, record.failure or "bundle rolled back",
                       alert=alert)

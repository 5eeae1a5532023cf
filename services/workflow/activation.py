"""Turning approved requests into Entra role assignments and taking them away again.

Rules this module keeps:
- re-read state before acting; every step is idempotent so a retried job (worker killed mid-way) finishes the
  work instead of doubling it;
- write the intent to the audit log before calling Graph, the outcome after;
- an assignment is shared through the ledger: ending one grant never removes access another grant still covers,
  and a revoke from an older generation never touches a newer assignment;
- nothing claims success unless Graph confirmed it on read-back.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from policies.assignable import Assignable
from policies.durations import format_duration
from policies.lifecycle import Event, State
from policies.model import Grant, GrantMode
from policies.record import RequestRecord
from services.clock import Clock
from services.errors import NotFoundError, ServiceError
from services.metrics import DomainMetrics
from services.ports import (
    ActiveDurationTooShortError,
    Graph,
    GraphError,
    GraphThrottledError,
    GraphUnavailableError,
    RoleAssignmentDoesNotExistError,
    RoleAssignmentExistsError,
    Ticketing,
    TicketingUnavailableError,
)
from services.state import queue as jobs
from services.state.audit import AuditLog
from services.state.policy_source import PolicySource
from services.state.queue import JobQueue, job_id
from services.state.store import RequestStore
from services.workflow.assigners import Assigner, Held, for_target
from services.workflow.bundle_grant import BundleGrant
from services.workflow.grant_outcome import (
    REMOVAL_WAIT_ATTEMPTS,
    TRANSIENT_RETRIES,
    WORKER,
    Outcome,
    _NeedsReview,
)

log = logging.getLogger(__name__)

PIM_MIN_ACTIVE = timedelta(minutes=5)
RETRY_BASE = timedelta(seconds=15)
EARLY_FIRE_WAIT_S = 1.5  # rq-scheduler has 1 s resolution; a revoke may fire just before the expiry


class ActivationError(ServiceError):
    pass


def revoke_job_id(request_id: str, generation: int) -> str:
    return job_id("revoke", request_id, generation)


def revoke_retry_job_id(request_id: str, generation: int, attempt: int) -> str:
    return job_id("revoke", request_id, generation, "retry", attempt % 2)


class GrantService:
    def __init__(self, *, store: RequestStore, audit: AuditLog, queue: JobQueue, policies: PolicySource,
                 graph: Graph, clock: Clock, mode: GrantMode = GrantMode.PIM,
                 pim_min_active: timedelta = PIM_MIN_ACTIVE, ticketing: Ticketing | None = None,
                 itsm_wait_attempts: int = 40, retry_base: timedelta = RETRY_BASE):
        self.store = store
        self.audit = audit
        self.queue = queue
        self.policies = policies
        self.graph = graph
        self.clock = clock
        self.mode = mode
        self.pim_min_active = pim_min_active
        # Set only when receipts must not lag the grant (BREAKGLASS_RECEIPTS_POLICY=wait): the grant then waits
        # until the ticketing system answers.
        self.wait_for = ticketing
        self.itsm_wait_attempts = itsm_wait_attempts
        # Job-level retries (Graph unavailable or throttled, ticketing down under "wait") are paced from this base:
        # half the reconciler period, 15 s by default; the waits double per attempt up to 20x the base.
        self.retry_base = retry_base
        self.metrics = DomainMetrics(store.redis, store.keys.p)

    # --- activation -----------------------------------------------------------------------------------------

    def _target(self, record: RequestRecord) -> Assignable:
        """What the decision grants. Decisions from before groups existed carry only the role: its scope comes from
        the current policy, as it always did."""
        if record.decision.target is not None:
            return record.decision.target
        ent = self.policies.current().entitlement(record.request.entitlement)
        return record.decision.assignable(ent.scope if ent else "/")

    def _assigner(self, target: Assignable, mode: GrantMode | None = None) -> Assigner:
        return for_target(self.graph, target, mode or self.mode)

    def activate(self, request_id: str, attempt: int = 1) -> Outcome:
        try:
            return self._activate(request_id, attempt)
        finally:
            if attempt == 1:
                self._announce_approval(request_id)

    def _announce_approval(self, request_id: str) -> None:
        """The approval's notice to the requester and its card update, queued by the first attempt once it has
        made its Graph request (or stopped before one): whatever the outcome, the requester hears about the
        decision exactly as if the vote had queued it, only after the grant instead of beside it. A request the
        policy approved by itself was answered in its submit card, and gets no notice."""
        try:
            record = self.store.get(request_id)
            if record is None or not any(t.event == Event.APPROVED.value for t in record.history):
                return
            if record.state is State.ACTIVE:
                return  # its receipt (queued by _after_activation) tells the requester, with the card updates
            self.queue.enqueue(jobs.NOTIFY_DECISION, request_id, jid=job_id("decision", request_id))
            self.queue.enqueue(jobs.UPDATE_CARDS, request_id, record.version,
                               jid=job_id("cards", request_id, record.version))
        except Exception:  # never hide the activation's own outcome or exception behind this one
            log.exception("could not queue the approval notice", extra={"request_id": request_id})

    def _activate(self, request_id: str, attempt: int) -> Outcome:
        # One read: the compare-and-set returns the record unchanged when there is nothing to start. The audit
        # head comes with it for grant.requested below.
        try:
            record, head = self.store.update_peeking(
                request_id, lambda r: r.apply(Event.ACTIVATION_STARTED, WORKER, self.clock.now(),
                                              reason=f"attempt {attempt}")
                if r.state is State.APPROVED and not r.request.extends else r, self.audit.head_key)
        except NotFoundError:
            return Outcome(request_id, "missing", "no such request")
        if record.request.extends:
            return self.apply_extension(record, attempt)
        if record.state is not State.ACTIVATING:
            return Outcome(request_id, record.state.value, "nothing to do")
        if self.wait_for is not None and record.request.ticket and not self._itsm_up(record, attempt):
            if attempt < self.itsm_wait_attempts:
                self.queue.enqueue_at(self.clock.now() + 2 * self.retry_base, jobs.ACTIVATE_GRANT, record.id,
                                      attempt + 1, jid=job_id("grant", record.id, attempt + 1))
                return Outcome(record.id, "activating", "waiting for the ticketing system")
            target = self._target(record)
            return self._fail(record, record.request.target, target.ledger_role, target.scope,
                              "the ticketing system stayed unreachable; grant not made (receipts policy: wait)")
        if record.decision.is_bundle:
            return BundleGrant(self).activate(record, head, attempt)
        principal = record.request.target
        target = self._target(record)
        # The ledger keys a group by "group:<id>" and its access, a role by its id and scope (Assignable).
        role, scope = target.ledger_role, target.scope
        duration = record.decision.granted_duration or record.request.duration
        # Whole seconds: rq-scheduler fires on whole seconds, so an end on one is revoked at the tick that starts
        # it rather than up to a second later (the start moves back by under a second; the length is unchanged).
        start = self.clock.now().replace(microsecond=0)
        end = start + duration
        ledger = self.store.ledger_hold(principal, role, scope, record.id, end)
        if ledger.removing:
            return self._wait_for_removal(record, principal, role, scope, ledger.removing, attempt)
        self.audit.append("grant.requested", actor=WORKER.object_id, request_id=record.id, head=head, data={
            "mode": self.mode.value, "principal": principal, "role": role, "scope": scope,
            **({"kind": "group", "group": target.object_id, "access": target.scope} if target.is_group else {}),
            "ends_at": end.isoformat(), "attempt": attempt, "shared_with": sorted(set(ledger.holders) - {record.id})})
        try:
            grant = self._assign(record, principal, target, start, end, duration, ledger.assignment_id,
                                 others=set(ledger.holders) - {record.id}, previous_end=self._other_end(ledger,
                                                                                                       record.id))
        except _NeedsReview as review:
            return self._fail(record, principal, role, scope, f"needs review: {review}", alert="needs_review")
        except (GraphUnavailableError, GraphThrottledError) as exc:
            if attempt < TRANSIENT_RETRIES:
                delay = max(self._backoff(2 ** (attempt - 1)), timedelta(seconds=exc.retry_after or 0))
                self.metrics.inc("job_retries", "activate_grant")
                self.audit.append("grant.retry_scheduled", actor=WORKER.object_id, request_id=record.id,
                                  data={"error": str(exc)[:300], "attempt": attempt,
                                        "in_seconds": round(delay.total_seconds(), 3)})
                self.queue.enqueue_at(self.clock.now() + delay, jobs.ACTIVATE_GRANT, record.id, attempt + 1,
                                      jid=job_id("grant", record.id, attempt + 1))
                return Outcome(record.id, "activating", f"retry {attempt + 1} scheduled")
            return self._fail(record, principal, role, scope, f"Graph unavailable after {attempt} attempts: {exc}")
        except GraphError as exc:
            return self._fail(record, principal, role, scope, f"{exc.code}: {exc.message or exc}")
        # The outcome is audited before the state moves on: if the process dies in between, the request is still
        # ACTIVATING, the reconciler resumes it and the retry adopts the assignment (audited again, adopted=true);
        # the other order could leave an ACTIVE grant whose activation the audit log never recorded.
        read_back = {"entra_ends_at": grant.entra_ends_at.isoformat()} if grant.entra_ends_at else {}
        self.audit.append("grant.activated", actor=WORKER.object_id, request_id=record.id, data={
            "mode": grant.mode.value, "generation": grant.generation, "starts_at": grant.starts_at.isoformat(),
            "ends_at": grant.ends_at.isoformat(), "assignment_id": grant.assignment_id, "adopted": grant.adopted,
            **read_back})
        new = self.store.update(record.id, lambda r: r.apply(
            Event.ACTIVATED, WORKER, self.clock.now(), reason=f"{grant.mode.value} assignment verified",
            grant=grant) if r.state is State.ACTIVATING else r)
        if new.state is not State.ACTIVE:
            return Outcome(record.id, new.state.value, "state changed during activation")
        self.schedule_revoke(new)
        self._after_activation(new)
        self.metrics.inc("grants", "adopted" if grant.adopted else "activated")
        approved_at = next((t.at for t in reversed(new.history)
                            if t.to_state == State.APPROVED.value), None)
        if approved_at is not None:
            self.metrics.observe("grant_latency", max(0.0, (self.clock.now() - approved_at).total_seconds()))
        return Outcome(record.id, "active", f"until {grant.ends_at.isoformat()}")

    def _wait_for_removal(self, record: RequestRecord, principal: str, role: str, scope: str, removing: str,
                          attempt: int) -> Outcome:
        """The same role's previous assignment is being removed by an ending grant: sharing it would lose it with
        that grant, so wait for the removal to finish and then make a new one."""
        if attempt >= REMOVAL_WAIT_ATTEMPTS:
            return self._fail(record, principal, role, scope, "the previous assignment of this role was not removed "
                                                              "in time; grant not made")
        self.audit.append("grant.waiting_for_removal", actor=WORKER.object_id, request_id=record.id,
                          data={"attempt": attempt, "removing": removing})
        self.queue.enqueue_at(self.clock.now() + self._backoff(min(attempt, 6) / 3), jobs.ACTIVATE_GRANT, record.id,
                              attempt + 1, jid=job_id("grant", record.id, attempt + 1))
        return Outcome(record.id, "activating", "waiting for the previous assignment to be removed")

    def _backoff(self, factor: float) -> timedelta:
        return min(20 * self.retry_base, self.retry_base * factor)

    def _itsm_up(self, record: RequestRecord, attempt: int) -> bool:
        assert self.wait_for is not None and record.request.ticket
        try:
            self.wait_for.get_ticket(record.request.ticket)
            return True
        except TicketingUnavailableError as exc:
            self.audit.append("grant.waiting_for_itsm", actor=WORKER.object_id, request_id=record.id,
                              data={"attempt": attempt, "error": str(exc)[:300]})
            return False

    @staticmethod
    def _other_end(ledger: object, request_id: str) -> float | None:
        holders = {k: v for k, v in getattr(ledger, "holders", {}).items() if k != request_id}
        return max(holders.values()) if holders else None

    def _assign(self, record: RequestRecord, principal: str, target: Assignable, start: datetime,
                end: datetime, duration: timedelta, existing: str | None, others: set[str],
                previous_end: float | None) -> Grant:
        justification = f"breakglass {record.id}: {record.request.justification}"[:500]
        ticket = record.request.ticket
        system = record.ticket_facts.system if record.ticket_facts else None
        if existing and others:
            # Another grant already holds this assignment: share it, lengthening it if this one ends later.
            assigner = self._assigner(target)
            if self.mode is GrantMode.PIM and previous_end is not None and end.timestamp() > previous_end:
                instance = assigner.find(target, principal)
                base = instance.start if instance and instance.start else start
                assigner.lengthen(target, principal, start=base, duration=end - base, justification=justification)
            generation = self.store.ledger(principal, target.ledger_role, target.scope).generation
            return self._grant(record, principal, target, mode=self.mode, generation=generation, starts_at=start,
                               ends_at=end, assignment_id=existing, adopted=True)
        if self.mode is GrantMode.PIM:
            return self._assign_pim(record, principal, target, start, end, duration, justification, ticket,
                                    system)
        return self._assign_direct(record, principal, target, start, end, duration, justification)

    @staticmethod
    def _grant(record: RequestRecord, principal: str, target: Assignable, **fields: object) -> Grant:
        role = "" if target.is_group else target.object_id
        return Grant(request_id=record.id, principal_id=principal, role_definition_id=role,
                     scope=target.scope, target=target, **fields)  # type: ignore[arg-type]

    def _assign_pim(self, record: RequestRecord, principal: str, target: Assignable, start: datetime,
                    end: datetime, duration: timedelta, justification: str, ticket: str | None,
                    system: str | None) -> Grant:
        adopted = False
        assigner = self._assigner(target)
        try:
            request_id: str | None = assigner.create(target, principal, start=start, duration=duration,
                                                     justification=justification, ticket=ticket, system=system)
        except RoleAssignmentExistsError:
            instance = assigner.find(target, principal)
            if instance is None and assigner.held_outside(target, principal):
                raise _NeedsReview(f"{principal} is already a {target.scope} of this group outside PIM") from None
            if instance is None:
                raise GraphUnavailableError(409, "RoleAssignmentExists",
                                            "assignment reported but not listed yet") from None
            if not self._ours(record, instance, end):
                ends = instance.end.isoformat() if instance.end else "never (permanent)"
                raise _NeedsReview(f"{principal} already holds this {_noun(target)} outside breakglass "
                                   f"(ends {ends})") from None
            adopted = True
            request_id = instance.schedule_id
        instance = assigner.find(target, principal)
        if instance is None:
            raise GraphUnavailableError(502, "VerificationFailed", "the assignment is not visible after creation")
        # The record keeps the whole second asked of Entra, never a later one: the scheduler ticks on whole seconds,
        # and Entra's read-back (provisioned when it processed the request, e.g. 09:06:30.319) would be revoked a
        # tick late. An adopted assignment was asked for by an earlier attempt: its whole second is the read-back's.
        effective_start, effective_end = start, end
        if instance.end is not None:
            effective_end = min(end, instance.end.replace(microsecond=0))
        if adopted and instance.start is not None:
            effective_start = min(start, instance.start.replace(microsecond=0))
        generation = self.store.ledger_assigned(principal, target.ledger_role, target.scope, instance.id,
                                                self.mode.value, new_assignment=True)
        return self._grant(record, principal, target, mode=GrantMode.PIM, generation=generation,
                           starts_at=effective_start, ends_at=effective_end, assignment_id=instance.id,
                           schedule_request_id=request_id, adopted=adopted,
                           entra_ends_at=instance.end if instance.end != effective_end else None)

    def _ours(self, record: RequestRecord, instance: Held, end: datetime) -> bool:
        """An existing assignment is ours to adopt only if it is the one our previous attempt created: it ends
        no later than this grant would (plus the time since that attempt) and is not permanent."""
        if instance.end is None:
            return False
        started = next((t.at for t in reversed(record.history) if t.event == Event.ACTIVATION_STARTED.value), None)
        if started is None:
            return False
        earliest = started - timedelta(seconds=5)
        if instance.start is not None and instance.start < earliest:
            return False
        duration = record.decision.granted_duration or record.request.duration
        return instance.end <= end + timedelta(seconds=5) and instance.end <= (instance.start or started) + \
            duration + timedelta(seconds=5)

    def _assign_direct(self, record: RequestRecord, principal: str, target: Assignable, start: datetime,
                       end: datetime, duration: timedelta, justification: str) -> Grant:
        # Roles keep their marker name (an intent written before groups existed still matches).
        marker = f"intent:direct:{principal}:{target.ledger_role}" + (f":{target.scope}" if target.is_group else "")
        intent = self.store.get_doc("intent", marker)
        assigner = self._assigner(target)
        # Look first: what exists before this attempt is ours only if an earlier attempt of this request made it.
        # (RoleAssignmentExists alone cannot tell, because the HTTP layer retries a create whose answer was lost.)
        found = assigner.find(target, principal)
        if found and (not intent or intent.get("request_id") != record.id):
            raise _NeedsReview(f"{principal} already holds this {_noun(target)} outside breakglass "
                               f"(a permanent direct {'membership' if target.is_group else 'assignment'})")
        adopted = found is not None
        if found is not None:
            assignment_id = found.id
        else:
            self.store.put_doc("intent", marker, {"request_id": record.id, "at": start.isoformat()}, ttl_s=86400)
            try:
                assignment_id = assigner.create(target, principal, start=start, duration=duration,
                                                justification=justification, ticket=None, system=None)
            except RoleAssignmentExistsError:
                # Absent a moment ago: our own create went through and its answer was lost.
                found = assigner.find(target, principal)
                if found is None:
                    raise GraphUnavailableError(409, "RoleAssignmentExists",
                                                "assignment reported but not listed") from None
                assignment_id, adopted = found.id, True
        listed = assigner.find(target, principal, assignment_id)
        if listed is None or listed.id != assignment_id:
            raise GraphUnavailableError(502, "VerificationFailed", "the assignment is not visible after creation")
        generation = self.store.ledger_assigned(principal, target.ledger_role, target.scope, assignment_id,
                                                self.mode.value, new_assignment=True)
        return self._grant(record, principal, target, mode=GrantMode.DIRECT, generation=generation,
                           starts_at=start, ends_at=end, assignment_id=assignment_id, adopted=adopted)

    def _fail(self, record: RequestRecord, principal: str, role: str, scope: str, reason: str,
              alert: str = "grant_failed") -> Outcome:
        # The hold is dropped without touching Graph: we never created (or do not own) an assignment here.
        self.store.ledger_release(principal, role, scope, record.id, generation=-1)
        new = self.store.update(record.id, lambda r: r.apply(Event.ACTIVATION_FAILED, WORKER, self.clock.now(),
                                                             reason=reason[:500], failure=reason[:500],
                                                             end_reason="failed")
                                if r.state in {State.APPROVED, State.ACTIVATING} else r)
        self.audit.append("grant.failed", actor=WORKER.object_id, request_id=record.id,
                          data={"reason": reason[:500], "alert": alert})
        self.metrics.inc("grants", alert)
        self.queue.enqueue(jobs.POST_RECEIPT, record.id, "failed", 1, jid=job_id("receipt", record.id, "failed", 1))
        self.queue.enqueue(jobs.UPDATE_CARDS, record.id, new.version, jid=job_id("cards", record.id, new.version))
        return Outcome(record.id, new.state.value, reason)

    def _after_activation(self, record: RequestRecord) -> None:
        self.queue.enqueue(jobs.UPDATE_CARDS, record.id, record.version,
                           jid=job_id("cards", record.id, record.version))
        self.queue.enqueue(jobs.POST_RECEIPT, record.id, "activated", 1,
                           jid=job_id("receipt", record.id, "activated", 1))
        # Runbook steps and the expiry warning (services.workflow.followup), once the assignment is verified.
        self.queue.enqueue(jobs.PLAN_STEPS, record.id, "granted", jid=job_id("plan", record.id, "granted"))

    def schedule_revoke(self, record: RequestRecord) -> None:
        assert record.grant is not None
        # The reason is left to its default ("expired"): one argument fewer keeps the job's RQ hash compact in Redis
        # (every value within 64 bytes), and every active grant keeps this job until it ends.
        self.queue.enqueue_at(record.grant.ends_at, jobs.REVOKE_GRANT, record.id, record.grant.generation,
                              jid=revoke_job_id(record.id, record.grant.generation))

    # --- extension ----------------------------------------------------------------------------------------------

    def apply_extension(self, extension: RequestRecord, attempt: int = 1) -> Outcome:
        original_id = extension.request.extends
        assert original_id is not None
        if extension.state is not State.APPROVED:
            return Outcome(extension.id, extension.state.value, "nothing to do")
        original = self.store.require(original_id)
        if original.state is not State.ACTIVE or original.grant is None:
            return self._extension_failed(extension, original_id, f"the grant it extends ({original_id}) ended "
                                                                  "before the extension could be applied")
        added = extension.decision.granted_duration or extension.request.duration
        grant = original.grant
        new_end = grant.ends_at + added
        self.audit.append("grant.extension_requested_in_graph", actor=WORKER.object_id, request_id=original.id,
                          data={"extension": extension.id, "new_end": new_end.isoformat()})
        target = grant.assignable
        try:
            for member in original.member_grants:  # a bundle's members are extended together
                if member.mode is GrantMode.PIM:
                    target = member.assignable
                    assigner = self._assigner(target, member.mode)
                    instance = assigner.find(target, member.principal_id)
                    # Graph takes whole-second durations: from a start with a fraction (the read-back's), the end
                    # would miss the whole second asked by that fraction; the start moves back under a second.
                    base = (instance.start if instance and instance.start else member.starts_at).replace(
                        microsecond=0)
                    assigner.lengthen(target, member.principal_id, start=base, duration=new_end - base,
                                      justification=f"breakglass {original.id} extended by {extension.id}")
        except GraphError as exc:
            if isinstance(exc, GraphUnavailableError | GraphThrottledError) and attempt < TRANSIENT_RETRIES:
                self.queue.enqueue_at(self.clock.now() + self.retry_base * attempt, jobs.ACTIVATE_GRANT,
                                      extension.id, attempt + 1, jid=job_id("grant", extension.id, attempt + 1))
                return Outcome(extension.id, "approved", "retry scheduled")
            return self._extension_failed(extension, original.id, str(exc)[:300])
        for member in original.member_grants:
            self.store.ledger_hold(member.principal_id, member.assignable.ledger_role, member.scope, original.id,
                                   new_end)
        # PIM's adminUpdate keeps the start it read back and ends on the whole second asked: no read-back end differs.
        extended_grant = grant.model_copy(update={"ends_at": new_end, "entra_ends_at": None})
        extended_members = tuple(g.model_copy(update={"ends_at": new_end, "entra_ends_at": None})
                                 for g in original.grants)
        updated = self.store.update(original.id, lambda r: r.apply(
            Event.EXTENDED, WORKER, self.clock.now(), reason=f"extended by {format_duration(added)} ({extension.id})",
            grant=extended_grant, grants=extended_members) if r.state is State.ACTIVE else r)
        self.store.update(extension.id, lambda r: r.apply(Event.APPLIED, WORKER, self.clock.now(),
                                                          reason=f"added to {original.id}")
                          if r.state is State.APPROVED else r)
        if updated.state is State.ACTIVE:
            self.schedule_revoke(updated)  # same job id: the pending revoke moves to the new end
            self.audit.append("grant.extended", actor=WORKER.object_id, request_id=original.id, data={
                "extension": extension.id, "ends_at": new_end.isoformat(), "added_seconds": int(added.total_seconds())})
            self.queue.enqueue(jobs.UPDATE_CARDS, original.id, updated.version,
                               jid=job_id("cards", original.id, updated.version))
            self.queue.enqueue(jobs.POST_RECEIPT, original.id, "extended", 1,
                               jid=job_id("receipt", original.id, f"extended-{extension.id}", 1))
        return Outcome(extension.id, "applied", f"{original.id} now ends {new_end.isoformat()}")

    def _extension_failed(self, extension: RequestRecord, original_id: str, reason: str) -> Outcome:
        """APPROVED -> FAILED, never silently: audited on the extension (and named on the grant it extends), and
        the requester told why, like any grant that failed."""
        failed = self.store.update(extension.id, lambda r: r.apply(
            Event.ACTIVATION_FAILED, WORKER, self.clock.now(), reason=reason, failure=reason,
            end_reason="failed") if r.state is State.APPROVED else r)
        if failed.state is not State.FAILED:
            return Outcome(extension.id, failed.state.value, "nothing to do")
        self.audit.append("grant.extension_failed", actor=WORKER.object_id, request_id=extension.id,
                          data={"extends": original_id, "reason": reason})
        self.metrics.inc("grants", "extension_failed")
        self.queue.enqueue(jobs.NOTIFY_DECISION, extension.id, jid=job_id("decision", extension.id))
        self.queue.enqueue(jobs.UPDATE_CARDS, extension.id, failed.version,
                           jid=job_id("cards", extension.id, failed.version))
        return Outcome(extension.id, "failed", reason)

    # --- revocation -----------------------------------------------------------------------------------------

    def revoke(self, request_id: str, generation: int, reason: str = "expired", attempt: int = 1) -> Outcome:
        record = self.store.get(request_id)
        if record is None:
            return Outcome(request_id, "missing", "no such request")
        if record.state.terminal or record.grant is None:
            return Outcome(request_id, record.state.value, "nothing to revoke")
        grant = record.grant
        if grant.generation != generation:
            self.audit.append("grant.revoke_skipped", actor=WORKER.object_id, request_id=request_id,
                              data={"job_generation": generation, "grant_generation": grant.generation})
            return Outcome(request_id, record.state.value, "stale generation")
        now = self.clock.now()
        if reason == "expired" and record.state is State.ACTIVE and now < grant.ends_at:
            early = (grant.ends_at - now).total_seconds()
            if early > EARLY_FIRE_WAIT_S:
                # The grant was extended after this job was queued; the moved schedule will fire later.
                self.schedule_revoke(record)
                return Outcome(request_id, "active", "not yet due")
            time.sleep(max(0.0, (self.clock.to_real(grant.ends_at) - self.clock.to_real(now)).total_seconds()))
        if record.state is State.ACTIVE:
            end_reason = "expired" if reason == "expired" else reason
            record = self.store.update(request_id, lambda r: r.apply(
                Event.REVOCATION_STARTED, WORKER, self.clock.now(), reason=reason, end_reason=end_reason)
                if r.state is State.ACTIVE else r)
        if record.state is not State.REVOKING:
            return Outcome(request_id, record.state.value, "nothing to revoke")
        self.audit.append("grant.revoke_requested", actor=WORKER.object_id, request_id=request_id,
                          data={"reason": reason, "generation": generation, "attempt": attempt,
                                "assignment_id": grant.assignment_id})
        # Let go of the assignment first, atomically: either another grant still holds it (nothing to remove), or
        # the ledger is marked "removing" before Graph is called, so a grant arriving meanwhile waits for the
        # removal instead of sharing an assignment that is about to disappear.
        removed, remaining = False, set()
        for member in record.member_grants:  # a bundle's members end together; one grant otherwise
            # A member released by an earlier attempt is stale now (nothing to remove), unless its removal is the one
            # still pending.
            release = self.store.ledger_release(member.principal_id, member.assignable.ledger_role, member.scope,
                                                request_id, member.generation)
            remaining |= set(release.remaining)
            if not release.remove_assignment:
                continue
            try:
                self._remove(member)
                removed = True
            except ActiveDurationTooShortError:
                retry_at = grant.starts_at + self.pim_min_active + timedelta(seconds=2)
                self.audit.append("grant.revoke_deferred", actor=WORKER.object_id, request_id=request_id, data={
                    "reason": "PIM refuses removal within 5 minutes of activation (ActiveDurationTooShort)",
                    "retry_at": retry_at.isoformat()})
                self.queue.enqueue_at(retry_at, jobs.REVOKE_GRANT, request_id, generation, reason, attempt + 1,
                                      jid=job_id("revoke", request_id, generation, "deferred"))
                return Outcome(request_id, "revoking", f"deferred to {retry_at.isoformat()} (PIM 5-minute floor)")
            except GraphError as exc:
                # Never sooner than Graph's last Retry-After: the job-level retry is a request like any other.
                delay = round(max(self._backoff(2 ** min(attempt, 6) / 3).total_seconds(), exc.retry_after or 0), 3)
                self.metrics.inc("job_retries", "revoke_grant")
                self.audit.append("grant.revoke_retry", actor=WORKER.object_id, request_id=request_id,
                                  data={"error": str(exc)[:300], "attempt": attempt, "in_seconds": delay})
                if attempt >= TRANSIENT_RETRIES:
                    self.queue.enqueue(jobs.POST_RECEIPT, request_id, "revoke_failing", attempt,
                                       jid=job_id("receipt", request_id, "revoke_failing", attempt))
                # Two alternating ids: re-using this job's own id would let RQ write this run's arguments (and
                # attempt number) back over the retry when it finishes, so the back-off and alert never advance.
                self.queue.enqueue_at(self.clock.now() + timedelta(seconds=delay), jobs.REVOKE_GRANT, request_id,
                                      generation, reason, attempt + 1,
                                      jid=revoke_retry_job_id(request_id, generation, attempt + 1))
                return Outcome(request_id, "revoking", f"retry in {delay}s")
            self.store.ledger_cleared(member.principal_id, member.assignable.ledger_role, member.scope,
                                      member.generation)
        event = Event.EXPIRED if reason == "expired" else Event.REVOKED
        name = "grant.expired" if event is Event.EXPIRED else "grant.revoked"
        # Audited before the state moves on (see activate): a crash in between leaves the request REVOKING, and
        # the reconciler finishes it.
        self.audit.append(name, actor=WORKER.object_id, request_id=request_id, data={
            "reason": reason, "removed_in_graph": removed, "still_covered_by": sorted(remaining),
            "late_seconds": round((self.clock.now() - grant.ends_at).total_seconds(), 3),
            **({"members": [g.assignable.ledger_role for g in record.grants]} if record.grants else {})})
        final = self.store.update(request_id, lambda r: r.apply(event, WORKER, self.clock.now(), reason=reason)
                                  if r.state is State.REVOKING else r)
        self.metrics.inc("revocations", reason)
        if reason == "expired":
            self.metrics.observe("revocation_lateness", max(0.0, (self.clock.now() - grant.ends_at).total_seconds()))
        self.queue.enqueue(jobs.UPDATE_CARDS, request_id, final.version, jid=job_id("cards", request_id,
                                                                                   final.version))
        self.queue.enqueue(jobs.POST_RECEIPT, request_id, "ended", 1, jid=job_id("receipt", request_id, "ended", 1))
        if final.state.terminal:  # sessions, runbook steps and activity collection, after the removal (followup)
            self.queue.enqueue(jobs.PLAN_STEPS, request_id, "ended", jid=job_id("plan", request_id, "ended"))
        return Outcome(request_id, final.state.value, "removed" if removed else "still covered by another grant")

    def _remove(self, grant: Grant) -> None:
        """Remove and verify. 'Does not exist' is success: Entra's own expiry (PIM) or someone else got there
        first."""
        target = grant.assignable
        assigner = self._assigner(target, grant.mode)
        try:
            assigner.remove(target, grant.principal_id, grant.assignment_id,
                            justification=f"breakglass {grant.request_id} ended")
        except RoleAssignmentDoesNotExistError:
            pass
        # A direct role is verified by its id (another assignment of the same role is not ours); PIM rows and group
        # links are one per principal and target, so any that is left is ours.
        if assigner.find(target, grant.principal_id, grant.assignment_id) is not None:
            raise GraphUnavailableError(502, "VerificationFailed", "assignment still listed after removal")


def _noun(target: Assignable) -> str:
    return f"group {target.scope}ship" if target.is_group else "role"


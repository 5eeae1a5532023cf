"""The reconciler: the safety net that makes expiry a guarantee rather than a scheduled hope, and that nothing
approved is stranded.

Each tick costs in proportion to what is due, not to how many grants exist: every query is a range over a
sorted index (expiry times, approval deadlines, working-state deadlines), and only the grants ending within the
next two intervals are checked for a missing scheduled revoke.

Working states (approved awaiting the grant or the extension, activating, revoking) have deadlines (the store keeps
them in an index, set on every move into or within such a state). Past one, the reconciler looks at every job that
may carry the request on (STEPS): if one is queued, scheduled or running, it looks again a period later; if not,
it re-drives the step under its deterministic job id and audits `job.redriven`. The job decides what is left to do
from the record, the ledger and Graph's read-back, so a re-drive never makes a second assignment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from policies.document import Entitlement, PolicyDocument
from policies.lifecycle import Event, State
from policies.model import Actor, GrantMode
from policies.record import RequestRecord
from services.clock import Clock
from services.metrics import DomainMetrics
from services.ports import Graph, GraphError
from services.state import queue as jobs
from services.state.audit import AuditLog
from services.state.policy_source import PolicySource
from services.state.queue import JobQueue, JobState, job_id
from services.state.store import RequestStore
from services.workflow.activation import revoke_job_id, revoke_retry_job_id
from services.workflow.assigners import for_target
from services.workflow.notify import Notifier

if TYPE_CHECKING:
    from services.workflow.followup import FollowUps

log = logging.getLogger(__name__)
ACTOR = Actor.system("reconciler")
# The most attempts a grant job makes (Graph retries, waits for the ticketing system or for a removal): the ids its
# retries are scheduled under run up to this.
MAX_ACTIVATION_ATTEMPTS = 45


@dataclass(frozen=True)
class Step:
    """One row of the deadline table: the jobs that carry a request out of a working state, and the job that
    re-drives it (function, arguments, deterministic id, ahead of the queue or not)."""

    name: str
    jobs: Callable[[RequestRecord], list[str]]
    redrive: Callable[[RequestRecord], tuple[str, tuple[object, ...], str, bool]]
    # Jobs that carry the step only once they are due, not while they wait on the schedule (a deactivation must
    # not wait for the revoke scheduled at the grant's end).
    when_due: Callable[[RequestRecord], set[str]] = lambda _: set()

    def in_hand(self, record: RequestRecord, states: dict[str, JobState]) -> bool:
        later = self.when_due(record)
        return any(state.in_hand and not (jid in later and state is JobState.SCHEDULED)
                   for jid, state in states.items())


def revoke_jobs(request_id: str, generation: int) -> list[str]:
    """The job ids a started revoke of this grant may be running or waiting under (besides the one scheduled at
    expiry): deactivation, the reconciler's own, a retry after an error, a deferral past PIM's 5-minute floor."""
    return [revoke_retry_job_id(request_id, generation, 0), revoke_retry_job_id(request_id, generation, 1),
            *(job_id("revoke", request_id, generation, s) for s in ("now", "reconcile", "deferred"))]


def _grant_jobs(record: RequestRecord) -> list[str]:
    return [job_id("grant", record.id), *(job_id("grant", record.id, n) for n in range(2, MAX_ACTIVATION_ATTEMPTS + 1))]


def _revoke_step_jobs(record: RequestRecord) -> list[str]:
    assert record.grant is not None
    return [revoke_job_id(record.id, record.grant.generation), *revoke_jobs(record.id, record.grant.generation)]


def _expiry_revoke(record: RequestRecord) -> set[str]:
    assert record.grant is not None
    return {revoke_job_id(record.id, record.grant.generation)}


GRANT = Step("grant", _grant_jobs, lambda r: (jobs.ACTIVATE_GRANT, (r.id,), job_id("grant", r.id), False))
REVOKE = Step("revoke", _revoke_step_jobs, lambda r: (
    jobs.REVOKE_GRANT, (r.id, r.grant.generation, r.end_reason or "revoked"),  # type: ignore[union-attr]
    job_id("revoke", r.id, r.grant.generation, "reconcile"), True), _expiry_revoke)  # type: ignore[union-attr]
# Follow-up steps (session revocation, runbook steps, activity passes, the expiry warning) carry no request state:
# each has its own deadline in the record and its own index; `FollowUps.tick` is their row (see services.workflow.
# followup), run by every tick below.
STEPS: dict[State, Step] = {
    State.APPROVED: GRANT,  # a grant awaiting its job; an extension awaiting its application (same job)
    State.ACTIVATING: GRANT,
    State.REVOKING: REVOKE,
}


@dataclass
class TickReport:
    overdue_revokes: list[str] = field(default_factory=list)
    rescheduled_revokes: list[str] = field(default_factory=list)
    escalated: list[str] = field(default_factory=list)
    expired_approvals: list[str] = field(default_factory=list)
    resumed_activations: list[str] = field(default_factory=list)
    resumed_revocations: list[str] = field(default_factory=list)
    redriven_jobs: list[str] = field(default_factory=list)
    started_steps: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not any(vars(self).values())


class Reconciler:
    def __init__(self, *, store: RequestStore, audit: AuditLog, queue: JobQueue, notifier: Notifier | None,
                 clock: Clock, interval: timedelta = timedelta(seconds=30), followups: FollowUps | None = None):
        self.store = store
        self.followups = followups
        self.audit = audit
        self.queue = queue
        self.notifier = notifier
        self.clock = clock
        self.interval = interval
        self.last_run_key = f"{store.keys.p}:reconcile:last_run"
        self.metrics = DomainMetrics(store.redis, store.keys.p)
        self._indexed = False

    def _job_pending(self, jid: str) -> bool:
        return self.queue.pending(jid)

    def tick(self) -> TickReport:
        now = self.clock.now()
        report = TickReport()
        self._overdue(now, report)
        self._upcoming(now, report)
        self._approvals(now, report)
        self._working(now, report)
        if self.followups is not None:
            started, redriven = self.followups.tick(now)
            report.started_steps += started
            report.redriven_jobs += redriven
        self.store.redis.set(self.last_run_key, now.timestamp())
        if not report.empty():
            self.audit.append("reconciler.acted", actor=ACTOR.object_id, data=vars(report))
        return report

    def last_run(self) -> datetime | None:
        raw = self.store.redis.get(self.last_run_key)
        return datetime.fromtimestamp(float(raw), UTC) if raw else None

    def _overdue(self, now: datetime, report: TickReport) -> None:
        for request_id, _ in self.store.due_expiries(now):
            record = self.store.get(request_id)
            if record is None or record.grant is None or not record.state.holds_access:
                continue
            generation = record.grant.generation
            # A revoke that is queued, running, or waiting out its back-off (Graph down, PIM's 5-minute floor) is
            # in hand: starting another each tick would ignore the back-off and never let its attempts add up.
            if any(self._job_pending(j) for j in (revoke_job_id(request_id, generation),
                                                  *revoke_jobs(request_id, generation))):
                continue
            late = now - record.grant.ends_at
            # Take over from a scheduled revoke the scheduler never fired; if it fires later it is a no-op.
            self.queue.scheduler.cancel(revoke_job_id(request_id, generation))
            self.queue.enqueue(jobs.REVOKE_GRANT, request_id, generation,
                               record.end_reason or "expired" if record.state is State.REVOKING else "expired",
                               jid=job_id("revoke", request_id, generation, "reconcile"), at_front=True)
            report.overdue_revokes.append(request_id)
            # The scheduled revoke did not run in time (scheduler or worker down): say so every time.
            self._alert("Revocation was overdue; the reconciler revoked it", request_id,
                        f"{max(0.0, late.total_seconds()):.1f} s past expiry; is the scheduler running?")

    def _upcoming(self, now: datetime, report: TickReport) -> None:
        horizon = now + 2 * self.interval
        rows = self.store.redis.zrangebyscore(self.store.keys.expiry, now.timestamp(), horizon.timestamp())
        for raw in rows:
            request_id = raw.decode()
            record = self.store.get(request_id)
            if record is None or record.grant is None or record.state is not State.ACTIVE:
                continue
            jid = revoke_job_id(request_id, record.grant.generation)
            if self._job_pending(jid):  # scheduled and its job still in Redis (a bare schedule entry fires nothing)
                continue
            self.queue.enqueue_at(record.grant.ends_at, jobs.REVOKE_GRANT, request_id, record.grant.generation,
                                  jid=jid)  # reason: the default, "expired" (see GrantService.schedule_revoke)
            report.rescheduled_revokes.append(request_id)
            self._alert("Scheduled revocation was missing; re-created", request_id,
                        f"job {jid} ends {record.grant.ends_at.isoformat()}")

    def _approvals(self, now: datetime, report: TickReport) -> None:
        for request_id in self.store.due_approvals(now):
            record = self.store.get(request_id)
            if record is None or record.state is not State.PENDING_APPROVAL:
                continue
            deadline = record.approval_deadline
            if deadline is not None and now >= deadline:
                new = self.store.update(request_id, lambda r: r.apply(
                    Event.APPROVAL_TIMED_OUT, ACTOR, now, reason="no decision within the approval window",
                    end_reason="approval window closed") if r.state is State.PENDING_APPROVAL else r)
                if new.state is State.APPROVAL_EXPIRED:
                    report.expired_approvals.append(request_id)
                    self.audit.append("request.expired", actor=ACTOR.object_id, request_id=request_id,
                                      data={"deadline": deadline.isoformat()})
                    self.queue.enqueue(jobs.UPDATE_CARDS, request_id, new.version,
                                       jid=job_id("cards", request_id, new.version))
                    self.queue.enqueue(jobs.NOTIFY_DECISION, request_id, jid=job_id("decision", request_id))
            elif record.escalated_at is None:
                new = self.store.update(request_id, lambda r: r.apply(
                    Event.ESCALATED, ACTOR, now, reason="no decision yet; backup approvers notified",
                    escalated_at=now) if r.state is State.PENDING_APPROVAL and r.escalated_at is None else r)
                if new.escalated_at is not None and new.version != record.version:
                    report.escalated.append(request_id)
                    self.audit.append("request.escalated", actor=ACTOR.object_id, request_id=request_id)
                    self.queue.enqueue(jobs.NOTIFY_APPROVERS, request_id, True,
                                       jid=job_id("notify-backups", request_id))

    def _working(self, now: datetime, report: TickReport) -> None:
        if not self._indexed:
            self.store.index_working()
            self._indexed = True
        due = self.store.due_work(now)
        if not due:
            return
        records = {r.id: r for r in self.store.get_many(due)}
        steps: dict[str, tuple[RequestRecord, Step]] = {}
        for request_id in due:
            record = records.get(request_id)
            step = STEPS.get(record.state) if record is not None else None
            if record is None or step is None or (record.state is State.REVOKING and record.grant is None):
                self.store.drop_work(request_id)
                continue
            steps[request_id] = (record, step)
        # Most due requests are simply waiting their turn: read every step's first job in one go, and look
        # further (retries, deferrals) only for the others.
        first = self.queue.look([step.jobs(record)[0] for record, step in steps.values()])
        for record, step in steps.values():
            ids = step.jobs(record)
            states = {ids[0]: first[ids[0]]}
            if not step.in_hand(record, states):
                states.update(self.queue.look(ids[1:]))
                if not step.in_hand(record, states):
                    self._redrive(record, step, states, report)
        self.store.next_work_check(list(steps), now + self.interval)

    def _redrive(self, record: RequestRecord, step: Step, states: dict[str, JobState], report: TickReport) -> None:
        # The record was read before its jobs: a job that ran meanwhile moved the record on (and a job just popped
        # by a live worker is claimed by now). Only a request that is still exactly as read, with still no job in
        # hand, is re-driven.
        fresh = self.store.get(record.id)
        if fresh is None or fresh.version != record.version:
            return
        states = self.queue.look(list(states))
        if step.in_hand(fresh, states):
            return
        func, args, jid, at_front = step.redrive(record)
        # Push back exactly what a gone worker took (its own arguments and attempt); else start the step anew.
        orphan = next((j for j, state in states.items() if state is JobState.ORPHANED), None)
        if orphan is not None:
            jid, args = orphan, ()
        found = states.get(jid) or self.queue.look([jid])[jid]
        if not self.queue.redrive(func, *args, jid=jid, at_front=at_front, state=found):
            return
        name = "extension" if record.request.extends else step.name
        self.audit.append("job.redriven", actor=ACTOR.object_id, request_id=record.id, data={
            "job": jid, "step": name, "state": record.state.value, "found": found.value,
            "since": record.updated_at.isoformat()})
        self.metrics.inc("redriven", name)
        report.redriven_jobs.append(jid)
        (report.resumed_revocations if step is REVOKE else report.resumed_activations).append(record.id)

    def _alert(self, title: str, request_id: str, detail: str) -> None:
        self.audit.append("reconciler.alert", actor=ACTOR.object_id, request_id=request_id,
                          data={"title": title, "detail": detail})
        if self.notifier is not None:
            try:
                self.notifier.alert(title, [("Request", request_id), ("Detail", detail)], "warning")
            except Exception:
                log.exception("reconciler alert failed")


class ForeignAssignmentScan:
    """Finds assignments of managed roles that breakglass did not make; reports them or, per settings, removes
    them (never for denylisted accounts such as the emergency access accounts)."""

    def __init__(self, *, store: RequestStore, audit: AuditLog, graph: Graph, policies: PolicySource,
                 notifier: Notifier | None, mode: GrantMode, remove: bool = False):
        self.store = store
        self.audit = audit
        self.graph = graph
        self.policies = policies
        self.notifier = notifier
        self.mode = mode
        self.remove = remove

    def scan(self) -> list[dict[str, str]]:
        policy = self.policies.current()
        found: list[dict[str, str]] = []
        for ent in policy.entitlements:
            if ent.kind == "group" or ent.role_template_id is None:
                found += self._scan_group(policy, ent)
                continue
            role_id: str = ent.role_template_id
            try:
                assignments = [(i.id, i.principal_id, i.directory_scope_id, "pim" if i.end else "permanent")
                               for i in self.graph.instances(role_id=role_id)]
                if self.mode is GrantMode.DIRECT:
                    assignments += [(a.id, a.principal_id, a.directory_scope_id, "direct")
                                    for a in self.graph.direct_assignments(role_id=role_id)]
            except GraphError as exc:
                self.audit.append("reconciler.scan_failed", actor=ACTOR.object_id,
                                  data={"role": ent.display_name, "error": str(exc)[:300]})
                continue
            for assignment_id, principal, scope, kind in assignments:
                ledger = self.store.ledger(principal, role_id, scope)
                if ledger.assignment_id == assignment_id:
                    continue
                seen_key = f"{assignment_id}"
                if self.store.get_doc("foreign-seen", seen_key):
                    continue
                self.store.put_doc("foreign-seen", seen_key, {"at": datetime.now(UTC).isoformat()}, ttl_s=86400)
                item = {"assignment_id": assignment_id, "principal": principal, "role": ent.display_name,
                        "scope": scope, "kind": kind}
                found.append(item)
                self.audit.append("assignment.foreign_detected", actor=ACTOR.object_id, data=item)
                action = "reported"
                if (self.remove and kind != "permanent" and not policy.denylist.matches(principal, "")
                        and not policy.emergency_accounts.matches(principal, "")):
                    action = self._remove(assignment_id, principal, role_id, scope, kind)
                item["action"] = action
                if self.notifier is not None:
                    self.notifier.alert("Role assigned outside breakglass", list(item.items()), "warning")
        return found

    def _scan_group(self, policy: PolicyDocument, ent: Entitlement) -> list[dict[str, str]]:
        """Members (or owners) of a just-in-time group that breakglass does not hold in its ledger. A group granted
        just in time should have nobody else in it; any other member is reported. Only a PIM time-bound one is
        removed (with `remove`): a standing member of a group may be there on purpose, a person decides."""
        target = ent.assignable()
        assigner = for_target(self.graph, target, self.mode)
        try:
            held = assigner.listing(target)
        except GraphError as exc:
            self.audit.append("reconciler.scan_failed", actor=ACTOR.object_id,
                              data={"role": ent.display_name, "group": target.object_id, "error": str(exc)[:300]})
            return []
        found: list[dict[str, str]] = []
        for row in held:
            ledger = self.store.ledger(row.principal_id, target.ledger_role, target.scope)
            if ledger.assignment_id == row.id:
                continue
            if self.store.get_doc("foreign-seen", row.id):
                continue
            self.store.put_doc("foreign-seen", row.id, {"at": datetime.now(UTC).isoformat()}, ttl_s=86400)
            kind = "pim" if self.mode is GrantMode.PIM and row.time_bound else (
                "permanent" if self.mode is GrantMode.PIM else "direct")
            item = {"assignment_id": row.id, "principal": row.principal_id, "role": target.describe(),
                    "group": target.object_id, "access": target.scope, "kind": kind}
            found.append(item)
            self.audit.append("assignment.foreign_detected", actor=ACTOR.object_id, data=item)
            action = "reported"
            if (self.remove and kind == "pim" and not policy.denylist.matches(row.principal_id, "")
                    and not policy.emergency_accounts.matches(row.principal_id, "")):
                try:
                    assigner.remove(target, row.principal_id, row.id,
                                    justification="breakglass: membership made outside breakglass")
                    self.audit.append("assignment.foreign_removed", actor=ACTOR.object_id,
                                      data={"assignment_id": row.id, "principal": row.principal_id,
                                            "role": target.describe()})
                    action = "removed"
                except GraphError as exc:
                    self.audit.append("assignment.foreign_remove_failed", actor=ACTOR.object_id,
                                      data={"assignment_id": row.id, "error": str(exc)[:300]})
                    action = f"removal failed: {exc.code}"
            item["action"] = action
            if self.notifier is not None:
                self.notifier.alert("Group access granted outside breakglass", list(item.items()), "warning")
        return found

    def _remove(self, assignment_id: str, principal: str, role: str, scope: str, kind: str) -> str:
        try:
            if kind == "direct":
                self.graph.delete_direct(assignment_id)
            else:
                self.graph.remove_pim(principal_id=principal, role_id=role, scope=scope,
                                      justification="breakglass: assignment made outside breakglass")
        except GraphError as exc:
            self.audit.append("assignment.foreign_remove_failed", actor=ACTOR.object_id,
                              data={"assignment_id": assignment_id, "error": str(exc)[:300]})
            return f"removal failed: {exc.code}"
        self.audit.append("assignment.foreign_removed", actor=ACTOR.object_id,
                          data={"assignment_id": assignment_id, "principal": principal, "role": role})
        return "removed"

"""Follow-up steps around a grant: what runs after the role is confirmed granted or confirmed gone, never inside
the assign/remove path.

Two planning jobs, queued by the grant job once the assignment is verified (`granted`) and by the revoke job once
the removal is verified (`ended`), write the steps onto the request record (policy `on_end`, `runbooks`,
`warn_before`, see policies.closing):

- granted: the holder's expiry warning (`warn`, due `warn_before` before the end), the `after_grant` runbook steps
  (now) and the `before_revoke` ones (due shortly before the end: a revocation never waits for them);
- ended: the holder's session revocation (`sessions`, from `on_end`), the `after_revoke` runbook steps, the activity
  passes (`activity-0` now, then +5, +15 and +60 minutes: Entra's logs arrive late), and the end notice in the
  approvals channel (`ended-notice`, once the sessions and the first pass are known, or after NOTICE_WAIT).

Each step is its own RQ job with a deterministic id (`step_<request>_<key>_<attempt>`) and audits its intent and its
outcome. A step's record carries its deadline, indexed in the same compare-and-set (RequestStore._index_steps): the
reconciler starts scheduled steps when they fall due and re-drives queued ones whose job is in no queue, schedule or
live worker, exactly as for the working states (reconcile.STEPS). Nothing here grants access, and no step can delay
or block a revocation: the steps run on the ordinary queue, after the access jobs.

A step is at-least-once: a worker that dies after a webhook answered and before the outcome was recorded makes the
re-driven job deliver again, with the same `X-Breakglass-Delivery` id for the receiver to drop the duplicate.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from policies.closing import AttachedStep, Closing, StepKind, StepStatus, closing_for, closing_for_members
from policies.durations import format_duration
from policies.lifecycle import State
from policies.model import Actor, GrantMode
from policies.record import RequestRecord
from policies.tier0 import tier0_name
from services.clock import Clock
from services.metrics import DomainMetrics
from services.ports import (
    Graph,
    GraphError,
    GraphThrottledError,
    GraphUnavailableError,
    IdentityLogs,
    RunbookHookError,
    RunbookHooks,
)
from services.state import queue as jobs
from services.state.audit import AuditLog
from services.state.policy_source import PolicySource
from services.state.queue import JobQueue, job_id
from services.state.store import RequestStore
from services.workflow.activity import Activity, LogRead, collect_activity
from services.workflow.notify import Notifier

log = logging.getLogger(__name__)
ACTOR = Actor.system("followup")
NOTICE_WAIT = timedelta(minutes=2)
ACTIVITY_PASSES = (timedelta(0), timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=60))
ACTIVITY_MARGIN = timedelta(minutes=5)  # actions started just before the end are logged a little later
TRANSIENT_ATTEMPTS = 3  # Graph still unavailable or throttled after the HTTP retries: this many job attempts
KEEP_S = 30 * 86400
SESSIONS_CAVEAT = (
    "Refresh tokens and browser sessions are invalid from {at} (Entra may take a few minutes to apply it); access "
    "tokens already issued stay valid until they expire (60-90 minutes, about 75 by default) unless the resource "
    "enforces Continuous Access Evaluation (Exchange Online, SharePoint Online and Teams react within about 15 "
    "minutes).")


def step_job_id(request_id: str, key: str, attempt: int) -> str:
    return job_id("step", request_id, key, attempt)


def plan_job_id(request_id: str, phase: str) -> str:
    return job_id("plan", request_id, phase)


@dataclass(frozen=True)
class WebhookConfig:
    """Where each webhook endpoint named in the policy points, and the secret deliveries are signed with."""

    endpoints: dict[str, str] = field(default_factory=dict)
    secret: bytes | None = None


@dataclass(frozen=True)
class Result:
    status: str  # done | failed | refused | skipped | retry | reschedule
    detail: str = ""
    at: datetime | None = None  # retry or reschedule time


def ended_at(record: RequestRecord) -> datetime:
    return next((t.at for t in reversed(record.history) if t.to_state in {State.EXPIRED.value, State.REVOKED.value}),
                record.updated_at)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over "<timestamp>.<body>": the receiver checks the timestamp is recent and
    the MAC, so a captured delivery cannot be replayed later or altered."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class FollowUps:
    def __init__(self, *, store: RequestStore, audit: AuditLog, queue: JobQueue, policies: PolicySource,
                 clock: Clock, identity_logs: Callable[[], IdentityLogs], graph: Callable[[], Graph],
                 notifier: Notifier, hooks: Callable[[], RunbookHooks], webhooks: WebhookConfig,
                 ticketing: bool, mode: GrantMode = GrantMode.PIM, interval: timedelta = timedelta(seconds=30),
                 retry_base: timedelta = timedelta(seconds=15)):
        self.store = store
        self.audit = audit
        self.queue = queue
        self.policies = policies
        self.clock = clock
        self._identity_logs = identity_logs
        self._graph = graph
        self.notifier = notifier
        self._hooks = hooks
        self.webhooks = webhooks
        self.ticketing = ticketing
        self.mode = mode
        self.interval = interval
        self.retry_base = retry_base
        self.grace = store.work_grace
        self.metrics = DomainMetrics(store.redis, store.keys.p)

    # --- planning ------------------------------------------------------------------------------------------------

    def _closing(self, record: RequestRecord) -> Closing:
        policy = self.policies.current()
        if record.decision.is_bundle:
            return closing_for_members(policy, [(m.entitlement, m.lane) for m in record.decision.members])
        return closing_for(policy, record.request.entitlement, record.decision.lane)

    def plan(self, request_id: str, phase: str) -> list[str]:
        """Write the phase's steps onto the record (once) and queue those due now; returns the planned keys."""
        record = self.store.get(request_id)
        marker = f"plan-{phase}"
        if record is None or record.step(marker) is not None:
            return []
        now = self.clock.now()
        closing = self._closing(record)
        planned: list[str] = []

        def change(r: RequestRecord) -> RequestRecord:
            planned.clear()
            if r.step(marker) is not None:
                return r
            steps = self._granted(r, closing, now) if phase == "granted" else self._ended(r, closing, now)
            out = r
            for step in steps:
                out = out.with_step(step, now)
                planned.append(step.key)
            done = self._new(marker, "plan", f"{phase} steps planned", now, now, status="done")
            return out.with_step(done.model_copy(update={"finished_at": now, "detail": ", ".join(planned)}), now)

        new = self.store.update(request_id, change)
        if not planned and new.step(marker) is None:
            return []
        self.audit.append("followup.planned", actor=ACTOR.object_id, request_id=request_id,
                          data={"phase": phase, "steps": planned})
        for key in planned:
            step = new.step(key)
            if step is not None and step.status == "queued":
                self.queue.enqueue(jobs.RUN_STEP, request_id, key, step.attempt,
                                   jid=step_job_id(request_id, key, step.attempt))
        if planned:
            self._update_cards(new)
        return planned

    def _new(self, key: str, kind: StepKind, label: str, due: datetime, now: datetime,
             status: str | None = None) -> StepStatus:
        state = status or ("queued" if due <= now else "scheduled")
        deadline = now + self.grace if state == "queued" else due
        return StepStatus(key=key, kind=kind, label=label, status=state, due_at=due, deadline=deadline)  # type: ignore[arg-type]

    def _granted(self, record: RequestRecord, closing: Closing, now: datetime) -> list[StepStatus]:
        grant = record.grant
        if grant is None:
            return []
        steps = []
        if closing.warns(grant.ends_at - grant.starts_at):
            steps.append(self._new("warn", "warn", f"Expiry warning {format_duration(closing.warn_before)} before the "
                                                   "end", grant.ends_at - closing.warn_before, now))
        for attached in closing.steps("after_grant"):
            steps.append(self._runbook_step("after_grant", attached, now, now))
        lead = max(timedelta(seconds=60), 2 * self.interval)
        for attached in closing.steps("before_revoke"):
            steps.append(self._runbook_step("before_revoke", attached, max(now, grant.ends_at - lead), now))
        return [s for s in steps if record.step(s.key) is None]

    def _runbook_step(self, phase: str, attached: AttachedStep, due: datetime, now: datetime) -> StepStatus:
        return self._new(f"rb-{phase}-{attached.name}", "runbook", attached.step.label(attached.name), due, now)

    def _ended(self, record: RequestRecord, closing: Closing, now: datetime) -> list[StepStatus]:
        if record.grant is None:
            return []
        end = ended_at(record)
        steps: list[StepStatus] = []
        for step in record.steps:  # what the granted phase left waiting
            if step.status != "scheduled":
                continue
            if step.kind == "warn":
                steps.append(step.model_copy(update={"status": "skipped", "finished_at": now,
                                                     "detail": "the grant ended before the warning was due"}))
            elif step.kind == "runbook" and step.key.startswith("rb-before_revoke-"):
                steps.append(step.model_copy(update={"status": "queued", "due_at": now, "deadline": now + self.grace,
                                                     "detail": "the revocation started before it was due; ran after"}))
        if "revoke_sessions" in closing.on_end:
            who = record.target_name or record.request.target
            steps.append(self._new("sessions", "sessions", f"Revoke the sign-in sessions of {who}", now, now))
        for attached in closing.steps("after_revoke"):
            steps.append(self._runbook_step("after_revoke", attached, now, now))
        for n, offset in enumerate(ACTIVITY_PASSES):
            when = "at the end" if not offset else f"{format_duration(offset)} after the end"
            label = "Collect what was done while elevated " + (f"({when}, final)" if n == len(ACTIVITY_PASSES) - 1
                                                               else f"({when})")
            steps.append(self._new(f"activity-{n}", "activity", label, max(now, end + offset), now))
        steps.append(self._new("ended-notice", "ended_notice", "Tell the approvals channel the grant ended",
                               now + NOTICE_WAIT, now))
        return [s for s in steps if record.step(s.key) is None or record.step(s.key) != s]

    # --- running -------------------------------------------------------------------------------------------------

    def run(self, request_id: str, key: str, attempt: int = 1) -> dict[str, str]:
        record = self.store.get(request_id)
        step = record.step(key) if record is not None else None
        if record is None or step is None or not step.pending or step.attempt != attempt:
            return {"step": key, "status": "nothing to do"}
        if step.status == "scheduled":  # run early by hand or by a stale job: it starts when it falls due
            return {"step": key, "status": "not due yet"}
        handler: dict[str, Callable[[RequestRecord, StepStatus], Result]] = {
            "sessions": self._sessions, "runbook": self._runbook, "activity": self._activity, "warn": self._warn,
            "ended_notice": self._ended_notice}
        result = handler[step.kind](record, step)
        self._finish(record.id, step, result)
        return {"step": key, "status": result.status, "detail": result.detail}

    def _finish(self, request_id: str, step: StepStatus, result: Result) -> None:
        now = self.clock.now()
        if result.status == "retry":
            at = result.at or now + self.retry_base
            update = {"status": "queued", "attempt": step.attempt + 1, "due_at": at, "deadline": at + self.grace,
                      "detail": result.detail}
        elif result.status == "reschedule":
            at = result.at or now
            update = {"status": "scheduled", "due_at": at, "deadline": at, "detail": result.detail}
        else:
            update = {"status": result.status, "detail": result.detail[:300], "finished_at": now}
        changed = step.model_copy(update=update)

        def change(r: RequestRecord) -> RequestRecord:
            current = r.step(step.key)
            if current is None or current.attempt != step.attempt or not current.pending:
                return r
            return r.with_step(changed, now)

        new = self.store.update(request_id, change)
        if new.step(step.key) != changed:
            return  # someone else recorded this attempt's outcome first
        if result.status == "retry":
            self.queue.enqueue_at(changed.due_at, jobs.RUN_STEP, request_id, step.key, changed.attempt,
                                  jid=step_job_id(request_id, step.key, changed.attempt))
            return
        if result.status == "reschedule":
            return
        self._update_cards(new)
        if step.kind in {"sessions", "runbook"} and self.ticketing and new.request.ticket:
            self.queue.enqueue(jobs.POST_RECEIPT, request_id, f"step-{step.key}", 1,
                               jid=job_id("receipt", request_id, f"step-{step.key}", 1))
        if result.status == "failed" and step.kind in {"sessions", "runbook"}:
            self._alert(new, changed)
        if step.key in {"sessions", "activity-0"}:
            self._nudge_notice(new)

    def _update_cards(self, record: RequestRecord) -> None:
        if record.cards:
            self.queue.enqueue(jobs.UPDATE_CARDS, record.id, record.version,
                               jid=job_id("cards", record.id, record.version))

    def _alert(self, record: RequestRecord, step: StepStatus) -> None:
        try:
            self.notifier.alert(f"Follow-up step failed: {step.label}", [
                ("Request", record.id), (record.access_label, record.access_name),
                ("Holder", record.target_name or record.request.target), ("Step", step.label),
                ("Error", step.detail or "unknown")], "critical")
        except Exception:  # the outcome is recorded and audited; a lost alert must not undo that
            log.exception("follow-up alert failed", extra={"request_id": record.id})

    def _nudge_notice(self, record: RequestRecord) -> None:
        """The end notice goes out as soon as what it reports is known (sessions, the first activity pass)."""
        notice = record.step("ended-notice")
        if notice is None or notice.status != "scheduled":
            return
        if any(s is not None and s.pending for s in (record.step("sessions"), record.step("activity-0"))):
            return
        self._start(record, notice)

    def _start(self, record: RequestRecord, step: StepStatus) -> bool:
        """scheduled -> queued, then its job: the step's time has come."""
        now = self.clock.now()

        def change(r: RequestRecord) -> RequestRecord:
            current = r.step(step.key)
            if current is None or current.status != "scheduled":
                return r
            return r.with_step(current.model_copy(update={"status": "queued", "deadline": now + self.grace}), now)

        new = self.store.update(record.id, change)
        current = new.step(step.key)
        if current is None or current.status != "queued":
            return False
        self.queue.enqueue(jobs.RUN_STEP, record.id, step.key, current.attempt,
                           jid=step_job_id(record.id, step.key, current.attempt))
        return True

    # --- the steps -----------------------------------------------------------------------------------------------

    def _transient(self, step: StepStatus, exc: GraphError, limit: int = TRANSIENT_ATTEMPTS) -> bool:
        return isinstance(exc, GraphUnavailableError | GraphThrottledError) and step.attempt < limit

    def _retry_at(self, step: StepStatus, retry_after: float | None = None) -> datetime:
        delay = min(20 * self.retry_base, self.retry_base * 2 ** (step.attempt - 1))
        return self.clock.now() + max(delay, timedelta(seconds=retry_after or 0))

    def _sessions(self, record: RequestRecord, step: StepStatus) -> Result:
        user = record.request.target
        self.audit.append("grant.sessions_revoke_requested", actor=ACTOR.object_id, request_id=record.id,
                          data={"user": user, "attempt": step.attempt, "why": "on_end: revoke_sessions"})
        try:
            self._identity_logs().revoke_sign_in_sessions(user)
        except GraphError as exc:
            error = f"{exc.code}: {exc.message or exc}"[:300]
            if self._transient(step, exc):
                self.audit.append("grant.sessions_revoke_retry", actor=ACTOR.object_id, request_id=record.id,
                                  data={"user": user, "attempt": step.attempt, "error": error})
                return Result("retry", f"retrying: {error}", self._retry_at(step, exc.retry_after))
            self.audit.append("grant.sessions_revoke_failed", actor=ACTOR.object_id, request_id=record.id,
                              data={"user": user, "status": exc.status, "code": exc.code, "error": error})
            self.metrics.inc("job_failures", "sessions")
            return Result("failed", f"not revoked: Graph {exc.status} {error}")
        at = self.clock.now()
        self.audit.append("grant.sessions_revoked", actor=ACTOR.object_id, request_id=record.id, data={
            "user": user, "at": at.isoformat(), "caveat": SESSIONS_CAVEAT.format(at=f"{at:%H:%M:%S} UTC")})
        return Result("done", f"revoked at {at:%H:%M:%S} UTC")

    def _runbook(self, record: RequestRecord, step: StepStatus) -> Result:
        _, phase, name = step.key.split("-", 2)
        policy = self.policies.current()
        runbook = policy.runbooks.get(name)
        if runbook is None:
            return Result("skipped", f"runbook step {name!r} is no longer in the policy")
        what = {"step": name, "phase": phase, "kind": runbook.kind, "attempt": step.attempt}
        if runbook.kind == "revoke_sessions":
            return self._runbook_sessions(record, step, name, runbook.subject or "grantee", what)
        return self._webhook(record, step, name, runbook.endpoint or "", runbook.timeout, runbook.attempts, phase,
                             what)

    def _runbook_sessions(self, record: RequestRecord, step: StepStatus, name: str, subject: str,
                          what: dict[str, Any]) -> Result:
        if subject == "affected_account":
            if record.affected is None:
                self.audit.append("runbook.step_skipped", actor=ACTOR.object_id, request_id=record.id,
                                  data={**what, "reason": "no affected account was named"})
                return Result("skipped", "no affected account was named on the ticket or the form")
            user, upn, who = record.affected.object_id, record.affected.upn, record.affected.name
        else:
            user, upn, who = record.request.target, record.target_upn, record.target_name
        what = {**what, "subject": subject, "user": user}
        self.audit.append("runbook.step_requested", actor=ACTOR.object_id, request_id=record.id, data=what)
        refused = self.policies.current().denylist.matches(user, upn)
        if refused:
            reason = f"{who or user} is on the denylist ({refused}): breakglass never acts on that account"
        else:
            try:
                held = self._tier0_roles(user)
            except GraphError as exc:
                if self._transient(step, exc):
                    return Result("retry", f"could not check the account's roles yet: {exc.code}",
                                  self._retry_at(step, exc.retry_after))
                held, reason = [], ""
                self.audit.append("runbook.step_failed", actor=ACTOR.object_id, request_id=record.id,
                                  data={**what, "error": f"{exc.code}: {exc.message}"[:300]})
                return Result("failed", f"could not check the account's roles: Graph {exc.status} {exc.code}")
            reason = (f"{who or user} holds {', '.join(held)} (tier-0): a runbook step never ends a tier-0 holder's "
                      "sessions") if held else ""
        if reason:
            self.audit.append("runbook.step_refused", actor=ACTOR.object_id, request_id=record.id,
                              data={**what, "reason": reason})
            return Result("refused", reason)
        try:
            self._identity_logs().revoke_sign_in_sessions(user)
        except GraphError as exc:
            error = f"{exc.code}: {exc.message or exc}"[:300]
            if self._transient(step, exc):
                self.audit.append("runbook.step_retry", actor=ACTOR.object_id, request_id=record.id,
                                  data={**what, "error": error})
                return Result("retry", f"retrying: {error}", self._retry_at(step, exc.retry_after))
            self.audit.append("runbook.step_failed", actor=ACTOR.object_id, request_id=record.id,
                              data={**what, "status": exc.status, "error": error})
            return Result("failed", f"sessions of {who or user} not revoked: Graph {exc.status} {error}")
        at = self.clock.now()
        self.audit.append("runbook.step_completed", actor=ACTOR.object_id, request_id=record.id,
                          data={**what, "at": at.isoformat(), "outcome": "sessions revoked"})
        return Result("done", f"sessions of {who or user} revoked at {at:%H:%M:%S} UTC")

    def _tier0_roles(self, user: str) -> list[str]:
        graph = self._graph()
        roles = {i.role_definition_id for i in graph.instances(principal_id=user)}
        if self.mode is GrantMode.DIRECT:
            roles |= {a.role_definition_id for a in graph.direct_assignments(principal_id=user)}
        return sorted({name for r in roles if (name := tier0_name(r))})

    def _webhook(self, record: RequestRecord, step: StepStatus, name: str, endpoint: str, timeout: timedelta,
                 attempts: int, phase: str, what: dict[str, Any]) -> Result:
        what = {**what, "endpoint": endpoint}
        url = self.webhooks.endpoints.get(endpoint)
        problem = ("" if url else f"endpoint {endpoint!r} is not configured (BREAKGLASS_RUNBOOK_WEBHOOKS)") or (
            "" if self.webhooks.secret else "BREAKGLASS_RUNBOOK_WEBHOOK_SECRET is not set; deliveries are signed")
        self.audit.append("runbook.step_requested", actor=ACTOR.object_id, request_id=record.id, data=what)
        if problem:
            self.audit.append("runbook.step_failed", actor=ACTOR.object_id, request_id=record.id,
                              data={**what, "error": problem})
            return Result("failed", problem)
        assert url is not None and self.webhooks.secret is not None
        body = json.dumps(self.webhook_body(record, name, phase), sort_keys=True, separators=(",", ":")).encode()
        timestamp = str(int(self.clock.now().timestamp()))
        headers = {"Content-Type": "application/json", "X-Breakglass-Delivery": f"{record.id}:{step.key}",
                   "X-Breakglass-Attempt": str(step.attempt), "X-Breakglass-Timestamp": timestamp,
                   "X-Breakglass-Signature": sign(self.webhooks.secret, timestamp, body)}
        try:
            status = self._hooks().deliver(url, body, headers, timeout.total_seconds())
        except RunbookHookError as exc:
            error = str(exc)[:300]
            if exc.retryable and step.attempt < attempts:
                self.audit.append("runbook.step_retry", actor=ACTOR.object_id, request_id=record.id,
                                  data={**what, "error": error})
                return Result("retry", f"attempt {step.attempt} of {attempts}: {error}", self._retry_at(step))
            self.audit.append("runbook.step_failed", actor=ACTOR.object_id, request_id=record.id,
                              data={**what, "error": error, "attempts": step.attempt})
            return Result("failed", f"not delivered after {step.attempt} attempt(s): {error}")
        self.audit.append("runbook.step_completed", actor=ACTOR.object_id, request_id=record.id,
                          data={**what, "status": status, "outcome": "delivered"})
        return Result("done", f"delivered (HTTP {status})")

    @staticmethod
    def webhook_body(record: RequestRecord, name: str, phase: str) -> dict[str, Any]:
        """What a runbook receives: ids and times only (no justification: people's words stay in breakglass)."""
        g = record.grant
        affected = record.affected
        return {
            "schema": "breakglass.runbook/1", "request_id": record.id, "step": name, "phase": phase,
            "role": record.decision.entitlement_name, "role_definition_id": record.decision.role_definition_id,
            **({"group": {"id": t.object_id, "access": t.scope}}
               if (t := record.decision.target) is not None and t.is_group else {}),
            "target": {"object_id": record.request.target, "upn": record.target_upn, "name": record.target_name},
            "affected_account": None if affected is None else {"object_id": affected.object_id, "upn": affected.upn,
                                                               "name": affected.name, "source": affected.source},
            "ticket": record.request.ticket, "state": record.state.value, "end_reason": record.end_reason,
            "starts_at": g.starts_at.isoformat() if g else None, "ends_at": g.ends_at.isoformat() if g else None,
            # A bundle: every member's role (the top-level role_definition_id is empty for a bundle).
            # A group member has no role id: it names its group, as a single group grant does.
            **({"members": [{"role": m.entitlement_name, "role_definition_id": m.role_definition_id,
                             **({"group": {"id": t.object_id, "access": t.scope}}
                                if (t := m.target) is not None and t.is_group else {})}
                            for m in record.decision.members]} if record.decision.is_bundle else {})}

    def _activity(self, record: RequestRecord, step: StepStatus) -> Result:
        grant = record.grant
        if grant is None:
            return Result("skipped", "no grant")
        n = int(step.key.split("-", 1)[1])
        final = n == len(ACTIVITY_PASSES) - 1
        since, until = grant.starts_at, ended_at(record) + ACTIVITY_MARGIN
        read = collect_activity(self._identity_logs(), grant.principal_id, since, until)
        previous = self.store.get_doc("activity", record.id) or {}
        kept = Activity.from_json(previous["activity"]) if previous.get("activity") else None
        # A log that could not be read this pass (throttled, down) keeps what an earlier pass read.
        if kept is not None:
            read = Activity(read.user_id, since, until, _better(read.directory, kept.directory),
                            _better(read.sign_ins, kept.sign_ins))
        digest = read.digest()
        digests = dict(previous.get("pass_digests") or {})
        changed = n == 0 or final or digests.get(str(n - 1)) != digest
        digests[str(n)] = digest
        self.store.put_doc("activity", record.id, {
            "activity": read.to_json(), "pass": n, "final": final, "digest": digest, "pass_digests": digests,
            "collected_at": self.clock.now().isoformat()}, ttl_s=KEEP_S)
        counts = {"directory_actions": len(read.directory.rows), "sign_ins": len(read.sign_ins.rows)}
        self.audit.append("grant.activity_collected", actor=ACTOR.object_id, request_id=record.id, data={
            "pass": n, "final": final, "digest": digest, **counts, "new": read.new_since(kept),
            "directory_status": read.directory.status, "sign_in_status": read.sign_ins.status,
            "since": since.isoformat(), "until": until.isoformat()})
        if changed and self.ticketing and record.request.ticket:
            self.queue.enqueue(jobs.POST_RECEIPT, record.id, f"activity-{n}", 1,
                               jid=job_id("receipt", record.id, f"activity-{n}", 1))
        notes = [log.note for log in (read.directory, read.sign_ins) if log.status != "ok"]
        detail = (f"{counts['directory_actions']} directory actions, {counts['sign_ins']} sign-ins"
                  + (" (final)" if final else " so far") + ("; " + " ".join(notes) if notes else ""))
        return Result("done", detail)

    def _warn(self, record: RequestRecord, step: StepStatus) -> Result:
        grant = record.grant
        now = self.clock.now()
        if record.state is not State.ACTIVE or grant is None or grant.ends_at <= now:
            return Result("skipped", "the grant ended before the warning was due")
        closing = self._closing(record)
        left = grant.ends_at - now
        if left > closing.warn_before + self.interval:  # extended since: warn before the new end
            return Result("reschedule", "the grant was extended", grant.ends_at - closing.warn_before)
        sent = self.notifier.expiry_warning(record.id, left)
        self.audit.append("grant.expiry_warned", actor=ACTOR.object_id, request_id=record.id, data={
            "to": record.request.target, "ends_at": grant.ends_at.isoformat(), "sent": sent,
            "seconds_left": int(left.total_seconds())})
        if not sent:
            return Result("failed", "the holder could not be reached in Teams")
        return Result("done", f"sent to {record.target_name or record.request.target} at {now:%H:%M:%S} UTC")

    def _ended_notice(self, record: RequestRecord, step: StepStatus) -> Result:
        facts = self.end_facts(record)
        posted = self.notifier.ended_notice(record.id, facts)
        self.audit.append("grant.end_announced", actor=ACTOR.object_id, request_id=record.id,
                          data={"posted": posted, **dict(facts)})
        return Result("done" if posted else "failed", "posted to the approvals channel" if posted
                      else "no approvals channel to post to")

    def end_facts(self, record: RequestRecord) -> list[tuple[str, str]]:
        """Who held what, from when to when, how it ended, whether sessions were revoked, what was collected."""
        grant = record.grant
        end = ended_at(record)
        facts = [("Holder", record.target_name or record.request.target),
                 (record.access_label, record.access_name)]
        if grant is not None:
            facts.append(("From", f"{grant.starts_at:%Y-%m-%d %H:%M:%S} UTC"))
        facts += [("To", f"{end:%Y-%m-%d %H:%M:%S} UTC"), ("Ended by", self.how_it_ended(record))]
        sessions = record.step("sessions")
        if sessions is None:
            facts.append(("Sign-in sessions", "not revoked (the policy does not ask for it)"))
        elif sessions.status == "done":
            facts.append(("Sign-in sessions", f"{sessions.detail}. " + SESSIONS_CAVEAT.format(
                at=sessions.detail.removeprefix("revoked at "))))
        else:
            facts.append(("Sign-in sessions", f"{sessions.status}: {sessions.detail or 'not done yet'}"))
        doc = self.store.get_doc("activity", record.id)
        if doc and doc.get("activity"):
            activity = Activity.from_json(doc["activity"])
            count = (f"{len(activity.directory.rows)}" if activity.directory.status == "ok"
                     else f"unknown: {activity.directory.note}")
            facts.append(("Directory actions collected so far", count + ("" if doc.get("final") else
                                                                          "; Entra's logs arrive minutes late, the "
                                                                          "ticket gets the final list")))
        else:
            facts.append(("Directory actions collected so far", "none yet; collection continues for an hour"))
        facts.append(("Request", record.id))
        return facts

    def how_it_ended(self, record: RequestRecord) -> str:
        if record.end_reason == "deactivated":
            started = next((t for t in reversed(record.history) if t.to_state == State.REVOKING.value), None)
            who = started.actor if started else ""
            names = {record.request.requester: record.requester_name, record.request.target: record.target_name}
            return f"deactivated by {names.get(who) or who}" if who else "deactivated"
        if record.state is State.EXPIRED:
            late = any(e.event == "reconciler.alert" and "overdue" in str(e.data.get("title", "")).lower()
                       for e in self.audit.for_request(record.id))
            return "the reconciler, past expiry (the scheduled revocation was late)" if late else "expiry"
        return record.end_reason or record.state.value

    # --- the reconciler's part -------------------------------------------------------------------------------

    def tick(self, now: datetime) -> tuple[list[str], list[str]]:
        """Start the steps whose time has come; re-drive queued steps (and plans) whose job was lost. Returns
        (started, re-driven job ids)."""
        due = self.store.due_steps(now)
        if not due:
            return [], []
        records = {r.id: r for r in self.store.get_many({rid for rid, _ in due})}
        started: list[str] = []
        redriven: list[str] = []
        later: list[tuple[str, str]] = []
        for rid, key in due:
            record = records.get(rid)
            if record is None:
                self.store.drop_step(rid, key)
                continue
            if key.startswith("plan-"):
                if record.step(key) is not None:
                    self.store.drop_step(rid, key)
                    continue
                phase = key.removeprefix("plan-")
                if self._redrive(record, jobs.PLAN_STEPS, (rid, phase), plan_job_id(rid, phase), "plan"):
                    redriven.append(plan_job_id(rid, phase))
                later.append((rid, key))
                continue
            step = record.step(key)
            if step is None or not step.pending:
                self.store.drop_step(rid, key)
                continue
            if step.status == "scheduled":
                if self._start(record, step):
                    started.append(f"{rid}:{key}")
                continue
            jid = step_job_id(rid, key, step.attempt)
            if self._redrive(record, jobs.RUN_STEP, (rid, key, step.attempt), jid, step.kind):
                redriven.append(jid)
            later.append((rid, key))
        self.store.next_step_check(later, now + self.interval)
        return started, redriven

    def _redrive(self, record: RequestRecord, func: str, args: tuple[object, ...], jid: str, name: str) -> bool:
        state = self.queue.look([jid])[jid]
        if state.in_hand or not self.queue.redrive(func, *args, jid=jid, state=state):
            return False
        self.audit.append("job.redriven", actor="system:reconciler", request_id=record.id, data={
            "job": jid, "step": name, "state": record.state.value, "found": state.value})
        self.metrics.inc("redriven", name)
        return True


def _better(new: LogRead, old: LogRead) -> LogRead:
    if new.status != "ok" and old.status == "ok":
        return LogRead("ok", old.rows, f"kept from an earlier pass; this pass: {new.note}")
    return new

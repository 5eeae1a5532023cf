"""The request workflow behind every chat message, card click and ticket webhook.

Entry points hand over who acted (their Entra object id, never a name from card data) and what they asked;
everything else is reloaded here: the policy as it is now, the directory facts, the stored request.
State changes are compare-and-set; slow work (Graph, notifications) is enqueued, never done inline.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from policies.approval import ApprovalRefusedError, apply_vote, authorise_vote, current_approvers
from policies.closing import AffectedAccount
from policies.document import Entitlement, PolicyDocument
from policies.engine import eligible_bundles, eligible_entitlements, evaluate, ticket_kind
from policies.lifecycle import Event, InvalidTransitionError, State
from policies.model import (
    Actor,
    Decision,
    Facts,
    GrantRequest,
    Outcome,
    Principal,
    RiskFact,
    TicketFacts,
    Verdict,
    join_reasons,
)
from policies.provenance import Provenance
from policies.record import RequestRecord
from policies.text import clean_input, one_line
from services.clock import Clock
from services.errors import ConflictError, ServiceError
from services.metrics import DomainMetrics
from services.ports import (
    Directory,
    DirectoryError,
    GraphError,
    GraphForbiddenError,
    GraphThrottledError,
    IdentityLogs,
    LicenceRequiredError,
    Ticketing,
    TicketingUnavailableError,
)
from services.state import queue as jobs
from services.state.audit import AuditLog
from services.state.commit import CONFLICT, LOG_MOVED, Committer
from services.state.limiter import PerUserLimit
from services.state.policy_source import PolicySource
from services.state.queue import JobQueue, job_id
from services.state.store import RequestStore, decode, new_request_id

log = logging.getLogger(__name__)

MAX_MINUTES = 24 * 60
MAX_VOTE_ATTEMPTS = 20
# What anybody who may not see a request is told, word for word what an id that does not exist gets: the answer
# must not tell a stranger that the request exists.
NO_SUCH_REQUEST = "There is no such request."
TOO_MANY_MISSES = "Too many requests you cannot see or that do not exist; try again in a minute."
# Lookups of requests a person may not see (or that do not exist), per person: a burst, then a steady trickle.
VIEW_MISS_BURST = 20
VIEW_MISS_PER_MINUTE = 20
# An extension must be asked at least this long before the end: applying it takes a worker job and a Graph update
# (about a second, more under load or Graph throttling), and one that lands after the revoke can only fail.
EXTEND_MARGIN = timedelta(seconds=30)
UPN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Identity Protection answers 1 request per second per tenant with no Retry-After (§8.5): a person's risk is read
# once a minute at most; one that could not be read is asked again sooner.
RISK_TTL_S = 60
RISK_UNKNOWN_TTL_S = 15

# Failing rules the requester can fix on the form; anything else becomes a recorded denial.
FIELD_OF_RULE = {
    "justification.length": "justification",
    "justification.specific": "justification",
    "ticket.reference": "ticket",
    "ticket.exists": "ticket",
    "ticket.open": "ticket",
    "ticket.involved": "ticket",
    "lane.incident": "ticket",
    "duration.max": "duration",
    "duration.positive": "duration",
    "target.for_others": "target",
    "target.eligible": "target",
}


class AccessError(ServiceError):
    """The actor may not do this; `message` is safe to show them."""

    def __init__(self, message: str, code: str = "forbidden"):
        self.message = message
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class Who:
    """The person acting, as Teams identified them (object id from `from.aadObjectId`)."""

    object_id: str
    name: str = ""
    teams_id: str | None = None

    @property
    def actor(self) -> Actor:
        return Actor(object_id=self.object_id.lower(), name=self.name, teams_id=self.teams_id)


@dataclass(frozen=True)
class IntakeInput:
    entitlement: str | None
    duration_minutes: int | None
    justification: str
    ticket: str
    target: str  # UPN, or "" for the requester
    # API and tests only (never read from card data): an exact duration, e.g. seconds-long grants in tests.
    duration_seconds: int | None = None
    # The account a security incident is about (UPN), for runbook steps; "" lets the ticket's field name it.
    affected: str = ""

    def __post_init__(self) -> None:
        # Intake: whoever builds the form (a card submit, the ITSM webhook, the CLI), what people typed is cleaned
        # here, once, before it is decided on, stored, audited or sent anywhere.
        object.__setattr__(self, "justification", clean_input(self.justification, 4000))
        object.__setattr__(self, "ticket", one_line(self.ticket, 40).upper())
        object.__setattr__(self, "target", one_line(self.target, 256))
        object.__setattr__(self, "affected", one_line(self.affected, 256))
        if self.entitlement is not None:
            object.__setattr__(self, "entitlement", one_line(self.entitlement, 120) or None)

    @staticmethod
    def from_values(values: dict[str, Any]) -> IntakeInput:
        """Parse submitted form values; types are coerced, never trusted."""
        minutes: int | None
        try:
            minutes = int(one_line(values.get("duration", "")))
        except ValueError:
            minutes = None
        return IntakeInput(entitlement=str(values.get("entitlement") or "") or None, duration_minutes=minutes,
                           justification=str(values.get("justification") or ""),
                           ticket=str(values.get("ticket") or ""), target=str(values.get("target") or ""),
                           affected=str(values.get("affected") or ""))


@dataclass
class SubmitResult:
    form: IntakeInput
    record: RequestRecord | None = None
    field_errors: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.record is not None


@dataclass
class ActionResult:
    record: RequestRecord
    changed: bool
    message: str
    code: str = "ok"


class AccessService:
    def __init__(self, *, store: RequestStore, audit: AuditLog, queue: JobQueue, policies: PolicySource,
                 directory: Directory, ticketing: Ticketing | None, clock: Clock,
                 identity_logs: IdentityLogs | None = None):
        self.identity_logs = identity_logs
        self.store = store
        self.audit = audit
        self.queue = queue
        self.policies = policies
        self.directory = directory
        self.ticketing = ticketing
        self.clock = clock
        self.metrics = DomainMetrics(store.redis, store.keys.p)
        self.committer = Committer(store.redis, events_key=audit.k_events, sealed_key=audit.k_sealed)
        self.view_misses = PerUserLimit(store.redis, store.keys.p, "view-miss", VIEW_MISS_PER_MINUTE,
                                        VIEW_MISS_BURST)

    # --- facts ----------------------------------------------------------------------------------------------

    def principal(self, key: str) -> Principal:
        try:
            found = self.directory.principal(key)
        except DirectoryError as exc:
            raise AccessError("The directory is not reachable right now; please try again in a minute.",
                              "directory_unavailable") from exc
        if found is None:
            raise AccessError(f"{key} was not found in the directory.", "unknown_principal")
        return found

    def eligible(self, requester: Principal) -> list[Entitlement]:
        return eligible_entitlements(self.policies.current(), requester)

    def ticket_facts(self, number: str) -> TicketFacts | None:
        if not number or self.ticketing is None:
            return None
        try:
            return self.ticketing.get_ticket(number)
        except TicketingUnavailableError as exc:
            log.warning("ticket lookup failed", extra={"ticket": number, "error": str(exc)})
            self.audit.append("ticket.lookup_failed", actor="system:itsm", data={"ticket": number,
                                                                                  "error": str(exc)[:300]})
            return None

    def risk(self, principal: Principal) -> RiskFact:
        """The person's identity risk (Entra ID Protection), cached briefly; `unknown`, with why, when it cannot
        be read. Only read when the policy has a `risk:` section."""
        if self.identity_logs is None:
            return RiskFact(level="unknown", detail="identity risk is not read in this process")
        cached = self.store.get_doc("risk", principal.object_id)
        if cached is not None:
            return RiskFact.model_validate(cached)
        ttl = RISK_TTL_S
        try:
            fact = RiskFact.from_row(self.identity_logs.risky_user(principal.object_id))
        except LicenceRequiredError:
            fact, ttl = RiskFact(level="unknown", detail="no Entra ID P2 licence (Graph 403)"), RISK_TTL_S
        except GraphForbiddenError:
            fact, ttl = RiskFact(level="unknown", detail="IdentityRiskyUser.Read.All not granted (Graph 403)"), \
                RISK_UNKNOWN_TTL_S
        except GraphThrottledError:
            fact, ttl = RiskFact(level="unknown", detail="Identity Protection throttled the read"), RISK_UNKNOWN_TTL_S
        except GraphError as exc:
            fact, ttl = RiskFact(level="unknown", detail=f"Graph unavailable ({exc.code})"), RISK_UNKNOWN_TTL_S
        self.store.put_doc("risk", principal.object_id, fact.model_dump(mode="json"), ttl_s=ttl)
        return fact

    def _facts(self, policy: Any, requester: Principal, target: Principal, **more: Any) -> Facts:
        risks: dict[str, RiskFact] = {}
        if policy.risk is not None:
            risks["requester_risk"] = self.risk(requester)
            risks["target_risk"] = risks["requester_risk"] if target.object_id == requester.object_id \
                else self.risk(target)
        return Facts(requester=requester, target=target, **more, **risks)

    # --- submit ---------------------------------------------------------------------------------------------

    def submit(self, who: Who, form: IntakeInput, *, draft_id: str, source: str = "teams",
               requester: Principal | None = None, provenance: Provenance | None = None) -> SubmitResult:
        policy = self.policies.current()
        now = self.clock.now()
        requester = requester or self.principal(who.object_id)
        result = SubmitResult(form=form)
        eligible = {e.id for e in eligible_entitlements(policy, requester)} | set(eligible_bundles(policy, requester))
        if not form.entitlement:
            result.field_errors["entitlement"] = "Choose a role."
        elif form.entitlement not in eligible:
            result.field_errors["entitlement"] = "You are not eligible for this role."
        if form.duration_seconds is None and (form.duration_minutes is None
                                              or not 1 <= form.duration_minutes <= MAX_MINUTES):
            result.field_errors["duration"] = "Give a duration in minutes (1 to 1440)."
        if not form.justification:
            result.field_errors["justification"] = "Say what you will do and why."
        target = requester
        if form.target and form.target.lower() not in requester.identifiers():
            if not UPN.match(form.target):
                result.field_errors["target"] = "Give the user's sign-in name (name@domain), or leave it empty."
            else:
                found = self.directory.principal(form.target)
                if found is None:
                    result.field_errors["target"] = f"{form.target} was not found in the directory."
                else:
                    target = found
        affected = self._affected_from_form(form, policy, result)
        if result.field_errors:
            self._audit_rejected(who, form, result.field_errors, draft_id)
            return result
        assert form.entitlement is not None
        duration = (timedelta(seconds=form.duration_seconds) if form.duration_seconds is not None
                    else timedelta(minutes=form.duration_minutes or 0))
        ticket_ref = form.ticket or None
        request = GrantRequest(id=new_request_id(), requester=requester.object_id, target=target.object_id,
                               entitlement=form.entitlement, duration=duration,
                               justification=form.justification, ticket=ticket_ref, created_at=now,
                               source=source)  # type: ignore[arg-type]
        ticket = self.ticket_facts(ticket_ref) if ticket_ref and ticket_kind(policy, ticket_ref) else None
        affected = affected or self._affected_from_ticket(ticket)
        facts = self._facts(policy, requester, target, ticket=ticket,
                            active_grants=tuple(self.store.open_grants_of(target.object_id)))
        decision = evaluate(request, facts, now, policy)
        if decision.outcome is Outcome.DENY and self._fixable(decision):
            for rule in decision.rules:
                if rule.blocks and rule.rule in FIELD_OF_RULE:
                    result.field_errors.setdefault(FIELD_OF_RULE[rule.rule], rule.reason)
            result.problems = decision.reasons
            self._audit_rejected(who, form, result.field_errors, draft_id, decision)
            return result
        result.record = self._create(who, request, decision, requester, target, ticket, draft_id, provenance,
                                     affected)
        return result

    def _affected_from_form(self, form: IntakeInput, policy: PolicyDocument,
                            result: SubmitResult) -> AffectedAccount | None:
        """The affected account typed on the form: a directory user breakglass may act on (never a denylisted one:
        a runbook step would refuse it anyway, so the form says so at once)."""
        if not form.affected:
            return None
        if not UPN.match(form.affected):
            result.field_errors["affected"] = ("Give the affected account's sign-in name (name@domain), or leave it "
                                               "empty.")
            return None
        found = self.directory.principal(form.affected)
        if found is None:
            result.field_errors["affected"] = f"{form.affected} was not found in the directory."
            return None
        if policy.denylist.matches(found.object_id, found.upn):
            result.field_errors["affected"] = (f"{form.affected} is on the denylist: breakglass never acts on that "
                                               "account.")
            return None
        return AffectedAccount(object_id=found.object_id, name=found.display_name, upn=found.upn, source="form")

    def _affected_from_ticket(self, ticket: TicketFacts | None) -> AffectedAccount | None:
        """The ticket's affected-account field (BREAKGLASS_ITSM_AFFECTED_FIELD), when it names a directory user."""
        if ticket is None or not ticket.affected:
            return None
        try:
            found = self.directory.principal(ticket.affected)
        except DirectoryError:
            return None
        if found is None:
            return None
        return AffectedAccount(object_id=found.object_id, name=found.display_name, upn=found.upn, source="ticket")

    @staticmethod
    def _fixable(decision: Decision) -> bool:
        blocking = [r for r in decision.rules if r.blocks]
        return bool(blocking) and all(r.rule in FIELD_OF_RULE for r in blocking)

    def _audit_rejected(self, who: Who, form: IntakeInput, errors: dict[str, str], draft_id: str,
                        decision: Decision | None = None) -> None:
        self.audit.append("request.rejected", actor=who.object_id, data={
            "draft": draft_id, "entitlement": form.entitlement, "duration_minutes": form.duration_minutes,
            "ticket": form.ticket, "target": form.target, "errors": errors,
            "reasons": decision.reasons if decision else [],
        })

    def _create(self, who: Who, request: GrantRequest, decision: Decision, requester: Principal,
                target: Principal, ticket: TicketFacts | None, draft_id: str,
                provenance: Provenance | None = None, affected: AffectedAccount | None = None) -> RequestRecord:
        now = request.created_at
        record = RequestRecord(id=request.id, request=request, decision=decision,
                               requester_name=requester.display_name or who.name,
                               target_name=target.display_name, target_upn=target.upn, ticket_facts=ticket,
                               triage=provenance, affected=affected, created_at=now, updated_at=now)
        event = {Outcome.AUTO_APPROVE: Event.AUTO_APPROVED, Outcome.NEEDS_APPROVAL: Event.SENT_FOR_APPROVAL,
                 Outcome.DENY: Event.POLICY_DENIED}[decision.outcome]
        record = record.apply(event, Actor.system("policy"), now, reason=decision.summary())
        stored = self.store.create(record, draft_id=draft_id)
        if stored.id != record.id:
            return stored  # the same form was submitted twice; the first request stands
        self.audit.append("request.submitted", actor=who.object_id, request_id=record.id, data={
            "requester": request.requester, "target": request.target, "entitlement": request.entitlement,
            "duration": int(request.duration.total_seconds()), "ticket": request.ticket,
            "justification": request.justification, "source": request.source, "draft": draft_id,
            **({"affected": affected.object_id, "affected_from": affected.source} if affected else {}),
        })
        self.audit.append("request.decided", actor="system:policy", request_id=record.id, data={
            "outcome": decision.outcome.value, "lane": decision.lane, "reasons": decision.reasons,
            "flags": list(decision.flags), "hints": list(decision.hints), "policy_digest": decision.policy_digest,
            "approvers": [a.object_id for a in decision.approvers], "quorum": decision.quorum,
            "rules": [{"rule": r.rule, "passed": r.passed} for r in decision.rules],
        })
        self.metrics.inc("requests", decision.outcome.value)
        self._after_decision(record)
        return record

    def _after_decision(self, record: RequestRecord) -> None:
        if record.state is State.APPROVED:
            self.queue.enqueue(jobs.ACTIVATE_GRANT, record.id, jid=job_id("grant", record.id))
        elif record.state is State.PENDING_APPROVAL:
            self.queue.enqueue(jobs.NOTIFY_APPROVERS, record.id, jid=job_id("notify-approvers", record.id))

    def record_triage(self, who: Who, draft_id: str, suggestion: dict[str, Any] | None,
                      submitted: IntakeInput | None = None, prefill: dict[str, Any] | None = None,
                      provenance: Provenance | None = None) -> None:
        """Audit what triage suggested and what the human changed before submitting (`request.triaged`)."""
        changed = {}
        if submitted is not None and prefill is not None:
            for key, value in {"entitlement": submitted.entitlement, "duration_minutes": submitted.duration_minutes,
                               "ticket": submitted.ticket, "target": submitted.target,
                               "justification": submitted.justification}.items():
                if prefill.get(key) != value:
                    changed[key] = {"suggested": prefill.get(key), "submitted": value}
        self.audit.append("request.triaged", actor=who.object_id, data={
            "draft": draft_id, "suggestion": suggestion, "prefill": prefill, "changed_by_human": changed,
            "provenance": provenance.model_dump(mode="json") if provenance else None})

    # --- votes ----------------------------------------------------------------------------------------------

    def vote(self, request_id: str, who: Who, verdict: Verdict, *, reason: str = "",
             terms: str | None = None, altered: tuple[str, ...] = (),
             read: tuple[bytes | None, bytes | None] | None = None) -> ActionResult:
        """One vote, authorised against the policy now. The record's change, its audit event and (for an approval)
        the grant job are written in one round trip (services/state/commit.py), after one read of the record and
        the audit head; `read` is that read when the caller already made it (the click's own lookup)."""
        policy = self.policies.current()
        for _ in range(MAX_VOTE_ATTEMPTS):
            raw, head = read if read is not None else self.store.read(request_id, self.audit.head_key)
            read = None
            if raw is None:
                self.audit.append("approval.refused", actor=who.object_id, request_id=request_id,
                                  data={"code": "unknown_request", "verdict": verdict.value})
                raise AccessError("There is no such request.", "unknown_request")
            current = decode(raw)
            now = self.clock.now()
            try:
                approver = authorise_vote(current, who.object_id, verdict, now, policy, terms=terms, reason=reason,
                                          altered=altered)
            except ApprovalRefusedError as exc:
                self.audit.append("approval.refused", actor=who.object_id, request_id=request_id, head=head,
                                  data={"code": exc.code.value, "verdict": verdict.value,
                                        "state": current.state.value, "clicker_name": who.name,
                                        "altered_fields": list(altered)})
                return ActionResult(current, False, self._refusal_message(current, exc), exc.code.value)
            if approver.name == "" and who.name:
                approver = approver.model_copy(update={"name": who.name})
            record, event = apply_vote(current, approver, verdict, now, reason=reason)
            name = {Event.APPROVED: "request.approved", Event.DENIED: "request.denied",
                    Event.APPROVAL_RECORDED: "approval.recorded"}[event]
            prepared = self.audit.prepare(name, actor=who.object_id, request_id=request_id, head=head, data={
                "verdict": verdict.value, "reason": reason, "version": record.version,
                "approvals": len(record.votes(Verdict.APPROVE)), "quorum": record.decision.quorum})
            ops = self.store.replace_ops(current, record).extend(prepared.ops)
            if record.state is State.APPROVED:
                # The grant job goes alone, in the same round trip: it announces the approval (the requester's
                # notice, every card copy) once its Graph request is made, so nothing competes with it before then.
                ops.extend(self.queue.new_job_ops(jobs.ACTIVATE_GRANT, request_id, jid=job_id("grant", request_id)))
            outcome = self.committer.run(self.store.keys.request(request_id), raw, prepared.expected_seq, ops)
            if outcome in (CONFLICT, LOG_MOVED):
                continue  # another click or another appender got there first: read again, decide again
            self.audit.appended(prepared, outcome)
            break
        else:
            raise ConflictError(f"request {request_id} kept changing; gave up after {MAX_VOTE_ATTEMPTS} attempts")
        if record.state is not State.APPROVED:
            self.queue.enqueue(jobs.UPDATE_CARDS, request_id, record.version,
                               jid=job_id("cards", request_id, record.version))
            if record.state is State.DENIED:
                self.queue.enqueue(jobs.NOTIFY_DECISION, request_id, jid=job_id("decision", request_id))
        self.metrics.inc("approvals", verdict.value)
        msg = {Event.APPROVED: "Approved.", Event.DENIED: "Denied.",
               Event.APPROVAL_RECORDED: f"Approval recorded ({len(record.votes(Verdict.APPROVE))} of "
                                        f"{record.decision.quorum})."}[event]
        return ActionResult(record, True, msg)

    @staticmethod
    def _refusal_message(record: RequestRecord, exc: ApprovalRefusedError) -> str:
        if exc.code.value == "not_pending":
            decided = [a for a in record.approvals if a.verdict is Verdict.DENY] or record.approvals
            if decided:
                last = decided[-1]
                verb = "approved" if last.verdict is Verdict.APPROVE else "denied"
                return (f"Already {verb} by {last.approver_name or last.approver} at "
                        f"{last.at:%Y-%m-%d %H:%M} UTC; the request is now {record.state.value.replace('_', ' ')}.")
        return exc.message

    # --- requester and approver actions ---------------------------------------------------------------------

    def _is_party(self, record: RequestRecord, who: Who) -> bool:
        oid = who.object_id.lower()
        return oid in {record.request.requester, record.request.target}

    def _is_current_approver(self, record: RequestRecord, who: Who) -> bool:
        approvers = current_approvers(record, self.policies.current(), self.clock.now())
        return any(a.object_id == who.object_id.lower() for a in approvers)

    def can_view(self, record: RequestRecord, who: Who) -> bool:
        """The parties: the requester, the person receiving access, the approvers who may act on it now, and
        whoever already voted on it (they see the outcome of their own vote)."""
        return (self._is_party(record, who) or record.voted(who.object_id.lower()) is not None
                or self._is_current_approver(record, who))

    def view_denied(self, request_id: str, who: Who, action: str, *, exists: bool) -> AccessError:
        """The one answer for a request this person may not see or that does not exist. Audited
        (`request.view_denied`) while under the per-person limit; past it, once per minute, so a prober can fill
        neither the log nor Redis."""
        oid = who.object_id.lower()
        if self.view_misses.allow(oid):
            self.audit.append("request.view_denied", actor=oid, request_id=request_id[:40],
                              data={"action": action, "exists": exists})
            return AccessError(NO_SUCH_REQUEST, "unknown_request")
        if self.store.first_time(f"view-miss-throttled:{oid}", 60):
            self.audit.append("request.view_denied", actor=oid, request_id=request_id[:40],
                              data={"action": action, "exists": exists, "throttled": True})
        return AccessError(TOO_MANY_MISSES, "throttled")

    def cancel(self, request_id: str, who: Who) -> ActionResult:
        record = self._load(request_id, who, "request.cancel")
        if not self._is_party(record, who):
            self._forbidden("request.cancel", record, who)
        try:
            new = self.store.update(request_id, lambda r: r.apply(Event.CANCELLED, who.actor, self.clock.now(),
                                                                  reason="cancelled by requester",
                                                                  end_reason="cancelled"))
        except InvalidTransitionError:
            current = self.store.require(request_id)
            return ActionResult(current, False, f"This request is {current.state.value.replace('_', ' ')} and can "
                                                f"no longer be cancelled.", "not_cancellable")
        self.audit.append("request.cancelled", actor=who.object_id, request_id=request_id)
        self.queue.enqueue(jobs.UPDATE_CARDS, request_id, new.version, jid=job_id("cards", request_id, new.version))
        return ActionResult(new, True, "Cancelled.")

    def deactivate(self, request_id: str, who: Who) -> ActionResult:
        record = self._load(request_id, who, "grant.deactivate")
        if not (self._is_party(record, who) or self._is_current_approver(record, who)):
            self._forbidden("grant.deactivate", record, who)
        if record.state is State.REVOKING:
            return ActionResult(record, False, "Deactivation is already under way.", "already_revoking")
        try:
            new = self.store.update(request_id, lambda r: r.apply(
                Event.REVOCATION_STARTED, who.actor, self.clock.now(), reason="deactivated", end_reason="deactivated"))
        except InvalidTransitionError:
            return ActionResult(record, False, f"This request is {record.state.value.replace('_', ' ')}; there is "
                                               f"no active access to deactivate.", "not_active")
        self.audit.append("grant.deactivation_requested", actor=who.object_id, request_id=request_id)
        generation = new.grant.generation if new.grant else 0
        self.queue.enqueue(jobs.REVOKE_GRANT, request_id, generation, "deactivated",
                           jid=job_id("revoke", request_id, generation, "now"), at_front=True)
        return ActionResult(new, True, "Deactivating now.")

    def extend(self, request_id: str, who: Who, minutes: int) -> ActionResult:
        """An extension is a new request linked to the grant; policy runs again on the total duration.

        Whoever clicks is the one asking: the extension is theirs (recorded, shown and decided for them), and when
        the holder extends a grant someone else asked for, that person is told. Nothing is extended once the end is
        under way or too close to apply the extension before it."""
        record = self._load(request_id, who, "grant.extend")
        if not self._is_party(record, who):
            self._forbidden("grant.extend", record, who)
        if record.state is State.REVOKING:
            return self._extension_refused(record, who, "ending", "This access is ending (it was deactivated or "
                                           "has expired); it can no longer be extended. Ask for new access.")
        if record.state is not State.ACTIVE or record.grant is None:
            return ActionResult(record, False, "Only active access can be extended.", "not_active")
        if not 1 <= minutes <= MAX_MINUTES:
            return ActionResult(record, False, "Give the extension in minutes (1 to 1440).", "bad_minutes")
        now = self.clock.now()
        if record.grant.ends_at - now < EXTEND_MARGIN:
            return self._extension_refused(record, who, "too_late", (
                f"This access ends at {record.grant.ends_at:%H:%M:%S} UTC, too close to its end to extend "
                f"(extensions must be asked at least {int(EXTEND_MARGIN.total_seconds())} seconds before the end). "
                "Ask for new access once it has ended."))
        policy = self.policies.current()
        asker = self.principal(who.object_id)
        target = asker if record.request.target == asker.object_id else self.principal(record.request.target)
        original = record.request
        request = GrantRequest(id=new_request_id(), requester=asker.object_id, target=original.target,
                               entitlement=original.entitlement, duration=timedelta(minutes=minutes),
                               justification=original.justification, ticket=original.ticket, created_at=now,
                               lane=record.decision.lane, extends=record.id, source=original.source)
        already = record.grant.ends_at - record.grant.starts_at
        facts = self._facts(policy, asker, target, ticket=self.ticket_facts(original.ticket or ""),
                            active_grants=tuple(self.store.open_grants_of(target.object_id)),
                            already_granted=already)
        decision = evaluate(request, facts, now, policy)
        new = self._create(who, request, decision, asker, target, facts.ticket, draft_id=f"extend:{request.id}")
        self.audit.append("grant.extension_requested", actor=who.object_id, request_id=record.id,
                          data={"extension": new.id, "minutes": minutes, "outcome": decision.outcome.value,
                                "asked_by": asker.object_id, "holds_role": asker.object_id == original.target,
                                "original_requester": original.requester})
        if asker.object_id != original.requester:
            self.queue.enqueue(jobs.NOTIFY_EXTENSION_ASKED, new.id, jid=job_id("extension-asked", new.id))
        if new.state is State.DENIED:
            return ActionResult(record, False, "Extension denied: " + join_reasons(decision.reasons), "denied")
        current = self.store.require(record.id)
        if current.state is not State.ACTIVE:
            # Deactivated (or expired) while the extension was being created: it cannot be applied, and its job
            # fails it loudly (audited, the requester told); say so now rather than "extending".
            return ActionResult(current, False, f"This access is ending; extension {new.id} will not be applied.",
                                "ending")
        if new.state is State.PENDING_APPROVAL:
            return ActionResult(record, True, f"Extension {new.id} is waiting for approval.", "pending")
        return ActionResult(record, True, f"Extending by {minutes} minutes.", "extending")

    def _extension_refused(self, record: RequestRecord, who: Who, code: str, message: str) -> ActionResult:
        self.audit.append("grant.extension_refused", actor=who.object_id, request_id=record.id,
                          data={"code": code, "state": record.state.value,
                                "ends_at": record.grant.ends_at.isoformat() if record.grant else None})
        return ActionResult(record, False, message, code)

    def _load(self, request_id: str, who: Who, action: str) -> RequestRecord:
        record = self.store.get(request_id)
        if record is None:
            raise self.view_denied(request_id, who, action, exists=False)
        return record

    def _forbidden(self, action: str, record: RequestRecord, who: Who) -> None:
        if not self.can_view(record, who):
            raise self.view_denied(record.id, who, action, exists=True)
        self.audit.append("action.refused", actor=who.object_id, request_id=record.id,
                          data={"action": action, "code": "not_a_party"})
        raise AccessError("Only the requester or the person receiving access can do that.", "not_a_party")

    def retry_safe(self, fn: Any, *args: Any) -> Any:
        """Run a state change once more when another process won the race."""
        try:
            return fn(*args)
        except ConflictError:
            return fn(*args)

"""Receipts: the ticket work note + evidence attachment, the channel notice, the requester's card.

A receipt never undoes or blocks a grant. Each part is delivered at most once (progress is remembered per
request and kind) and retried with backoff; when retries run out, a child incident ("integration failure") is
opened and on-call is alerted.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

from policies.durations import format_duration
from policies.lifecycle import Event, State
from policies.model import TicketFacts
from policies.record import RequestRecord
from policies.text import one_line
from services.clock import Clock
from services.errors import ServiceError
from services.metrics import DomainMetrics
from services.ports import TeamsError, Ticketing
from services.state import queue as jobs
from services.state.audit import AuditLog
from services.state.queue import JobQueue, job_id
from services.state.store import RequestStore
from services.workflow.evidence import evidence, evidence_json, evidence_markdown
from services.workflow.followup import SESSIONS_CAVEAT
from services.workflow.notify import Notifier

log = logging.getLogger(__name__)
SYSTEM = "system:receipts"
BACKOFF_FACTORS = [1, 3, 6, 12, 24, 48, 60, 60, 60, 60]
# When retries run out while the ticketing system itself is down, the child incident cannot be opened either: it is
# tried again every ESCALATION_FACTOR x the first back-off (a minute by default), up to ESCALATION_ATTEMPTS times.
ESCALATION_FACTOR = 6
ESCALATION_ATTEMPTS = 60
PENDING = "_child_incident_pending"  # in the progress document: the failures a child incident is still owed for

ROLLBACK = ("Access ends automatically at the end time (Entra enforces it too in PIM mode). To end it now: "
            "“Deactivate now” on the requester's card, or “deactivate {id}” in a chat with the bot; an approver "
            "can do the same. If the bot is unavailable, remove the role assignment in Entra admin center > "
            "Roles and administrators > {role} > Assignments.")
GROUP_ROLLBACK = ("Access ends automatically at the end time (Entra enforces it too in PIM mode). To end it now: "
                  "“Deactivate now” on the requester's card, or “deactivate {id}” in a chat with the bot; an "
                  "approver can do the same. If the bot is unavailable, remove the {access} in Entra admin center > "
                  "Groups > {role} > {where} (or Privileged Identity Management > Groups > Assignments).")


_OUR_MARK = re.compile(r"\[\s*breakglass", re.IGNORECASE)


def note_field(value: object) -> str:
    """A value (a requester's words, a name, an error from Graph) inside a ticket note: folded onto the note's one
    line, so it never starts a line of its own, and never carrying our "[breakglass]" marker."""
    return _OUR_MARK.sub("(breakglass", one_line(value))


def approver_comments(record: RequestRecord) -> str:
    """" Dana Whitfield wrote: “…”." for each approval that came with a comment (already cleaned at intake)."""
    return "".join(f" {a.approver_name or a.approver} wrote: “{one_line(a.reason, 500)}”." for a in record.approvals
                   if a.reason and a.verdict.value == "approve")


def rollback_plan(record: RequestRecord) -> str:
    target = record.decision.target
    if target is not None and target.is_group:
        return GROUP_ROLLBACK.format(id=record.id, role=target.display_name, access=target.scope,
                                     where="Owners" if target.scope == "owner" else "Members")
    return ROLLBACK.format(id=record.id, role=record.decision.entitlement_name)


class Receipts:
    def __init__(self, *, store: RequestStore, audit: AuditLog, queue: JobQueue, notifier: Notifier,
                 ticketing: Ticketing | None, clock: Clock, max_attempts: int = 7, backoff_s: float = 10.0):
        self.store = store
        self.audit = audit
        self.queue = queue
        self.notifier = notifier
        self.ticketing = ticketing
        self.clock = clock
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.metrics = DomainMetrics(store.redis, store.keys.p)

    def _progress(self, request_id: str, kind: str) -> dict[str, Any]:
        return self.store.get_doc("receipt", f"{request_id}:{kind}") or {}

    def _done(self, request_id: str, kind: str, part: str) -> None:
        progress = self._progress(request_id, kind)
        progress[part] = self.clock.now().isoformat()
        self.store.put_doc("receipt", f"{request_id}:{kind}", progress, ttl_s=30 * 86400)

    def post(self, request_id: str, kind: str, attempt: int = 1) -> dict[str, str]:
        """Deliver every part of a receipt that is not delivered yet; returns part -> status."""
        record = self.store.require(request_id)
        progress = self._progress(request_id, kind)
        if attempt > self.max_attempts:  # the retries ran out earlier; only the child incident is still owed
            number = self._escalate(record, kind, attempt, progress.get(PENDING) or {})
            return {"child_incident": number or "pending"}
        parts = self._parts(record, kind)
        status: dict[str, str] = {}
        failures: dict[str, str] = {}
        for part, action in parts.items():
            if part in progress:
                status[part] = "done earlier"
                continue
            try:
                action()
                self._done(request_id, kind, part)
                status[part] = "done"
                self.audit.append("receipt.posted", actor=SYSTEM, request_id=request_id,
                                  data={"kind": kind, "part": part, "attempt": attempt})
            except (ServiceError, TeamsError) as exc:
                failures[part] = str(exc)[:300]
                status[part] = "failed"
        if failures:
            self._retry_or_escalate(record, kind, attempt, failures)
        return status

    def _retry_or_escalate(self, record: RequestRecord, kind: str, attempt: int, failures: dict[str, str]) -> None:
        self.metrics.inc("job_failures", f"receipt:{kind}")
        self.audit.append("receipt.failed", actor=SYSTEM, request_id=record.id,
                          data={"kind": kind, "attempt": attempt, "failures": failures})
        if attempt < self.max_attempts:
            self.metrics.inc("job_retries", f"receipt:{kind}")
            delay = self.backoff_s * BACKOFF_FACTORS[min(attempt - 1, len(BACKOFF_FACTORS) - 1)]
            self.queue.enqueue_at(self.clock.now() + timedelta(seconds=delay), jobs.POST_RECEIPT, record.id, kind,
                                  attempt + 1, jid=job_id("receipt", record.id, kind, attempt + 1))
            return
        self._escalate(record, kind, attempt, failures)

    def _escalate(self, record: RequestRecord, kind: str, attempt: int, failures: dict[str, str]) -> str | None:
        """Open the child incident (retried while the ticketing system is down) and, once, alert on-call."""
        summary = f"breakglass integration failure for {record.id} ({kind} receipt)"
        details = "\n".join(f"{part}: {note_field(error)}" for part, error in failures.items())
        number = None
        if self.ticketing is not None:
            try:
                number = self.ticketing.open_child_incident(
                    self._ticket(record), summary, f"{summary}\n\nAfter {min(attempt, self.max_attempts)} "
                    f"attempts:\n{details}\n\nRequest: {record.id}, state {record.state.value}.")
                self.metrics.inc("child_incidents", self.ticketing.system)
                self.audit.append("itsm.child_incident_opened", actor=SYSTEM, request_id=record.id,
                                  data={"number": number, "kind": kind, "failures": failures})
                self._set_pending(record.id, kind, None)
            except ServiceError as exc:
                self.audit.append("itsm.child_incident_failed", actor=SYSTEM, request_id=record.id,
                                  data={"error": str(exc)[:300], "attempt": attempt})
                if attempt < self.max_attempts + ESCALATION_ATTEMPTS:
                    self._set_pending(record.id, kind, failures)
                    delay = timedelta(seconds=self.backoff_s * ESCALATION_FACTOR)
                    self.queue.enqueue_at(self.clock.now() + delay, jobs.POST_RECEIPT, record.id, kind, attempt + 1,
                                          jid=job_id("receipt", record.id, kind, attempt + 1))
        if attempt == self.max_attempts:  # on-call hears about it once, when the retries run out
            self.notifier.alert("Receipt could not be delivered", [
                ("Request", record.id), ("Receipt", kind), ("Attempts", str(attempt)),
                ("Child incident", number or "could not be opened yet; retrying")], "critical", details)
        return number

    def _set_pending(self, request_id: str, kind: str, failures: dict[str, str] | None) -> None:
        progress = self._progress(request_id, kind)
        if failures:
            progress[PENDING] = failures
        else:
            progress.pop(PENDING, None)
        self.store.put_doc("receipt", f"{request_id}:{kind}", progress, ttl_s=30 * 86400)

    def _ticket(self, record: RequestRecord) -> TicketFacts | None:
        facts = record.ticket_facts
        return facts if facts is not None and facts.exists else None

    def _parts(self, record: RequestRecord, kind: str) -> dict[str, Any]:
        parts: dict[str, Any] = {}
        ticket = self._ticket(record)
        if kind.startswith("activity-"):  # a pass found something new (or is the last): the pack, updated
            if self.ticketing is not None and ticket is not None:
                parts["ticket_evidence"] = lambda: self._attach(record, ticket, kind)
            return parts
        if self.ticketing is not None and ticket is not None:
            parts["ticket_note"] = lambda: self.ticketing.add_note(ticket, self.note_text(record, kind))  # type: ignore[union-attr]
            if kind in {"activated", "ended"}:
                parts["ticket_evidence"] = lambda: self._attach(record, ticket, kind)
        if kind == "activated":
            parts["channel"] = lambda: self.notifier.channel_receipt(record.id, rollback_plan(record))
        elif kind == "failed":
            parts["alert"] = lambda: self.notifier.alert("Access grant failed", [
                ("Request", record.id), (record.access_label, record.access_name),
                ("For", record.target_name or record.request.target), ("Reason", record.failure or "unknown")],
                "critical")
        elif kind == "revoke_failing":
            parts["alert"] = lambda: self.notifier.alert("Access removal is failing — still retrying", [
                ("Request", record.id), (record.access_label, record.access_name),
                ("For", record.target_name or record.request.target)], "critical")
        if kind in {"activated", "failed", "ended"}:
            parts["requester"] = lambda: self.notifier.tell_requester(record.id, self.requester_text(record, kind))
        return parts

    def _attach(self, record: RequestRecord, ticket: TicketFacts, kind: str) -> None:
        assert self.ticketing is not None
        # A signed checkpoint goes with the pack: the ticket is outside Redis, so it anchors the log (see anchors.py).
        activity = self.store.get_doc("activity", record.id)
        pack = evidence(record, self.audit.for_request(record.id), self.clock.now(), self.audit.checkpoint(),
                        activity={**activity["activity"], "pass": activity["pass"], "final": activity["final"],
                                  "digest": activity["digest"]} if activity else None)
        name = f"{kind}-final" if kind.startswith("activity-") and activity and activity.get("final") else kind
        self.ticketing.attach(ticket, f"breakglass-{record.id}-{name}.json", evidence_json(pack), "application/json")
        self.ticketing.attach(ticket, f"breakglass-{record.id}-{name}.md", evidence_markdown(pack), "text/markdown")

    @staticmethod
    def note_text(record: RequestRecord, kind: str) -> str:
        """One line per note; every value that did not come from breakglass itself goes through `note_field`, and
        each ticketing adapter encodes the line for its own system (ServiceNow journal, HTML)."""
        r, d, g = record.request, record.decision, record.grant
        f = note_field
        role, who = f(record.access_name), f(record.target_name or r.target)
        if kind == "activated" and g is not None:
            approvals = ", ".join(f"{f(a.approver_name or a.approver)} ({a.verdict.value}"
                                  + (f", comment: {f(a.reason)}" if a.reason else "") + ")" for a in record.approvals)
            return (f"[breakglass] {role} granted to {who} from {g.starts_at:%Y-%m-%d %H:%M:%S} UTC "
                    f"until {g.ends_at:%Y-%m-%d %H:%M:%S} UTC ({format_duration(g.ends_at - g.starts_at)}), "
                    f"{g.mode.value} mode. Request {record.id} by {f(record.requester_name or r.requester)}; "
                    f"approved {'by ' + approvals if approvals else 'by rule: ' + f(d.summary())}. "
                    f"Justification: {f(r.justification)}")
        if kind == "failed":
            return (f"[breakglass] Request {record.id} for {role} ({who}) FAILED and was not granted: "
                    f"{f(record.failure)}. On-call has been alerted.")
        if kind == "extended" and g is not None:
            return f"[breakglass] {role} for {who} extended until {g.ends_at:%Y-%m-%d %H:%M:%S} UTC."
        if kind.startswith("step-"):
            return Receipts.step_note(record, kind.removeprefix("step-"))
        if kind == "ended":
            how = {State.EXPIRED: "expired", State.REVOKED: f"was revoked ({f(record.end_reason or 'revoked')})"}
            return (f"[breakglass] {role} for {who} {how.get(record.state, record.state.value)}; "
                    f"the {_removed(record)} was removed (request {record.id}).")
        return f"[breakglass] {record.id}: {kind}"

    @staticmethod
    def step_note(record: RequestRecord, key: str) -> str:
        """A follow-up step's outcome on the ticket: what it did, honestly, or why it did not."""
        f = note_field
        step = record.step(key)
        role, who = f(record.decision.entitlement_name), f(record.target_name or record.request.target)
        if step is None:
            return f"[breakglass] {record.id}: follow-up step {f(key)}"
        if step.kind == "sessions":
            if step.status == "done":
                at = step.detail.removeprefix("revoked at ")
                return (f"[breakglass] Sign-in sessions of {who} revoked at {f(at)} after {role} ended (request "
                        f"{record.id}). {SESSIONS_CAVEAT.format(at=f(at))}")
            return (f"[breakglass] Sign-in sessions of {who} could NOT be revoked after {role} ended (request "
                    f"{record.id}): {f(step.detail)}. On-call has been alerted; revoke them in Entra admin center > "
                    "Users > the user > Revoke sessions.")
        outcome = {"done": "done", "failed": "FAILED", "refused": "REFUSED by policy", "skipped": "skipped"}
        tail = " On-call has been alerted." if step.status == "failed" else ""
        return (f"[breakglass] {f(step.label)} ({record.id}, {role} for {who}): {outcome.get(step.status, step.status)}"
                f" - {f(step.detail)}.{tail}")

    @staticmethod
    def requester_text(record: RequestRecord, kind: str) -> str:
        g = record.grant
        if kind == "activated" and g is not None:
            if any(h.event == Event.APPROVED.value for h in record.history):
                # The approval's notice and the grant's receipt are one message (GrantService._announce_approval
                # leaves an active grant to this one).
                return (f"Your request {record.id} for {record.access_name} was approved; the access is active until "
                        f"{g.ends_at:%Y-%m-%d %H:%M} UTC.{approver_comments(record)}")
            return f"{record.access_name} is active until {g.ends_at:%H:%M} UTC ({record.id})."
        if kind == "failed":
            return f"{record.access_name} could NOT be granted ({record.id}): {record.failure}. On-call was alerted."
        return f"{record.access_name} has ended ({record.id})."


def _removed(record: RequestRecord) -> str:
    target = record.decision.target
    return f"group {target.scope}ship" if target is not None and target.is_group else "role assignment"

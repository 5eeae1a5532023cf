"""The emergency-account watch: every BREAKGLASS_WATCH_INTERVAL seconds (a periodic job the scheduler runs), read
the sign-in log of each emergency account and turn each new sign-in into an incident.

- **Window.** Each account is read from its last successful poll minus BREAKGLASS_WATCH_LOOKBACK (15 minutes by
  default; Entra's logs are ~2 minutes late at p95, 5 at p99), so a record that arrives late, or a watch that was
  down, is still covered. The client follows every @odata.nextLink and waits out 429s (Retry-After honoured).
- **Once.** A sign-in id is mapped to its incident in the same Redis transaction that stores it; one poll runs at a
  time (a lock), so several workers or scheduler replicas, a restart or the same record read twice open nothing new.
  Sign-ins within `burst_window` of an open incident's first sign-in join it instead of opening another.
- **Steps.** An incident's outward steps (the P1 in the ITSM, the critical alert, each person told, the checklist
  card, each note on the ITSM incident) are remembered one by one; every poll re-drives what is missing, so a crash
  or an outage delays a step but never loses it. A step that failed MAX_STEP_ATTEMPTS times is given up, audited
  and alerted.
- **Never silent.** A poll that cannot read the log (no Entra ID P1/P2, a permission missing, the account unknown)
  is audited and alerted once and reported by `/readyz` and `doctor` until a poll succeeds again; so is a watch
  whose last good poll is older than three intervals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cards.emergency import alert_facts, checklist_card
from policies.document import GUID, EmergencyAccounts, PersonEntry, PolicyDocument
from policies.emergency import ITEM_NAMES, MAX_ACTIONS, EmergencyIncident, SignIn
from services.clock import Clock
from services.errors import ServiceError
from services.ports import (
    Directory,
    DirectoryError,
    GraphError,
    GraphForbiddenError,
    GraphThrottledError,
    IdentityLogs,
    LicenceRequiredError,
    TeamsError,
    Ticketing,
)
from services.state.audit import AuditLog
from services.state.emergency import EmergencyStore, new_incident_id
from services.state.policy_source import PolicySource
from services.workflow.emergency.actions import account_actions
from services.workflow.notify import Notifier
from services.workflow.receipts import note_field

log = logging.getLogger(__name__)
SYSTEM = "system:emergency-watch"
MAX_STEP_ATTEMPTS = 30
ACTIONS_EVERY = timedelta(minutes=5)  # directoryAudits of an open incident's account, at most this often
STALE_AFTER_POLLS = 3
ALERT_AT_ONCE = frozenset({"licence", "forbidden", "unknown_account"})  # nothing will fix these by itself
FIX = {
    "licence": "the tenant needs Entra ID P1 or P2 for sign-in logs (a permission will not help)",
    "forbidden": "grant the Graph app AuditLog.Read.All and Directory.Read.All (application, admin consent)",
    "unknown_account": "correct emergency_accounts.accounts in the policy",
    "throttled": "Graph's reporting API throttled the watch; it tries again next poll",
    "unavailable": "Graph could not be reached; the watch tries again next poll",
}


class WatchFailure(ServiceError):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass
class WatchReport:
    skipped: bool = False  # another poll held the lock
    seen: int = 0
    opened: list[str] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Account:
    object_id: str
    upn: str = ""
    name: str = ""


class EmergencyWatch:
    def __init__(self, *, store: EmergencyStore, audit: AuditLog, policies: PolicySource, logs: IdentityLogs,
                 directory: Directory, ticketing: Ticketing | None, notifier: Notifier, clock: Clock,
                 lookback: timedelta = timedelta(minutes=15), interval_s: int = 60):
        self.store = store
        self.audit = audit
        self.policies = policies
        self.logs = logs
        self.directory = directory
        self.ticketing = ticketing
        self.notifier = notifier
        self.clock = clock
        self.lookback = lookback
        self.interval_s = interval_s

    # --- the poll ------------------------------------------------------------------------------------------

    def poll(self) -> WatchReport:
        policy = self.policies.current()
        ea = policy.emergency_accounts
        report = WatchReport()
        if not ea.accounts:
            return report
        token = self.store.lock(max(120.0, 5.0 * self.interval_s))
        if token is None:
            report.skipped = True
            return report
        try:
            now = self.clock.now()
            failures: list[WatchFailure] = []
            for account in ea.accounts:
                try:
                    self._poll_account(account, ea, now, report)
                except WatchFailure as failure:
                    failures.append(failure)
                    report.errors[account] = failure.message
            self._record_health(failures, now)
            for incident_id in self.store.unfinished():
                try:
                    self.drive(incident_id, policy=policy, refresh_actions=True)
                except Exception:
                    log.exception("emergency incident step failed", extra={"incident": incident_id})
        finally:
            self.store.unlock(token)
        return report

    def _poll_account(self, account: str, ea: EmergencyAccounts, now: datetime, report: WatchReport) -> None:
        who = self._resolve(account)
        since = (self.store.polled_until(who.object_id) or now) - self.lookback
        rows = self._read(who, since)
        newest: datetime | None = None
        for sign_in in sorted(self._sign_ins(rows), key=lambda s: s.at):
            if sign_in.user_id and sign_in.user_id != who.object_id:
                continue  # a row of someone else: never let a filter Graph ignored open an incident
            report.seen += 1
            newest = sign_in.at if newest is None else max(newest, sign_in.at)
            self._place(sign_in, who, ea, now, report)
        self.store.mark_polled(who.object_id, now, newest)

    def probe(self) -> str:
        """A live read of the first account's last five minutes of sign-ins (doctor); raises WatchFailure."""
        accounts = self.policies.current().emergency_accounts.accounts
        who = self._resolve(accounts[0])
        self._read(who, self.clock.now() - timedelta(minutes=5))
        return f"sign-in logs readable for {len(accounts)} emergency account(s), every {self.interval_s} s"

    def _read(self, who: Account, since: datetime) -> list[dict[str, Any]]:
        try:
            return self.logs.sign_ins(user_id=who.object_id, since=since)
        except LicenceRequiredError as exc:
            raise WatchFailure("licence", f"sign-in logs need Entra ID P1/P2 (Graph {exc.status} {exc.code})") from exc
        except GraphForbiddenError as exc:
            raise WatchFailure("forbidden", f"Graph refused the sign-in logs ({exc.status} {exc.code})") from exc
        except GraphThrottledError as exc:
            raise WatchFailure("throttled", f"Graph throttled the sign-in logs (429, {exc.code})") from exc
        except GraphError as exc:
            raise WatchFailure("unavailable", f"sign-in logs unavailable ({exc.status} {exc.code})") from exc

    def _sign_ins(self, rows: list[dict[str, Any]]) -> list[SignIn]:
        out = []
        for row in rows:
            try:
                out.append(SignIn.from_row(row))
            except (KeyError, TypeError, ValueError):
                log.warning("unreadable sign-in record skipped", extra={"id": str(row.get("id"))[:80]})
        return out

    def _resolve(self, account: str) -> Account:
        try:
            principal = self.directory.principal(account)
        except DirectoryError as exc:
            if GUID.match(account):
                return Account(account)  # the log is read by object id: the name can wait
            raise WatchFailure("unavailable", f"the directory could not resolve {account}: {exc}") from exc
        if principal is None:
            raise WatchFailure("unknown_account", f"emergency account {account} does not exist in the directory")
        return Account(principal.object_id, principal.upn, principal.display_name)

    def _place(self, sign_in: SignIn, who: Account, ea: EmergencyAccounts, now: datetime,
               report: WatchReport) -> None:
        if self.store.incident_of(sign_in.id) is not None:
            return
        facts = {"sign_in": sign_in.id, "account": who.object_id, "at": sign_in.at.isoformat(),
                 "result": sign_in.result, "ip": sign_in.ip, "app": sign_in.app, "location": sign_in.location,
                 "conditional_access": sign_in.ca_status}
        if not sign_in.succeeded and not ea.alert_on_failed_sign_ins:
            if self.store.ignore(sign_in.id):
                self.audit.append("emergency.sign_in_ignored", actor=SYSTEM,
                                  data={**facts, "why": "failed sign-in; alert_on_failed_sign_ins is false"})
                report.ignored.append(sign_in.id)
            return
        open_id = self.store.open_incident_of(who.object_id)
        current = self.store.get(open_id) if open_id else None
        if current is not None and current.joins(sign_in, ea.burst_window):
            if self.store.join(current.id, sign_in) is not None:
                self.audit.append("emergency.sign_in_joined", actor=SYSTEM, data={**facts, "incident": current.id})
                report.joined.append(sign_in.id)
            return
        incident = EmergencyIncident(id=new_incident_id(), account=who.object_id, account_upn=who.upn,
                                     account_name=who.name, sign_ins=(sign_in,), opened_at=now)
        if self.store.create(incident):
            self.audit.append("emergency.sign_in_detected", actor=SYSTEM, data={**facts, "incident": incident.id})
            report.opened.append(incident.id)

    # --- an incident's steps ---------------------------------------------------------------------------------

    def drive(self, incident_id: str, *, policy: PolicyDocument | None = None,
              refresh_actions: bool = False) -> dict[str, str]:
        """Do every step of the incident that is not done yet (each at most once); returns what each step did."""
        policy = policy or self.policies.current()
        ea = policy.emergency_accounts
        incident = self.store.get(incident_id)
        if incident is None:
            return {}
        start = incident.version
        incident = self._step(incident, "ticket", self._open_ticket)
        incident = self._step(incident, "alert", self._alert)
        for person in ea.notify:
            incident = self._step(incident, f"notify:{person.object_id}",
                                  lambda i, p=person: self._tell(i, p))  # type: ignore[misc]
        if refresh_actions:
            incident = self._refresh_actions(incident)
        posted = "card" not in incident.done
        incident = self._step(incident, "card", lambda i: self._post_card(i, policy))
        if incident.ticket is not None:
            for sign_in in incident.sign_ins[1:]:
                incident = self._step(incident, f"note:sign-in:{sign_in.id}",
                                      lambda i, s=sign_in: self._note(i, self._sign_in_note(i, s)))  # type: ignore[misc]
            for tick in incident.ticks:
                incident = self._step(incident, f"note:tick:{tick.item}",
                                      lambda i, t=tick: self._note(i, self._tick_note(i, t)))  # type: ignore[misc]
        if incident.complete:
            incident = self._step(incident, "note:closing", self._close)
        if incident.version != start and incident.card is not None and not (posted and "card" in incident.done):
            self.notifier.update_card(incident.card, checklist_card(incident, self.clock.now(),
                                                                    self._reviewers(policy)))
        if incident.complete and self._settled(incident, ea):
            self.store.finish(incident)
        return dict(incident.done)

    def _step(self, incident: EmergencyIncident,
              name: str, action: Callable[[EmergencyIncident], tuple[str, dict[str, Any]]]) -> EmergencyIncident:
        if name in incident.done or incident.attempts.get(name, 0) >= MAX_STEP_ATTEMPTS:
            return incident
        try:
            what, changes = action(incident)
        except (ServiceError, TeamsError) as exc:
            attempt = incident.attempts.get(name, 0) + 1
            updated = self.store.update(incident.id, lambda i: i.changed(attempts={**i.attempts, name: attempt}))
            self.audit.append("emergency.step_failed", actor=SYSTEM, data={
                "incident": incident.id, "step": name, "attempt": attempt, "error": str(exc)[:300]})
            if attempt >= MAX_STEP_ATTEMPTS:
                self.audit.append("emergency.step_abandoned", actor=SYSTEM,
                                  data={"incident": incident.id, "step": name, "attempts": attempt})
                self.notifier.alert("Emergency incident step given up", [
                    ("breakglass incident", incident.id), ("Step", name), ("Attempts", str(attempt)),
                    ("Error", note_field(str(exc))[:300])], "critical")
            return updated
        return self.store.update(incident.id, lambda i: i.changed(**changes).mark(name, what) if name not in i.done
                                 else i)

    def _settled(self, incident: EmergencyIncident, ea: EmergencyAccounts) -> bool:
        steps = ["ticket", "alert", "card", "note:closing", *(f"notify:{p.object_id}" for p in ea.notify)]
        if incident.ticket is not None:
            steps += [f"note:sign-in:{s.id}" for s in incident.sign_ins[1:]]
            steps += [f"note:tick:{t.item}" for t in incident.ticks]
        return all(s in incident.done or incident.attempts.get(s, 0) >= MAX_STEP_ATTEMPTS for s in steps)

    def _open_ticket(self, incident: EmergencyIncident) -> tuple[str, dict[str, Any]]:
        if self.ticketing is None:
            return "no ticketing system configured", {}
        short, description = incident_text(incident)
        ticket = self.ticketing.open_incident(short, description, priority=1)
        self.audit.append("emergency.incident_opened", actor=SYSTEM, data={
            "incident": incident.id, "number": ticket.number, "system": ticket.system, "priority": 1})
        return ticket.number, {"ticket": ticket}

    def _alert(self, incident: EmergencyIncident) -> tuple[str, dict[str, Any]]:
        if self.notifier.channel("alerts") is None:
            log.error("emergency account sign-in and no alerts channel", extra={"incident": incident.id})
            return "no alerts channel configured", {}
        if not self.notifier.alert("Emergency access account signed in", alert_facts(incident), "critical"):
            raise TeamsError(0, "alert_not_posted", "the alert could not be posted")
        return "posted", {}

    def _tell(self, incident: EmergencyIncident, person: PersonEntry) -> tuple[str, dict[str, Any]]:
        if not self.notifier.alert_person(person.object_id, "Emergency access account signed in",
                                          alert_facts(incident), "critical", name=person.name):
            raise TeamsError(0, "unreachable", f"{person.name or person.object_id} could not be reached in Teams")
        self.audit.append("emergency.person_told", actor=SYSTEM,
                          data={"incident": incident.id, "person": person.object_id})
        return "told", {}

    def _post_card(self, incident: EmergencyIncident, policy: PolicyDocument) -> tuple[str, dict[str, Any]]:
        ref = self.notifier.post_card("alerts", checklist_card(incident, self.clock.now(), self._reviewers(policy)),
                                      f"Emergency account sign-in: {incident.account_label} ({incident.id})")
        if ref is None:
            return "no alerts channel configured", {}
        return ref.activity_id, {"card": ref}

    def _note(self, incident: EmergencyIncident, text: str) -> tuple[str, dict[str, Any]]:
        assert self.ticketing is not None and incident.ticket is not None
        self.ticketing.add_note(incident.ticket, text)
        return "noted", {}

    def _close(self, incident: EmergencyIncident) -> tuple[str, dict[str, Any]]:
        if self.ticketing is not None and incident.ticket is not None:
            done = "; ".join(f"{ITEM_NAMES[t.item]}: {note_field(t.by_name or t.by)} at {t.at:%Y-%m-%d %H:%M} UTC"
                             for t in incident.ticks)
            self.ticketing.add_note(incident.ticket, (
                f"[breakglass] Emergency incident {incident.id}: the post-use checklist is complete ({done}). "
                f"{len(incident.sign_ins)} sign-in(s), {incident.actions_total} directory change(s) logged. "
                "breakglass closes its part of this incident."))
        self.audit.append("emergency.incident_closed", actor=SYSTEM, data={
            "incident": incident.id, "number": incident.ticket.number if incident.ticket else None,
            "ticks": [{"item": t.item, "by": t.by, "at": t.at.isoformat()} for t in incident.ticks]})
        return "closed", {}

    def _refresh_actions(self, incident: EmergencyIncident) -> EmergencyIncident:
        now = self.clock.now()
        checked = incident.actions_checked_at
        if incident.completed_at is not None or (checked is not None and now - checked < ACTIONS_EVERY):
            return incident
        try:
            found = account_actions(self.logs, incident.account, incident.first_at - timedelta(minutes=1))
        except GraphError as exc:
            log.warning("directory audits unavailable", extra={"incident": incident.id, "error": str(exc)[:200]})
            return incident
        known = {a.id for a in incident.actions}
        new = [a for a in found if a.id not in known]
        incident = self.store.update(incident.id, lambda i: i.changed(
            actions=(*i.actions, *(a for a in new if a.id not in {x.id for x in i.actions}))[-MAX_ACTIONS:],
            actions_total=i.actions_total + len(new), actions_checked_at=now))
        noted = int(incident.done.get("actions_noted", "0"))
        if incident.ticket is not None and self.ticketing is not None and incident.actions_total > noted:
            lines = [a.line() for a in incident.actions[noted - incident.actions_total:]]
            try:
                self.ticketing.add_note(incident.ticket, f"[breakglass] Emergency incident {incident.id}: "
                                        f"directory changes by {note_field(incident.account_label)} since the "
                                        f"sign-in: " + "; ".join(note_field(line) for line in lines))
            except ServiceError as exc:
                log.warning("actions note failed", extra={"incident": incident.id, "error": str(exc)[:200]})
                return incident
            total = incident.actions_total
            incident = self.store.update(incident.id, lambda i: i.mark("actions_noted", str(total)))
        return incident

    @staticmethod
    def _reviewers(policy: PolicyDocument) -> str:
        key = policy.emergency_accounts.reviewers
        return policy.groups[key].display_name if key and key in policy.groups else ""

    @staticmethod
    def _sign_in_note(incident: EmergencyIncident, sign_in: SignIn) -> str:
        facts = "; ".join(f"{k}: {note_field(v)}" for k, v in sign_in.facts())
        return f"[breakglass] Emergency incident {incident.id}: another sign-in by the account. {facts}"

    @staticmethod
    def _tick_note(incident: EmergencyIncident, tick: Any) -> str:
        return (f"[breakglass] Emergency incident {incident.id}: post-use checklist item \"{ITEM_NAMES[tick.item]}\" "
                f"ticked by {note_field(tick.by_name or tick.by)} ({tick.by}) at {tick.at:%Y-%m-%d %H:%M:%S} UTC.")

    # --- health ----------------------------------------------------------------------------------------------

    def _record_health(self, failures: list[WatchFailure], now: datetime) -> None:
        status = self.store.status()
        previous = status.get("error") or {}
        if failures:
            failure = failures[0]
            status["error"] = {"kind": failure.kind, "message": failure.message,
                               "since": previous.get("since") if previous.get("kind") == failure.kind
                               else now.isoformat()}
            if previous.get("kind") != failure.kind:
                self.audit.append("emergency.watch_failed", actor=SYSTEM,
                                  data={"kind": failure.kind, "message": failure.message})
            if failure.kind in ALERT_AT_ONCE and status.get("alerted") != failure.kind:
                status["alerted"] = failure.kind
                self.notifier.alert("The emergency-account watch cannot run", [
                    ("Why", failure.message), ("Fix", FIX[failure.kind]),
                    ("Meanwhile", "sign-ins of emergency access accounts are NOT watched; check them in the Entra "
                                  "admin center (Sign-in logs)")], "critical")
        else:
            if previous:
                self.audit.append("emergency.watch_recovered", actor=SYSTEM, data={"was": previous})
            status = {"ok_at": now.isoformat()}
        status["polled_at"] = now.isoformat()
        self.store.put_status(status)

    def problems(self) -> list[str]:
        """Why the watch is not watching, in words (for /readyz and doctor); empty when it is, or has nothing to
        watch."""
        if not self.policies.current().emergency_accounts.accounts:
            return []
        if self.interval_s <= 0:
            return ["emergency watch: off (BREAKGLASS_WATCH_INTERVAL=0) while the policy lists emergency accounts"]
        status = self.store.status()
        error = status.get("error")
        if error:
            return [f"emergency watch: cannot run since {error.get('since', '?')[:19]}: {error.get('message')}; "
                    f"{FIX.get(error.get('kind', ''), '')}"]
        ok_at = status.get("ok_at")
        if ok_at:
            age = (self.clock.now() - datetime.fromisoformat(ok_at)).total_seconds()
            if age > STALE_AFTER_POLLS * self.interval_s:
                return [f"emergency watch: last successful poll {age:.0f} s ago (every {self.interval_s} s expected); "
                        "is the scheduler running?"]
        return []


def incident_text(incident: EmergencyIncident) -> tuple[str, str]:
    """(short description, description) of the P1: plain text, every value from the log folded onto its line;
    each ITSM adapter encodes it for its system."""
    first = incident.sign_ins[0]
    label = note_field(incident.account_label)
    outcome = "signed in" if first.succeeded else "failed to sign in"
    short = f"P1: emergency access account {label} {outcome}"
    lines = [f"breakglass saw a sign-in by the emergency access account {label} "
             f"(UPN {note_field(incident.account_upn or first.upn or 'unknown')}, object id {incident.account}). "
             "Every use of an emergency account is an incident until security has reviewed it.", ""]
    lines += [f"{k}: {note_field(v)}" for k, v in first.facts()]
    lines += ["", f"breakglass incident {incident.id}. A post-use checklist is in the Teams alerts channel: reason "
                  "documented in this incident, actions reviewed, credentials rotated, security review done. Each "
                  "tick is noted here."]
    return short, "\n".join(lines)

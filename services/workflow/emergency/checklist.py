"""Ticking the post-use checklist of an emergency incident from its card.

Like every click: the card data only names the incident and the item; the clicker is who Teams says
(`from.aadObjectId`), authorised against the policy as it is now (a member of `emergency_accounts.reviewers`, read
from the directory; fail closed when it cannot be read); the click must come from the checklist card itself. Each
tick is audited; its note on the ITSM incident, the closing note and the card update are done by a job (re-driven
by the watch's next poll if the job is lost).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cards.emergency import checklist_card
from cards.lists import message_card
from policies.emergency import ITEM_NAMES, EmergencyIncident
from services.clock import Clock
from services.ports import Directory, DirectoryError
from services.state import queue as jobs
from services.state.audit import AuditLog
from services.state.emergency import EmergencyStore
from services.state.policy_source import PolicySource
from services.state.queue import JobQueue, job_id

INCIDENT_ID = re.compile(r"^EA-[A-Z0-9]{6}$")
NO_SUCH_INCIDENT = "There is no such emergency incident."
OUT_OF_DATE = "This card is out of date; use the checklist card in the alerts channel."


def _thread(conversation_id: str) -> str:
    return conversation_id.split(";", 1)[0]


@dataclass(frozen=True)
class TickResult:
    card: dict[str, Any]
    message: str
    changed: bool


class Checklist:
    def __init__(self, *, store: EmergencyStore, audit: AuditLog, policies: PolicySource, directory: Directory,
                 queue: JobQueue, clock: Clock):
        self.store = store
        self.audit = audit
        self.policies = policies
        self.directory = directory
        self.queue = queue
        self.clock = clock

    def tick(self, who: Any, incident_id: str, item: str, *, reply_to_id: str | None,
             conversation_id: str) -> TickResult:
        oid = who.object_id.lower()
        incident_id = incident_id.strip().upper()[:40]
        item = item.strip()[:40]
        incident = self.store.get(incident_id) if INCIDENT_ID.match(incident_id) else None
        if incident is None or item not in ITEM_NAMES:
            self._refused(oid, incident_id, item, "unknown_incident_or_item")
            return TickResult(message_card(NO_SUCH_INCIDENT), NO_SUCH_INCIDENT, False)
        card = incident.card
        if card is None or reply_to_id != card.activity_id or _thread(conversation_id) != _thread(
                card.conversation_id):
            self._refused(oid, incident_id, item, "card_out_of_date")
            return TickResult(message_card(OUT_OF_DATE), OUT_OF_DATE, False)
        policy = self.policies.current()
        key = policy.emergency_accounts.reviewers
        group = policy.groups.get(key) if key else None
        reviewers = group.display_name if group else "the reviewers"
        allowed, why = self._member(oid, group.object_id if group else None)
        if not allowed:
            self._refused(oid, incident_id, item, why)
            message = (f"Only members of {reviewers} may tick this checklist." if why == "not_a_reviewer"
                       else "The directory cannot be reached to check who you are; try again in a minute.")
            return TickResult(self._card(incident, reviewers), message, False)
        now = self.clock.now()
        updated = self.store.update(incident.id, lambda i: i.tick(item, oid, who.name, now))
        if updated.version == incident.version and updated.ticked(item) is not None and updated.ticked(
                item).by != oid:
            tick = updated.ticked(item)
            assert tick is not None
            return TickResult(self._card(updated, reviewers),
                              f"Already ticked by {tick.by_name or tick.by}.", False)
        if updated.version != incident.version:
            self.audit.append("emergency.checklist_ticked", actor=oid, data={
                "incident": incident.id, "item": item, "title": ITEM_NAMES[item], "by_name": who.name[:200]})
            if updated.complete:
                self.audit.append("emergency.checklist_completed", actor=oid, data={
                    "incident": incident.id, "ticks": {t.item: t.by for t in updated.ticks}})
            self.queue.enqueue(jobs.DRIVE_EMERGENCY, incident.id,
                               jid=job_id("emergency", incident.id, updated.version))
        done = "The checklist is complete." if updated.complete else f"Ticked: {ITEM_NAMES[item]}."
        return TickResult(self._card(updated, reviewers), done, updated.version != incident.version)

    def _member(self, oid: str, group_id: str | None) -> tuple[bool, str]:
        if group_id is None:
            return False, "not_a_reviewer"
        try:
            principal = self.directory.principal(oid)
        except DirectoryError:
            return False, "directory_unavailable"
        if principal is None or not principal.enabled or group_id.lower() not in principal.groups:
            return False, "not_a_reviewer"
        return True, ""

    def _card(self, incident: EmergencyIncident, reviewers: str) -> dict[str, Any]:
        return checklist_card(incident, self.clock.now(), reviewers)

    def _refused(self, oid: str, incident_id: str, item: str, code: str) -> None:
        self.audit.append("emergency.checklist_refused", actor=oid,
                          data={"incident": incident_id, "item": item, "code": code})

"""Card verbs: each one reloads state, authorises the clicker by object id, writes once, enqueues the rest and
returns the card the clicker should now see. Card data is only ever used to find the request.

Before any verb runs, two checks, in this order:
- the clicker may see the request (a party, or the click comes from the approvals channel's copy); anybody else
  gets exactly what an unknown id gets, so a stranger cannot even learn that the request exists;
- the click is bound to its card: it replies to one of the card activities stored for that request, and a vote
  carries the card's terms digest. A click sent from another request's card (with this one's id) is refused as
  out of date and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

from bot.intake import DRAFT_TTL_S, Intake, provenance_of
from cards.approval import approval_base_card, approval_card, decided_card
from cards.intake import IntakeForm
from cards.lists import message_card
from cards.notice import with_notice
from cards.status import request_card
from cards.verbs import Verb
from policies.lifecycle import State
from policies.model import CardRef, Verdict
from policies.record import RequestRecord
from policies.text import clean_input
from services.composition import Services
from services.state.store import decode
from services.workflow.access import AccessError, AccessService, IntakeInput, Who

log = logging.getLogger(__name__)
REQUEST_ID = re.compile(r"^BG-[A-Z0-9]{6}$")
# What an approve/deny click can legitimately carry: the card's own data, the deny reason input, Teams' envelope.
VOTE_FIELDS = frozenset({"requestId", "terms", "reason", "comment", "msteams"})
VOTES = frozenset({Verb.REQUEST_APPROVE, Verb.REQUEST_DENY})
OUT_OF_DATE = "This card is out of date; use the latest card breakglass sent for this request."


def thread(conversation_id: str) -> str:
    """A channel conversation without its `;messageid=` suffix (the same thread, addressed either way)."""
    return conversation_id.split(";", 1)[0]


@dataclass(frozen=True)
class Origin:
    """Where the click happened, for remembering this copy of the card."""

    service_url: str
    conversation_id: str
    reply_to_id: str | None
    teams_id: str | None


class Actions:
    def __init__(self, services: Services, intake: Intake):
        self.services = services
        self.intake = intake

    @property
    def access(self) -> AccessService:
        return self.services.access

    async def dispatch(self, verb: str, who: Who, data: dict[str, Any], origin: Origin) -> dict[str, Any]:
        try:
            chosen = Verb(verb)
        except ValueError:
            return message_card(f"Unknown action {verb[:40]!r}.")
        try:
            if chosen is Verb.REQUEST_SUBMIT:
                return await self.submit(who, data, origin)
            if chosen is Verb.EMERGENCY_TICK:
                return await self.emergency_tick(who, data, origin)
            request_id = str(data.get("requestId") or "").strip().upper()
            if not REQUEST_ID.match(request_id):
                await asyncio.to_thread(self.services.runtime.audit.append, "action.refused", actor=who.object_id,
                                        data={"verb": verb, "code": "malformed_request_id",
                                              "request_id": request_id[:40]})
                return message_card("This card does not refer to a valid request.")
            if chosen is Verb.REQUEST_REFRESH:
                # Teams refreshes every card view: read, authorise and render in one hop to a thread.
                record, card = await asyncio.to_thread(self._refresh, request_id, who, origin)
                if card is None:
                    raise await asyncio.to_thread(self.access.view_denied, request_id, who, verb,
                                                  exists=record is not None)
                return card
            # The record and the audit head in one read: a vote commits onto exactly this read (one round trip
            # more, not two, between the click and its grant job).
            raw, head = await asyncio.to_thread(self.services.runtime.store.read, request_id,
                                                self.services.runtime.audit.head_key)
            record = decode(raw) if raw is not None else None
            if record is None or not await self._may_see(record, who, origin):
                raise await asyncio.to_thread(self.access.view_denied, request_id, who, verb,
                                              exists=record is not None)
            if not self._bound(record, chosen, data, origin):
                await asyncio.to_thread(self.services.runtime.audit.append, "action.refused", actor=who.object_id,
                                        request_id=record.id, data={
                                            "verb": verb, "code": "card_out_of_date",
                                            "reply_to_id": (origin.reply_to_id or "")[:100],
                                            "conversation_id": origin.conversation_id[:200],
                                            "terms_given": bool(data.get("terms"))})
                return message_card(OUT_OF_DATE)
            if chosen in VOTES:
                verdict = Verdict.APPROVE if chosen is Verb.REQUEST_APPROVE else Verdict.DENY
                return await self._vote(request_id, who, verdict, data, origin, read=(raw, head))
            handler = {
                Verb.REQUEST_CANCEL: self.cancel,
                Verb.GRANT_DEACTIVATE: self.deactivate,
                Verb.GRANT_EXTEND: self.extend,
            }[chosen]
            return await handler(request_id, who, data, origin)
        except AccessError as exc:
            return message_card(exc.message)

    # --- who may see, and which card a click came from ------------------------------------------------------

    async def _may_see(self, record: RequestRecord, who: Who, origin: Origin) -> bool:
        return self._channel_copy(record, origin) or self.access.can_view(record, who)

    @staticmethod
    def _channel_copy(record: RequestRecord, origin: Origin) -> bool:
        """The click comes from the channel where this request's read-only copy was posted (the record's own card
        references say where): everyone in that channel already sees it."""
        return any(c.audience == "channel" and thread(c.conversation_id) == thread(origin.conversation_id)
                   for c in record.cards)

    def _refresh(self, request_id: str, who: Who, origin: Origin) -> tuple[RequestRecord | None,
                                                                          dict[str, Any] | None]:
        """(the record, the card this person may see), or a None card when they may not see it."""
        record = self.services.runtime.store.get(request_id)
        if record is None:
            return None, None
        party = self.access.can_view(record, who)
        if not party and not self._channel_copy(record, origin):
            return record, None
        return record, self._view_sync(record, who, party)

    @staticmethod
    def _bound(record: RequestRecord, verb: Verb, data: dict[str, Any], origin: Origin) -> bool:
        if verb in VOTES and not data.get("terms"):
            return False
        if not origin.reply_to_id:
            return False
        return any(c.activity_id == origin.reply_to_id and thread(c.conversation_id) == thread(origin.conversation_id)
                   for c in record.cards)

    async def _view(self, record: RequestRecord, who: Who, origin: Origin) -> dict[str, Any]:
        """What this clicker is shown: their own view if they are a party, else the channel's read-only copy (the
        only other way past `_may_see`)."""
        return await asyncio.to_thread(self._view_sync, record, who, self.access.can_view(record, who))

    def _view_sync(self, record: RequestRecord, who: Who, party: bool) -> dict[str, Any]:
        if party:
            return self._party_view(record, who)
        now = self._now()
        if record.state is State.PENDING_APPROVAL:
            return approval_base_card(record, now, self._teams_ids(record))
        return decided_card(record, now)

    # --- verbs ----------------------------------------------------------------------------------------------

    async def submit(self, who: Who, data: dict[str, Any], origin: Origin) -> dict[str, Any]:
        draft_id = str(data.get("draftId") or "").strip()[:64]
        if not draft_id:
            return message_card("This form is incomplete; type your request again.")
        form = IntakeInput.from_values(data)
        meta = await asyncio.to_thread(self.services.runtime.store.get_doc, "draft-meta", draft_id)
        provenance = provenance_of(meta, who, form)
        result = await asyncio.to_thread(self.access.submit, who, form, draft_id=draft_id, provenance=provenance)
        if meta and meta.get("requester") == who.object_id.lower() and not meta.get("audited") and result.accepted:
            await asyncio.to_thread(self.access.record_triage, who, draft_id, meta.get("suggestion"), form,
                                    meta.get("prefill"), provenance)
            meta["audited"] = True
            await asyncio.to_thread(self.services.runtime.store.put_doc, "draft-meta", draft_id, meta, DRAFT_TTL_S)
        if not result.accepted:
            return await self.intake.form_again(who, IntakeForm(
                entitlement=form.entitlement, duration_minutes=form.duration_minutes,
                justification=form.justification, ticket=form.ticket, target=form.target, affected=form.affected),
                draft_id=draft_id, field_errors=result.field_errors, problems=result.problems)
        record = result.record
        assert record is not None
        if origin.reply_to_id:
            record = await asyncio.to_thread(self.remember_card, record.id, CardRef(
                service_url=origin.service_url, conversation_id=origin.conversation_id,
                activity_id=origin.reply_to_id, audience="requester", user_id=origin.teams_id))
        # A denial's card lists its reasons: the notice does not repeat them.
        notice = "Denied by policy; the reasons are below." if record.state is State.DENIED else \
            record.decision.summary()
        return with_notice(request_card(record, now=self._now(), viewer="requester"), notice,
                           "good" if record.state is not State.DENIED else "attention")

    async def _vote(self, request_id: str, who: Who, verdict: Verdict, data: dict[str, Any], origin: Origin,
                    read: tuple[bytes | None, bytes | None] | None = None) -> dict[str, Any]:
        terms = data.get("terms")
        # A deny gives its reason; an approve its optional comment (the deny reason box is not part of it).
        given = data.get("comment") if verdict is Verdict.APPROVE else data.get("reason") or data.get("comment")
        reason = clean_input(given or "", 1000)
        altered = tuple(sorted(str(k)[:40] for k in set(data) - VOTE_FIELDS))[:10]
        result = await asyncio.to_thread(self.access.vote, request_id, who, verdict, reason=reason,
                                         terms=str(terms) if terms else None, altered=altered, read=read)
        card = await self._view(result.record, who, origin)
        return with_notice(card, result.message, "good" if result.changed else "warning")

    async def cancel(self, request_id: str, who: Who, data: dict[str, Any], origin: Origin) -> dict[str, Any]:
        result = await asyncio.to_thread(self.access.cancel, request_id, who)
        return with_notice(request_card(result.record, now=self._now(), viewer="requester"), result.message,
                           "good" if result.changed else "warning")

    async def deactivate(self, request_id: str, who: Who, data: dict[str, Any], origin: Origin) -> dict[str, Any]:
        result = await asyncio.to_thread(self.access.deactivate, request_id, who)
        card = await self._view(result.record, who, origin)
        return with_notice(card, result.message, "good" if result.changed else "warning")

    async def extend(self, request_id: str, who: Who, data: dict[str, Any], origin: Origin) -> dict[str, Any]:
        try:
            minutes = int(str(data.get("minutes", "")).strip())
        except ValueError:
            minutes = 0
        result = await asyncio.to_thread(self.access.extend, request_id, who, minutes)
        return with_notice(request_card(result.record, now=self._now(), viewer="requester"), result.message,
                           "good" if result.changed else "warning")

    async def emergency_tick(self, who: Who, data: dict[str, Any], origin: Origin) -> dict[str, Any]:
        """An item of an emergency incident's post-use checklist (`services.workflow.emergency.checklist`)."""
        result = await asyncio.to_thread(
            self.services.emergency_checklist.tick, who, str(data.get("incidentId") or ""),
            str(data.get("item") or ""), reply_to_id=origin.reply_to_id, conversation_id=origin.conversation_id)
        return with_notice(result.card, result.message, "good" if result.changed else "warning")

    # --- views ----------------------------------------------------------------------------------------------

    async def view_for(self, record: RequestRecord, who: Who) -> dict[str, Any]:
        """The card a party sees (callers check `AccessService.can_view` first)."""
        return await asyncio.to_thread(self._party_view, record, who)

    def _party_view(self, record: RequestRecord, who: Who) -> dict[str, Any]:
        """Approvers get buttons while the request is pending, the requester their own controls, an approver of a
        decided request its outcome."""
        now = self._now()
        oid = who.object_id.lower()
        if oid in {record.request.requester, record.request.target}:
            return request_card(record, now=now, viewer="requester")
        if record.state is State.PENDING_APPROVAL:
            if oid in self._current_approver_ids(record):
                return approval_card(record, now, self._teams_ids(record))
            return request_card(record, now=now, viewer="readonly")
        return decided_card(record, now)

    def _current_approver_ids(self, record: RequestRecord) -> set[str]:
        from policies.approval import current_approvers
        return {a.object_id for a in current_approvers(record, self.services.runtime.policies.current(), self._now())}

    def _teams_ids(self, record: RequestRecord) -> list[str]:
        from policies.approval import current_approvers
        approvers = current_approvers(record, self.services.runtime.policies.current(), self._now())
        return self.services.notifier.teams_ids(approvers)

    def remember_card(self, request_id: str, ref: CardRef) -> RequestRecord:
        now = self._now()

        def change(r: RequestRecord) -> RequestRecord:
            if any(c.conversation_id == ref.conversation_id and c.activity_id == ref.activity_id for c in r.cards):
                return r
            return r.with_changes(now, cards=(*r.cards, ref))

        return self.services.runtime.store.update(request_id, change)

    def _now(self) -> Any:
        return self.services.runtime.clock.now()

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
            request_id = str(data.get("requestId") or "").strip().upper()
            if not REQUEST_ID.match(request_id):
                await asyncio.to_thread(self.services.runtime.audit.append, "action.refused", actor=who.object_id,
                                        data={"verb": verb, "code": "malformed_request_id",
                                              "request_id": request_id[:40]})
                return message_card("This card does not refer to a valid request.")
            record = await asyncio.to_thread(self.services.runtime.store.get, request_id)
            if record is None or not await self._may_see(record, who, origin):
                raise await asyncio.to_thread(self.access.view_denied, request_id, who, verb,
                                              exists=record is not None)
            if chosen is Verb.REQUEST_REFRESH:
                return await self._view(record, who, origin)
            if not self._bound(record, chosen, data, origin):
                await asyncio.to_thread(self.services.runtime.audit.append, "action.refused", actor=who.object_id,
                                        request_id=record.id, data={
                                            "verb": verb, "code": "card_out_of_date",
                                            "reply_to_id": (origin.reply_to_id or "")[:100],
                                            "conversation_id": origin.conversation_id[:200],
                                            "terms_given": bool(data.get("terms"))})
                return message_card(OUT_OF_DATE)
            handler = {
                Verb.REQUEST_APPROVE: self.approve,
                Verb.REQUEST_DENY: self.deny,
                Verb.REQUEST_CANCEL: self.cancel,
                Verb.GRANT_DEACTIVATE: self.deactivate,
                Verb.GRANT_EXTEND: self.extend,
            }[chosen]
            return await handler(request_id, who, data, origin)
        except AccessError as exc:
            return message_card(exc.message)

    # --- who may see, and which card a click came from ------------------------------------------------------

    async def _may_see(self, record: RequestRecord, who: Who, origin: Origin) -> bool:
        return self._channel_copy(record, origin) or await asyncio.to_thread(self.access.can_view, record, who)

    def _channel_copy(self, record: RequestRecord, origin: Origin) -> bool:
        """The click comes from the approvals channel, where this request's read-only copy was posted: everyone
        in that channel already sees it."""
        channel = self.services.notifier.channel("approvals")
        if channel is None or thread(origin.conversation_id) != thread(channel.channel_id):
            return False
        return any(c.audience == "channel" and thread(c.conversation_id) == thread(origin.conversation_id)
                   for c in record.cards)

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
        if await asyncio.to_thread(self.access.can_view, record, who):
            return await self.view_for(record, who)
        now = self._now()
        if record.state is State.PENDING_APPROVAL:
            return approval_base_card(record, now, await asyncio.to_thread(self._teams_ids, record))
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

    async def approve(self, request_id: str, who: Who, data: dict[str, Any], origin: Origin) -> dict[str, Any]:
        return await self._vote(request_id, who, Verdict.APPROVE, data, origin)

    async def deny(self, request_id: str, who: Who, data: dict[str, Any], origin: Origin) -> dict[str, Any]:
        return await self._vote(request_id, who, Verdict.DENY, data, origin)

    async def _vote(self, request_id: str, who: Who, verdict: Verdict, data: dict[str, Any],
                    origin: Origin) -> dict[str, Any]:
        terms = data.get("terms")
        # A deny gives its reason; an approve its optional comment (the deny reason box is not part of it).
        given = data.get("comment") if verdict is Verdict.APPROVE else data.get("reason") or data.get("comment")
        reason = clean_input(given or "", 1000)
        altered = tuple(sorted(str(k)[:40] for k in set(data) - VOTE_FIELDS))[:10]
        result = await asyncio.to_thread(self.access.vote, request_id, who, verdict, reason=reason,
                                         terms=str(terms) if terms else None, altered=altered)
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

    # --- views ----------------------------------------------------------------------------------------------

    async def view_for(self, record: RequestRecord, who: Who) -> dict[str, Any]:
        """The card a party sees (callers check `AccessService.can_view` first): approvers get buttons while the
        request is pending, the requester their own controls, an approver of a decided request its outcome."""
        now = self._now()
        oid = who.object_id.lower()
        if oid in {record.request.requester, record.request.target}:
            return request_card(record, now=now, viewer="requester")
        if record.state is State.PENDING_APPROVAL:
            approvers = await asyncio.to_thread(self._current_approver_ids, record)
            if oid in approvers:
                ids = await asyncio.to_thread(self._teams_ids, record)
                return approval_card(record, now, ids)
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

"""From free text to a prefilled intake card. Triage only suggests; `prefill` re-checks every value against
the requester's eligibility and the policy, and the human submits (or changes) the form."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from cards.intake import EntitlementChoice, IntakeForm, intake_card
from policies.document import Entitlement, PolicyDocument
from policies.engine import eligible_entitlements
from policies.model import Principal
from services.composition import Services
from services.triage import TriageProvider, prefill
from services.workflow.access import Who

log = logging.getLogger(__name__)
# A form is filled in minutes; its draft (what triage suggested, for the audit at submit) lives two hours, and only
# a person's newest few are kept. A form submitted later still works; only the triage audit is lost.
DRAFT_TTL_S = 2 * 3600
DRAFTS_PER_PERSON = 5
DEFAULT_MINUTES = 60


def choices_for(policy: PolicyDocument, requester: Principal) -> list[EntitlementChoice]:
    out = []
    for ent in eligible_entitlements(policy, requester):
        longest = max([ent.max_duration, *(lane.max_duration for lane in ent.lanes)])
        out.append(EntitlementChoice(id=ent.id, display_name=ent.display_name, max_duration=longest,
                                     needs_approval=ent.approval == "required"))
    return out


def may_request_for_others(policy: PolicyDocument, requester: Principal, eligible: list[Entitlement]) -> bool:
    return any(policy.groups[k].object_id in requester.groups for e in eligible for k in e.request_for_others
               if k in policy.groups)


class Intake:
    def __init__(self, services: Services, triage: TriageProvider):
        self.services = services
        self.triage = triage

    async def start(self, who: Who, text: str) -> dict[str, Any]:
        access = self.services.access
        requester = await asyncio.to_thread(access.principal, who.object_id)
        policy = self.services.runtime.policies.current()
        eligible = eligible_entitlements(policy, requester)
        try:
            suggestion = await self.triage.suggest(text, policy)
        except Exception:  # noqa: BLE001 - triage is optional: any failure means no suggestion
            log.warning("triage failed; showing an empty form", exc_info=False)
            suggestion = None
        filled = prefill(suggestion, eligible, policy, raw_text=text)
        draft_id = uuid.uuid4().hex
        meta = {"requester": who.object_id.lower(),
                "suggestion": suggestion.model_dump(mode="json") if suggestion else None,
                "prefill": {"entitlement": filled.entitlement, "duration_minutes": filled.duration_minutes,
                            "justification": filled.justification, "ticket": filled.ticket, "target": filled.target},
                "dropped": list(filled.dropped)}
        await asyncio.to_thread(self.services.runtime.store.put_draft, who.object_id, draft_id, meta, DRAFT_TTL_S,
                                DRAFTS_PER_PERSON)
        minutes = filled.duration_minutes
        if minutes is None:
            # Nothing recognised: offer an hour (or less, if the suggested role allows less); the human can change it.
            chosen = next((e for e in eligible if e.id == filled.entitlement), None)
            cap = int(max([chosen.max_duration, *(la.max_duration for la in chosen.lanes)]).total_seconds() // 60) \
                if chosen else DEFAULT_MINUTES
            minutes = min(DEFAULT_MINUTES, cap)
        form = IntakeForm(entitlement=filled.entitlement, duration_minutes=minutes,
                          justification=filled.justification, ticket=filled.ticket, target=filled.target)
        note = filled.note
        if filled.dropped:
            note = ((note + " ") if note else "") + " ".join(filled.dropped)
        return intake_card(choices_for(policy, requester), form, draft_id=draft_id, triage_note=note,
                           allow_other_target=may_request_for_others(policy, requester, eligible))

    async def form_again(self, who: Who, form: IntakeForm, *, draft_id: str, field_errors: dict[str, str],
                         problems: list[str]) -> dict[str, Any]:
        requester = await asyncio.to_thread(self.services.access.principal, who.object_id)
        policy = self.services.runtime.policies.current()
        eligible = eligible_entitlements(policy, requester)
        return intake_card(choices_for(policy, requester), form, draft_id=draft_id, field_errors=field_errors,
                           problems=problems,
                           allow_other_target=may_request_for_others(policy, requester, eligible) or bool(form.target))

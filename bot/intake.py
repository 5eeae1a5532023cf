"""From free text to a prefilled intake card. Triage only suggests; `prefill` re-checks every value against
the requester's eligibility and the policy, and the human submits (or changes) the form."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from cards.intake import EntitlementChoice, IntakeForm, intake_card
from policies.closing import asks_affected_account
from policies.document import Entitlement, PolicyDocument
from policies.engine import eligible_bundles, eligible_entitlements, longest_for
from policies.model import Principal
from policies.provenance import Provenance, settle
from services.composition import Services
from services.triage import TriageProvider, prefill
from services.workflow.access import IntakeInput, Who

log = logging.getLogger(__name__)
# A form is filled in minutes; its draft (what triage suggested, for the audit at submit) lives two hours, and only
# a person's newest few are kept. A form submitted later still works; only the triage audit is lost.
DRAFT_TTL_S = 2 * 3600
DRAFTS_PER_PERSON = 5
DEFAULT_MINUTES = 60


def choices_for(policy: PolicyDocument, requester: Principal) -> list[EntitlementChoice]:
    out = []
    for ent in eligible_entitlements(policy, requester):
        # The longest this requester can get: a break-glass-only member sees the lane's limit, not the role's.
        longest = longest_for(policy, requester, ent) or ent.max_duration
        out.append(EntitlementChoice(id=ent.id, display_name=ent.assignable().describe(), max_duration=longest,
                                     needs_approval=ent.approval == "required", is_group=ent.kind == "group"))
    # Bundles after the roles, only those whose every member this requester may ask for; the longest is the
    # shortest of the members' (the bundle ends as one).
    by_id = {c.id: c for c in out}
    for key in eligible_bundles(policy, requester):
        members = [by_id[m] for m in policy.bundles[key].entitlements]
        out.append(EntitlementChoice(
            id=key, display_name=f"Bundle: {policy.bundle_name(key)} — " + " + ".join(m.display_name for m in members),
            max_duration=min(m.max_duration for m in members), needs_approval=any(m.needs_approval for m in members)))
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
        filled = prefill(suggestion, eligible, policy, raw_text=text, requester=requester)
        allow_other_target = may_request_for_others(policy, requester, eligible)
        origins = dict(filled.origins)
        target = filled.target
        if target and not allow_other_target:
            target = ""  # the field is not on this requester's card, so nothing may be prefilled into it
            origins.pop("target", None)
        minutes = filled.duration_minutes
        if minutes is None:
            # Nothing recognised: offer an hour (or less, if the suggested role allows this requester less).
            chosen = next((c for c in choices_for(policy, requester) if c.id == filled.entitlement), None)
            longest = chosen.max_duration if chosen else None
            minutes = min(DEFAULT_MINUTES, int(longest.total_seconds() // 60)) if longest else DEFAULT_MINUTES
            origins["duration_minutes"] = "default"
        form = IntakeForm(entitlement=filled.entitlement, duration_minutes=minutes,
                          justification=filled.justification, ticket=filled.ticket, target=target)
        asked = policy.entitlement(filled.asked) if filled.asked else None
        draft_id = uuid.uuid4().hex
        # Server-side truth for the submit: what the form showed, and where each value came from. The card's
        # values come back as hostile data; provenance is computed from this record, never from them.
        meta = {"requester": who.object_id.lower(),
                "suggestion": suggestion.model_dump(mode="json") if suggestion else None,
                "prefill": {"entitlement": form.entitlement, "duration_minutes": form.duration_minutes,
                            "justification": form.justification, "ticket": form.ticket, "target": form.target},
                "origins": origins, "asked": asked.id if asked else None,
                "asked_name": asked.display_name if asked else "",
                "dropped": list(filled.dropped)}
        await asyncio.to_thread(self.services.runtime.store.put_draft, who.object_id, draft_id, meta, DRAFT_TTL_S,
                                DRAFTS_PER_PERSON)
        return intake_card(choices_for(policy, requester), form, draft_id=draft_id, triage_notes=filled.notes,
                           suggested_by_ai=frozenset(f for f, o in origins.items() if o == "ai"),
                           allow_other_target=allow_other_target,
                           ask_affected=asks_affected_account(policy, [e.id for e in eligible]))

    async def form_again(self, who: Who, form: IntakeForm, *, draft_id: str, field_errors: dict[str, str],
                         problems: list[str]) -> dict[str, Any]:
        requester = await asyncio.to_thread(self.services.access.principal, who.object_id)
        policy = self.services.runtime.policies.current()
        eligible = eligible_entitlements(policy, requester)
        meta = await asyncio.to_thread(self.services.runtime.store.get_doc, "draft-meta", draft_id)
        return intake_card(choices_for(policy, requester), form, draft_id=draft_id, field_errors=field_errors,
                           problems=problems, suggested_by_ai=still_suggested_by_ai(meta, who, form),
                           allow_other_target=may_request_for_others(policy, requester, eligible) or bool(form.target),
                           ask_affected=asks_affected_account(policy, [e.id for e in eligible]) or bool(form.affected))


def still_suggested_by_ai(meta: dict[str, Any] | None, who: Who, form: IntakeForm) -> frozenset[str]:
    """Fields the model chose that the person has not changed yet (from the stored draft, never from the card)."""
    if not meta or meta.get("requester") != who.object_id.lower():
        return frozenset()
    shown = {"entitlement": form.entitlement, "duration_minutes": form.duration_minutes,
             "justification": form.justification, "ticket": form.ticket, "target": form.target}
    prefilled = meta.get("prefill") or {}
    return frozenset(f for f, o in (meta.get("origins") or {}).items()
                     if o == "ai" and f in shown and prefilled.get(f) == shown[f])


def provenance_of(meta: dict[str, Any] | None, who: Who, submitted: IntakeInput) -> Provenance:
    """Where each submitted value came from, from the stored draft of this requester. Without one (expired, or
    another person's draft id) every value counts as typed on the form by the person who submitted it."""
    if not meta or meta.get("requester") != who.object_id.lower():
        meta = {}
    values = {"entitlement": submitted.entitlement, "duration_minutes": submitted.duration_minutes,
              "justification": submitted.justification, "ticket": submitted.ticket, "target": submitted.target}
    return settle(meta.get("prefill") or {}, meta.get("origins") or {}, values,
                  asked=meta.get("asked") or None, asked_name=str(meta.get("asked_name") or ""))

"""Write the README's example cards as Adaptive Card JSON, drawn by the product's own card functions.

    .venv/bin/python docs/screenshots/make_cards.py      # then: node docs/screenshots/render.mjs

The story is the demo tenant's: on Monday 2026-11-30 at 10:00 in Berlin (Kai Lindqvist is on the Identity On-Call
shift), Sam Okafor asks for Global Administrator to fix a Conditional Access lockout (P1 INC0012345); the
request goes to the on-call identity lead, Dana Whitfield, who approves; the role is assigned for 30 minutes.
The decision comes from the real policy engine and `policies/default.yaml`, the intake form from the rules
triage, so the pictures change when the product does. Writes intake.json, approval.json and receipt.json
next to this file.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bot.intake import choices_for, may_request_for_others  # noqa: E402
from cards.approval import approval_card  # noqa: E402
from cards.intake import IntakeForm, intake_card  # noqa: E402
from cards.receipt import grant_receipt_card  # noqa: E402
from policies.engine import eligible_entitlements, evaluate  # noqa: E402
from policies.lifecycle import Event  # noqa: E402
from policies.model import Actor, Approval, Facts, Grant, GrantRequest, Principal, TicketFacts, Verdict  # noqa: E402
from policies.record import RequestRecord  # noqa: E402
from services.state.policy_source import read_policy  # noqa: E402
from services.triage import prefill  # noqa: E402
from services.triage.rules import RulesTriage  # noqa: E402
from services.workflow.receipts import rollback_plan  # noqa: E402

OUT = Path(__file__).resolve().parent
TEXT = "Need Global Admin for 30 minutes to fix the Conditional Access lockout, INC0012345"
NOW = datetime(2026, 11, 30, 10, 0, tzinfo=ZoneInfo("Europe/Berlin")).astimezone(ZoneInfo("UTC"))
SAM = Principal(object_id="cccccccc-0000-0000-0000-000000000003", upn="sam@contoso.example",
                mail="sam@contoso.example", display_name="Sam Okafor",
                groups=frozenset({"11111111-0000-0000-0000-000000000002"}))  # Identity On-Call
DANA = Actor(object_id="cccccccc-0000-0000-0000-000000000002", name="Dana Whitfield")
APPROVER_MRIS = ["29:dana", "29:bo"]
TICKET = TicketFacts(number="INC0012345", priority=1, state="In Progress", caller="sam@contoso.example",
                     assignment_group="Identity On-Call",
                     assignment_group_members=frozenset({"sam@contoso.example", "kai@contoso.example"}),
                     short_description="Conditional Access policy misfire locked out all admins",
                     url="https://contoso.service-now.example/nav_to.do?uri=incident.do?sys_id=demo")


def cards() -> dict[str, dict[str, Any]]:
    policy = read_policy(ROOT / "policies" / "default.yaml")
    eligible = eligible_entitlements(policy, SAM)

    suggestion = asyncio.run(RulesTriage().suggest(TEXT, policy))
    filled = prefill(suggestion, eligible, policy, raw_text=TEXT)
    form = IntakeForm(entitlement=filled.entitlement, duration_minutes=filled.duration_minutes,
                      justification=filled.justification, ticket=filled.ticket, target=filled.target)
    intake = intake_card(choices_for(policy, SAM), form, draft_id="5f0c2e9a8b7d4c61a3e2f1d0c9b8a7e6",
                         triage_note=filled.note, allow_other_target=may_request_for_others(policy, SAM, eligible))

    request = GrantRequest(id="BG-7K3M9Q", requester=SAM.object_id, target=SAM.object_id,
                           entitlement=form.entitlement or "global-admin",
                           duration=timedelta(minutes=form.duration_minutes or 30),
                           justification=form.justification, ticket=form.ticket, created_at=NOW)
    decision = evaluate(request, Facts(requester=SAM, target=SAM, ticket=TICKET), NOW, policy)
    record = RequestRecord(id=request.id, request=request, decision=decision, requester_name=SAM.display_name,
                           target_name=SAM.display_name, target_upn=SAM.upn, ticket_facts=TICKET,
                           created_at=NOW, updated_at=NOW)
    record = record.apply(Event.SENT_FOR_APPROVAL, Actor.system("policy"), NOW, reason=decision.summary())
    approval = approval_card(record, NOW + timedelta(minutes=1), APPROVER_MRIS)

    voted, start = NOW + timedelta(minutes=3), NOW + timedelta(minutes=3, seconds=20)
    vote = Approval(request_id=record.id, approver=DANA.object_id, approver_name=DANA.name,
                    verdict=Verdict.APPROVE, at=voted, request_version=record.version)
    record = record.apply(Event.APPROVED, DANA, voted, approvals=(vote,))
    record = record.apply(Event.ACTIVATION_STARTED, Actor.system("worker"), start)
    grant = Grant(request_id=record.id, principal_id=SAM.object_id, role_definition_id=decision.role_definition_id,
                  starts_at=start, ends_at=start + request.duration,
                  schedule_request_id="4dcc9d3f-a316-4f76-b982-dbbbbc74a728")
    record = record.apply(Event.ACTIVATED, Actor.system("worker"), start, grant=grant)
    receipt = grant_receipt_card(record, start + timedelta(seconds=30), rollback_plan(record))
    return {"intake": intake, "approval": approval, "receipt": receipt}


def main() -> int:
    for name, card in cards().items():
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cards, the receipt, the chat-command list and the ticket note name the group and the access kind; a hostile
group display name stays inert in every sink."""

from __future__ import annotations

from cards.approval import approval_card
from cards.lists import requests_list_card
from cards.receipt import grant_receipt_card
from cards.status import request_card
from policies.assignable import Assignable
from policies.lifecycle import State
from policies.model import Grant, GrantMode
from policies.text import one_line
from services.workflow.evidence import evidence, evidence_markdown
from services.workflow.receipts import Receipts, rollback_plan
from tests.unit.cards.factory import APPROVER, NOW, make_decision, make_record
from tests.unit.cards.helpers import all_text, check_card, facts

GROUP = "22222222-0000-0000-0000-000000000001"
# What is left of a hostile name once the policy loader cleaned it (one line, no invisible characters).
HOSTILE = one_line("Exchange\u202e Admins\u200b [APPROVED](https://evil.example) <b>x</b>\nwww.evil.com")


def group_record(state: State, name: str = "Exchange Admins (JIT)", access: str = "member",
                 mode: GrantMode = GrantMode.PIM):
    target = Assignable.group(GROUP, access, name)
    decision = make_decision(entitlement="exchange-admins", entitlement_name=target.describe(),
                             role_definition_id="", target=target)
    record = make_record(state, decision=decision)
    if record.grant is not None:
        grant = Grant(request_id=record.id, principal_id=record.request.target, scope=access, target=target,
                      mode=mode, starts_at=record.grant.starts_at, ends_at=record.grant.ends_at,
                      assignment_id=f"{GROUP}_{access}_x")
        record = record.model_copy(update={"grant": grant})
    return record


def test_the_receipt_names_the_group_the_access_and_how_it_was_given():
    card = grant_receipt_card(group_record(State.ACTIVE, access="owner", mode=GrantMode.DIRECT), NOW, "rollback")
    check_card(card)
    shown = facts(card)
    assert shown["Group ownership"] == "Exchange Admins (JIT) (group owner)"
    assert shown["Grant mode"] == "Direct group ownership (removed by breakglass at the end)"
    assert "Role" not in shown


def test_request_and_approval_cards_and_the_list_name_the_group_membership():
    record = group_record(State.PENDING_APPROVAL)
    for card in (request_card(record, now=NOW), approval_card(record, now=NOW, approver_ids=[APPROVER]),
                 requests_list_card("Your requests", [record], NOW, "none")):
        check_card(card)
        assert "Exchange Admins (JIT) (group member)" in all_text(card)
    assert facts(request_card(record, now=NOW))["Group membership"] == "Exchange Admins (JIT) (group member)"


def test_the_intake_form_offers_groups_by_name_and_access_under_role_or_group():
    from datetime import timedelta

    from cards.intake import EntitlementChoice, IntakeForm, intake_card
    from tests.unit.cards.helpers import inputs

    choices = [EntitlementChoice("global-admin", "Global Administrator", timedelta(hours=4), True),
               EntitlementChoice("exchange-admins", "Exchange Admins (JIT) (group member)", timedelta(hours=4),
                                 False, is_group=True)]
    form = IntakeForm(entitlement=None, duration_minutes=None, justification="", ticket="", target="")
    card = intake_card(choices, form, draft_id="draft-1")
    check_card(card)
    field = next(v for v in inputs(card).values() if v.get("label") == "Role or group")
    assert "Exchange Admins (JIT) (group member) (up to 4 hours, no approval)" in [c["title"] for c in
                                                                                   field["choices"]]


def test_a_hostile_group_name_is_inert_on_cards_notes_and_the_evidence_pack():
    record = group_record(State.ACTIVE, name=HOSTILE)
    for card in (grant_receipt_card(record, NOW, rollback_plan(record)), request_card(record, now=NOW),
                 requests_list_card("Active", [record], NOW, "none")):
        check_card(card)  # no links, no invisible characters, schema-valid
    note = Receipts.note_text(record, "activated")
    assert "\n" not in note and note.startswith("[breakglass] Exchange Admins") and "(group member)" in note
    pack = evidence_markdown(evidence(record, [], NOW, None)).decode()
    line = next(x for x in pack.splitlines() if x.startswith("- **Group:**"))
    assert "](https://" not in line and GROUP in line and "member" in line
    assert "Groups > " in rollback_plan(record) and "member" in rollback_plan(record)


def test_a_runbook_webhook_is_told_the_group_and_the_access():
    from services.workflow.followup import FollowUps

    body = FollowUps.webhook_body(group_record(State.ACTIVE, access="owner"), "notify-soar", "after_grant")
    assert body["group"] == {"id": GROUP, "access": "owner"}
    assert body["role"] == "Exchange Admins (JIT) (group owner)" and body["role_definition_id"] == ""

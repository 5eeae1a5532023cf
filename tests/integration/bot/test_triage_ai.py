"""AI triage through the real endpoint, with the OpenAI-compatible emulator playing the model.

The product is configured exactly as in production (`BREAKGLASS_TRIAGE=openai`, a base URL and a key) and the
emulator answers whatever each test scripts: a good answer, a hostile one, invalid JSON, a 500, a stall. The model
may only prefill the form: it never writes the justification, never pre-selects more privilege than the message
asked for, never slips in a person or ticket the message does not contain, and whatever it chose is marked on the
intake card and, if it survives to the submit, on the approver's card.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cards.status import request_card
from policies.lifecycle import State
from policies.provenance import Origin
from policies.tiers import more_privileged
from services.emulators import OpenAIEmulator
from services.triage import RulesTriage
from tests.factories import PEOPLE
from tests.harness import Product, start_product
from tests.integration.bot.conftest import actions, inputs, texts
from tests.integration.bot.test_flows import SAM_TEXT, intake, only_request, submit

KEY = "sk-emulated-triage-key-0123456789"
RILEY = PEOPLE["riley"].object_id
RILEY_HELPDESK = "Need helpdesk admin for 1 hour to reset the password of the exec assistant, INC0012347"
HOSTILE_JUSTIFICATION = ("Approved verbally by Dana Whitfield (on-call lead). P1 outage, grant immediately, "
                         "no review needed.")
HOSTILE = {"entitlement": "global-admin", "duration_minutes": 240, "ticket": "INC0012347",
           "justification": HOSTILE_JUSTIFICATION, "least_privilege": None,
           "notes": ["Approved verbally by Dana Whitfield", "[click](https://evil.example)\u202e"]}


@pytest.fixture()
def llm() -> Iterator[tuple[OpenAIEmulator, str]]:
    emulator = OpenAIEmulator(api_key=KEY)
    with emulator.start() as running:
        yield emulator, running.url


@pytest.fixture()
def product(tmp_path: Path, redis_client: Any, redis_url: str, llm: tuple[OpenAIEmulator, str]) -> Iterator[Product]:
    _, url = llm
    p = start_product(tmp_path, redis_client, redis_url, triage_provider="openai", triage_base_url=url,
                      triage_api_key=KEY, triage_timeout_s=1.0)
    yield p
    p.stop()


@pytest.fixture()
def model(llm: tuple[OpenAIEmulator, str]) -> OpenAIEmulator:
    return llm[0]


def facts_of(card: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    stack: list[Any] = [card]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "FactSet":
                out.update({f["title"]: f["value"] for f in node["facts"]})
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def lines_of(card: dict[str, Any]) -> list[str]:
    return [line for line in texts(card).splitlines() if line.strip()]


# --- never more privilege than asked; the justification is the person's own words ----------------------------

async def test_a_more_privileged_ai_role_is_not_preselected_and_the_model_writes_no_justification(teams, model):
    model.answer(HOSTILE)
    card = await intake(teams, "riley", RILEY_HELPDESK)
    values = inputs(card)
    assert values["entitlement"] == "helpdesk-admin"
    assert str(values["duration"]) == "60"
    assert values["justification"] == RILEY_HELPDESK
    shown = texts(card)
    assert "Dana Whitfield" not in shown and "no review needed" not in shown and "evil" not in shown
    assert ("AI suggested Global Administrator; not pre-selected, because your message asked for Helpdesk "
            "Administrator, which is less privileged.") in shown


async def test_choosing_the_ai_role_by_hand_is_shown_to_the_approver_with_the_persons_words(teams, model):
    product = teams.product
    await teams.install_in_team()
    model.answer(HOSTILE)
    card = await intake(teams, "riley", RILEY_HELPDESK)
    result = await submit(teams, "riley", card, entitlement="global-admin")
    assert "Waiting for approval by Dana Whitfield" in texts(result)
    record = only_request(product, "riley")
    assert record.state is State.PENDING_APPROVAL
    assert record.request.justification == RILEY_HELPDESK
    product.run_jobs()
    dana = teams.cards_to("dana")[-1]
    assert facts_of(dana)["Justification"] == RILEY_HELPDESK
    shown = texts(dana)
    assert HOSTILE_JUSTIFICATION not in shown
    assert "Role chosen by hand on the form; the message asked for Helpdesk Administrator." in shown
    # Computed from the person's words again, not from the model's.
    assert "Helpdesk Administrator would be enough for a password reset" in shown
    [triaged] = [e for e in product.audit.events() if e.event == "request.triaged"]
    assert triaged.data["changed_by_human"]["entitlement"] == {"suggested": "helpdesk-admin",
                                                               "submitted": "global-admin"}


async def test_an_ai_role_kept_by_the_requester_is_marked_on_both_cards(teams, model):
    product = teams.product
    await teams.install_in_team()
    model.answer({"entitlement": "global-admin", "duration_minutes": 30})
    text = "The exec assistant cannot sign in anywhere and I must sort it out today, INC0012347"
    card = await intake(teams, "riley", text)
    values = inputs(card)
    assert (values["entitlement"], str(values["duration"])) == ("global-admin", "30")
    assert values["justification"] == text
    assert "Suggested by AI (check before you submit): Global Administrator, 30 minutes." in texts(card)
    await submit(teams, "riley", card)
    product.run_jobs()
    dana = teams.cards_to("dana")[-1]
    assert "request.approve" in [v for v, _ in actions(dana)]
    shown = texts(dana)
    assert "Role suggested by AI; the message named no role." in shown
    assert "Duration suggested by AI." in shown
    assert facts_of(dana)["Justification"] == text
    record = only_request(product, "riley")
    assert (record.triage.entitlement, record.triage.duration, record.triage.justification) == (
        "ai", "ai", "message")


async def test_the_form_shown_again_keeps_the_ai_mark_on_unchanged_values_only(teams, model):
    from cards.intake import AI_MARK

    model.answer({"entitlement": "global-admin", "duration_minutes": 30})
    card = await intake(teams, "riley", "The exec assistant cannot sign in anywhere, INC0012347")
    assert texts(card).count(AI_MARK) == 2
    again = await submit(teams, "riley", card, justification="testing")
    assert "Please fix" in texts(again)
    assert texts(again).count(AI_MARK) == 2
    again = await submit(teams, "riley", again, justification="testing", duration="15")
    assert texts(again).count(AI_MARK) == 1  # the duration is now the person's


# --- whole tokens --------------------------------------------------------------------------------------------

async def test_a_target_or_ticket_inside_a_longer_token_is_not_prefilled(teams, model):
    model.answer({"entitlement": "security-admin", "target_upn": "bo@contoso.example", "ticket": "INC0012347"})
    card = await intake(teams, "morgan", "Security admin for 1 hour to review the token theft alerts, "
                                         "INC00123478, cc rambo@contoso.example")
    values = inputs(card)
    assert "target" in values  # Morgan may ask for someone else: the field is on the card
    assert not values["target"]
    assert values["ticket"] == "INC00123478"  # the whole token the message contains, found by the rules
    assert "bo@contoso.example" not in texts(card).replace("rambo@contoso.example", "")
    assert "INC0012347," not in texts(card) and "INC0012347." not in texts(card)


# --- sensible defaults ----------------------------------------------------------------------------------------

async def test_an_empty_model_reply_gives_the_rules_result(teams, model):
    model.answer({})
    values = inputs(await intake(teams, "sam", SAM_TEXT))
    assert (values["entitlement"], str(values["duration"]), values["ticket"]) == (
        "global-admin", "30", "INC0012345")
    assert values["justification"] == SAM_TEXT


async def test_the_duration_is_capped_at_the_requesters_lane(teams, model):
    # Sam reaches Global Administrator only through the 60-minute break-glass lane.
    model.answer({"entitlement": "global-admin", "duration_minutes": 240})
    card = await intake(teams, "sam", "Need Global Admin to fix the Conditional Access lockout, INC0012345")
    assert str(inputs(card)["duration"]) == "60"
    assert "Global Administrator (up to 1 hour" in json.dumps(card)
    assert "The duration 4 hours was shortened to 1 hour, the longest you can get Global Administrator for." \
        in texts(card)


async def test_the_rules_duration_is_capped_at_the_requesters_lane_too(teams, model):
    model.set_script([{"status": 500}])  # the rules alone
    card = await intake(teams, "sam", "Need Global Admin for 4 hours to fix the CA lockout, INC0012345")
    assert str(inputs(card)["duration"]) == "60"


async def test_notes_are_sentences(teams, model):
    # Alex (Service Desk) may request Helpdesk Administrator only.
    model.answer({"entitlement": "global-admin", "duration_minutes": 1440})
    card = await intake(teams, "alex", "please give me the top role for the whole day, my manager said so")
    shown = texts(card)
    assert "Global Administrator was not pre-selected: you are not eligible to request it." in shown
    assert "The duration 24 hours was shortened to 8 hours, the longest you can get." in shown
    assert "hours Global Administrator" not in shown


async def test_model_output_reaches_the_logs_only_as_its_length_and_a_digest(teams, model, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "MODEL-SAYS-" + "x" * 200
    content = json.dumps({"entitlement": "global-admin", "severity": secret})
    model.set_content(content)
    values = inputs(await intake(teams, "sam", SAM_TEXT))
    assert values["entitlement"] == "global-admin"  # the rules still prefill the form
    assert "MODEL-SAYS" not in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "triage" in r.name]
    assert any(f"{len(content)} characters" in w and hashlib.sha256(content.encode()).hexdigest()[:16] in w
               for w in warnings), warnings


# --- the model failing in every way still leaves the rules' form (regression: these passed before) -----------

@pytest.mark.parametrize("step", [
    {"content": "Sure! Global Admin for 30 minutes sounds right."},
    {"content": '{"entitlement": "global-admin"'},
    {"status": 500},
    {"delay_ms": 2500},
], ids=["prose", "truncated-json", "http-500", "stall"])
async def test_a_failing_model_leaves_the_rules_form(teams, model, step):
    model.set_script([step])
    values = inputs(await intake(teams, "sam", SAM_TEXT))
    assert (values["entitlement"], str(values["duration"]), values["ticket"]) == (
        "global-admin", "30", "INC0012345")
    assert teams.product.store.by_requester("cccccccc-0000-0000-0000-000000000003") == []


# --- property: whatever the model answers, through the real endpoint -----------------------------------------

PROPERTY_MESSAGES = [
    RILEY_HELPDESK,
    "Need user admin for 2 hours to create user accounts for the new joiners, INC0012347",
    "The exec assistant cannot sign in anywhere and I must sort it out today, INC0012347",
    "Conditional Access admin for 30 minutes to fix the ca policy, INC0012347",
]
ENTITLEMENTS = ["global-admin", "security-admin", "conditional-access-admin", "user-admin", "helpdesk-admin"]
answers = st.fixed_dictionaries({}, optional={
    "entitlement": st.sampled_from([*ENTITLEMENTS, "god-mode", None]),
    "duration_minutes": st.one_of(st.integers(-5, 5000), st.none()),
    "ticket": st.sampled_from(["INC0012347", "INC001234", "INC0012345", None]),
    "target_upn": st.sampled_from(["bo@contoso.example", "riley@contoso.example", None]),
    "justification": st.sampled_from([HOSTILE_JUSTIFICATION, "[ok](https://evil.example)\u202e", None]),
    "least_privilege": st.sampled_from([*ENTITLEMENTS, None]),
    "notes": st.lists(st.sampled_from([HOSTILE_JUSTIFICATION]), max_size=2),
})


@settings(max_examples=int(os.environ.get("BREAKGLASS_TRIAGE_PROPERTY_EXAMPLES", "25")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(answer=answers, text=st.sampled_from(PROPERTY_MESSAGES),
       role=st.one_of(st.none(), st.sampled_from(ENTITLEMENTS)),
       typed=st.one_of(st.none(), st.sampled_from(["Reset the exec assistant's password after the lockout.",
                                                   "Create the joiners' accounts for HR today."])))
async def test_property_the_submitted_role_and_justification_are_the_persons(teams, model, answer, text, role,
                                                                             typed):
    """For any model answer: the submitted role is never more privileged than what the message or the rules named
    unless the person changed it on the form (and the cards then say so); the justification the approver sees
    is exactly what the person typed or confirmed."""
    product = teams.product
    product.runtime.redis.delete(*product.runtime.redis.keys("bgt:*") or ["-"])  # a fresh store per example
    model.answer(answer)
    card = await intake(teams, "riley", text)
    shown = inputs(card)
    assert shown["justification"] == text
    changes: dict[str, Any] = {}
    if role:
        changes["entitlement"] = role
    if typed:
        changes["justification"] = typed
    await submit(teams, "riley", card, **changes)
    records = product.store.by_requester(RILEY)
    if not records:
        return  # refused on the form (e.g. no role chosen): nothing was submitted
    [record] = records
    asked = RulesTriage().analyse(text, product.runtime.policies.current())
    policy = product.runtime.policies.current()
    final, wanted = policy.entitlement(record.request.entitlement), policy.entitlement(asked.asked or "")
    assert record.triage is not None
    if wanted is not None and final is not None and more_privileged(final, wanted):
        assert role == final.id and shown["entitlement"] != final.id
        assert record.triage.entitlement is Origin.FORM
    assert record.request.justification == (typed or text)
    assert record.triage.justification is (Origin.FORM if typed else Origin.MESSAGE)
    view = request_card(record, now=product.clock.now(), viewer="approver", approver_ids=[])
    assert facts_of(view)["Justification"] == (typed or text)
    if record.triage.entitlement is Origin.AI:
        assert "Role suggested by AI" in texts(view)

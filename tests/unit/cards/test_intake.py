from __future__ import annotations

from datetime import timedelta

from cards.intake import EntitlementChoice, IntakeForm, intake_card
from tests.unit.cards.helpers import all_text, check_card, executes, inputs, texts

CHOICES = [
    EntitlementChoice("global-admin", "Global Administrator", timedelta(hours=4), True),
    EntitlementChoice("helpdesk-admin", "Helpdesk Administrator", timedelta(hours=2), False),
]
EMPTY = IntakeForm(entitlement=None, duration_minutes=None, justification="", ticket="", target="")
FILLED = IntakeForm(entitlement="helpdesk-admin", duration_minutes=90,
                    justification="Reset MFA for Sam after a phone loss.\nSecond line.", ticket="INC0012345",
                    target="sam@contoso.example")


def body_ids(card: dict) -> list[str]:
    return [e.get("id") or e.get("text") or e["type"] for e in card["body"]]


def test_inputs_have_the_ids_the_bot_reads() -> None:
    card = intake_card(CHOICES, EMPTY, draft_id="d-1")
    check_card(card)
    fields = inputs(card)
    assert set(fields) == {"entitlement", "duration", "justification", "ticket"}
    assert fields["entitlement"]["type"] == "Input.ChoiceSet" and fields["entitlement"]["style"] == "compact"
    assert fields["justification"]["isMultiline"] is True and fields["justification"]["isRequired"] is True
    assert fields["justification"]["maxLength"] == 2000
    assert fields["ticket"]["placeholder"] == "INC0012345"


def test_entitlement_choices_show_max_duration_and_approval() -> None:
    choices = inputs(intake_card(CHOICES, EMPTY, draft_id="d-1"))["entitlement"]["choices"]
    assert choices == [
        {"title": "Global Administrator (up to 4 hours, needs approval)", "value": "global-admin"},
        {"title": "Helpdesk Administrator (up to 2 hours, no approval)", "value": "helpdesk-admin"},
    ]


def test_duration_choices_stop_at_the_longest_maximum_and_round_trip_as_minutes() -> None:
    duration = inputs(intake_card(CHOICES, EMPTY, draft_id="d-1"))["duration"]
    assert [c["value"] for c in duration["choices"]] == ["15", "30", "60", "120", "240"]
    assert [c["title"] for c in duration["choices"]][:3] == ["15 minutes", "30 minutes", "1 hour"]
    assert "value" not in duration


def test_prefilled_duration_outside_the_list_is_added() -> None:
    duration = inputs(intake_card(CHOICES, FILLED, draft_id="d-1"))["duration"]
    assert [c["value"] for c in duration["choices"]] == ["15", "30", "60", "90", "120", "240"]
    assert duration["value"] == "90"


def test_prefilled_duration_beyond_every_maximum_is_not_offered() -> None:
    form = IntakeForm("global-admin", 99 * 60, "x", "", "")
    duration = inputs(intake_card(CHOICES, form, draft_id="d-1"))["duration"]
    assert [c["value"] for c in duration["choices"]] == ["15", "30", "60", "120", "240"]
    assert "value" not in duration


def test_user_input_is_kept_when_the_card_comes_back() -> None:
    card = intake_card(CHOICES, FILLED, draft_id="d-1", allow_other_target=True)
    fields = inputs(card)
    assert fields["entitlement"]["value"] == "helpdesk-admin"
    assert fields["justification"]["value"] == FILLED.justification
    assert fields["ticket"]["value"] == "INC0012345"
    assert fields["target"]["value"] == "sam@contoso.example"


def test_unknown_prefilled_entitlement_is_not_selected() -> None:
    form = IntakeForm("security-admin", 30, "x", "", "")
    assert "value" not in inputs(intake_card(CHOICES, form, draft_id="d-1"))["entitlement"]


def test_target_only_when_requesting_for_others_is_allowed() -> None:
    assert "target" not in inputs(intake_card(CHOICES, FILLED, draft_id="d-1"))
    target = inputs(intake_card(CHOICES, EMPTY, draft_id="d-1", allow_other_target=True))["target"]
    assert target["placeholder"] == "leave empty for yourself"


def test_field_errors_appear_right_under_their_field() -> None:
    card = intake_card(CHOICES, FILLED, draft_id="d-1", allow_other_target=True,
                       field_errors={"justification": "Say what you will fix.", "target": "No such user."})
    check_card(card)
    ids = body_ids(card)
    assert ids[ids.index("justification") + 1] == "Say what you will fix."
    assert ids[ids.index("target") + 1] == "No such user."
    assert ids[ids.index("ticket") + 1] == "target"  # no error, no extra block
    error = card["body"][ids.index("justification") + 1]
    assert error["type"] == "TextBlock" and error["color"] == "attention"


def test_problems_are_listed_at_the_top() -> None:
    card = intake_card(CHOICES, FILLED, draft_id="d-1", problems=["Duration 8 hours exceeds the maximum."],
                       field_errors={"lane": "Unknown lane."})
    top = card["body"][1]
    assert top["type"] == "Container" and top["style"] == "attention"
    assert texts(top) == ["Please fix:", "• Duration 8 hours exceeds the maximum.", "• Unknown lane."]


def test_triage_note_is_a_subtle_escaped_suggestion() -> None:
    card = intake_card(CHOICES, EMPTY, draft_id="d-1",
                       triage_note="Suggested from your message: Global Admin for *30m*, see https://x.y")
    note = next(t for t in of_text(card) if t["text"].startswith("Suggested from your message:"))
    assert note["isSubtle"] is True
    assert note["text"] == "Suggested from your message: Global Admin for \\*30m\\*, see https[:]//x[.]y"
    assert sum("Suggested from your message" in t["text"] for t in of_text(card)) == 1  # the lead only once


def of_text(card: dict) -> list[dict]:
    return [e for e in card["body"] if e["type"] == "TextBlock"]


def test_submit_is_one_execute_carrying_only_the_draft_id() -> None:
    card = intake_card(CHOICES, FILLED, draft_id="draft-42")
    (submit,) = executes(card)
    assert (submit["title"], submit["verb"], submit["data"]) == ("Submit request", "request.submit",
                                                                  {"draftId": "draft-42"})
    assert submit["fallback"]["data"] == {"verb": "request.submit", "draftId": "draft-42"}


def test_no_choices_means_no_form() -> None:
    card = intake_card([], EMPTY, draft_id="d-1")
    check_card(card)
    assert inputs(card) == {} and "actions" not in card
    assert "No roles are available to you" in all_text(card)


def test_ai_values_are_marked_under_their_own_inputs_and_notes_are_escaped_bullets() -> None:
    from cards.intake import AI_MARK

    card = intake_card(CHOICES, FILLED, draft_id="d-1", allow_other_target=True,
                       suggested_by_ai=frozenset({"entitlement", "target", "not-a-field"}),
                       triage_notes=["Suggested by AI (check before you submit): Global Administrator.",
                                     "AI suggested [APPROVED](https://evil.example)\u202e."])
    check_card(card)
    ids = body_ids(card)
    marks = [i for i, v in enumerate(ids) if v == AI_MARK]
    assert [ids[i - 1] for i in marks] == ["entitlement", "target"]
    shown = all_text(card)
    assert "• Suggested by AI (check before you submit): Global Administrator." in shown
    assert "https://" not in shown and "\u202e" not in shown and "](" not in shown
    assert AI_MARK not in all_text(intake_card(CHOICES, FILLED, draft_id="d-1"))

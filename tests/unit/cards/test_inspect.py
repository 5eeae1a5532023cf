from __future__ import annotations

from datetime import timedelta

import pytest

from cards.inspect import execute_data, executes, inputs, text
from cards.intake import EntitlementChoice, IntakeForm, intake_card


def test_reads_back_inputs_buttons_and_words():
    card = intake_card([EntitlementChoice("global-admin", "Global Administrator", timedelta(hours=4), True)],
                       IntakeForm("global-admin", 30, "Fix the CA lockout - now", "INC0012345", ""),
                       draft_id="d1", field_errors={"ticket": "Ticket INC0012345 is not open."})
    assert inputs(card)["entitlement"] == "global-admin" and inputs(card)["ticket"] == "INC0012345"
    assert executes(card) == [("request.submit", {"draftId": "d1"})]
    assert execute_data(card, "request.submit") == {"draftId": "d1"}
    assert "Ticket INC0012345 is not open." in text(card)
    with pytest.raises(KeyError):
        execute_data(card, "request.approve")

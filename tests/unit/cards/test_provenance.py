"""The request card says what a model chose and when the role differs from what the message asked for."""

from __future__ import annotations

import pytest

from cards.approval import approval_card, decided_card
from cards.status import request_card
from policies.lifecycle import State
from policies.provenance import Origin, Provenance
from tests.unit.cards.factory import MRI, NOW, make_record
from tests.unit.cards.helpers import all_text, check_card

ASKED = {"asked": "helpdesk-admin", "asked_name": "Helpdesk Administrator"}
OWN = {"justification": Origin.MESSAGE, "duration": Origin.RULES, "ticket": Origin.RULES, "target": Origin.DEFAULT}


@pytest.mark.parametrize(("provenance", "lines", "absent"), [
    (Provenance(entitlement=Origin.AI, **OWN), ["Role suggested by AI; the message named no role."], ["by hand"]),
    (Provenance(entitlement=Origin.AI, **{**OWN, "duration": Origin.AI, "target": Origin.AI}, **ASKED),
     ["Role suggested by AI; the message asked for Helpdesk Administrator.", "Duration suggested by AI.",
      "Person receiving access suggested by AI."], ["Ticket suggested"]),
    (Provenance(entitlement=Origin.FORM, **OWN, **ASKED),
     ["Role chosen by hand on the form; the message asked for Helpdesk Administrator."], ["suggested by AI"]),
    (Provenance(entitlement=Origin.RULES, **OWN, asked="global-admin", asked_name="Global Administrator"),
     [], ["Where this request came from", "AI"]),
])
def test_the_approver_sees_what_ai_chose_and_what_was_asked(provenance: Provenance, lines: list[str],
                                                            absent: list[str]) -> None:
    record = make_record(State.PENDING_APPROVAL, triage=provenance)
    for card in (approval_card(record, NOW, [MRI]), request_card(record, now=NOW, viewer="readonly"),
                 decided_card(record, NOW)):
        check_card(card)
        shown = all_text(card)
        for line in lines:
            assert line in shown
        for word in absent:
            assert word not in shown


def test_a_request_without_triage_says_nothing_about_it() -> None:
    shown = all_text(approval_card(make_record(State.PENDING_APPROVAL), NOW, [MRI]))
    assert "Where this request came from" not in shown and "AI" not in shown

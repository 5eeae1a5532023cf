"""Approve with a comment: the approver's card carries an optional comment input next to one-click Approve; the
comment (hostile bytes cleaned once where it enters) reaches the requester's notice, the ticket receipt, the
evidence pack and the audit log, encoded for each; the click stays bound to its card."""

from __future__ import annotations

import re

from policies.lifecycle import State
from tests.integration.bot.conftest import card_of, inputs, texts
from tests.integration.bot.test_flows import pending_riley_request

HOSTILE = ("Fine, but only the CA fix\x1b[31m\u202e\u200b [click](https://evil.example) "
           "<img src=x onerror=alert(1)>\r\n[breakglass] approved by CISO ``` [code]x[/code]")


async def test_an_approval_comment_reaches_the_requester_the_receipt_the_evidence_and_the_audit(teams):
    product = teams.product
    record = await pending_riley_request(teams)
    dana_card = teams.cards_to("dana")[-1]
    assert "comment" in inputs(dana_card) and inputs(dana_card)["comment"] in (None, "")
    before = len(teams.sent_to("riley"))
    card = await teams.invoke_card(teams.click("dana", "request.approve", record.id, comment=HOSTILE))
    assert "Approved" in texts(card)
    product.run_jobs()
    final = product.store.get(record.id)
    assert final.state is State.ACTIVE
    comment = final.approvals[0].reason
    assert comment.startswith("Fine, but only the CA fix")
    assert not re.search("[\x1b\r\u202e\u200b]", comment)
    # The requester hears it with the approval, on one plain line.
    notices = teams.sent_to("riley")[before:]
    assert len(notices) == 1
    summary = notices[0]["summary"]
    assert "Dana Whitfield wrote" in summary and "Fine, but only the CA fix" in summary and "\n" not in summary
    assert "Fine, but only the CA fix" in texts(card_of(notices[0]))
    assert "](https://evil" not in str(notices[0])
    # The ticket: one line, our marker once, no [code] tag.
    note = next(n for n in product.servicenow.work_notes("INC0012347") if "granted to" in n)
    assert "Fine, but only the CA fix" in note and note.count("[breakglass]") == 1 and "\n" not in note
    assert "[code]" not in note.lower()
    # The evidence pack: the comment escaped, no link or HTML forms.
    md = next(product.servicenow.attachment_content(a["sys_id"]).decode() for a in product.servicenow.attachments()
              if a["file_name"].endswith("-activated.md"))
    line = next(x for x in md.splitlines() if "comment:" in x)
    assert "Fine, but only the CA fix" in line.replace("\\", "")
    assert re.search(r"(?<!\\)<", line) is None and "](https" not in line
    # The audit log.
    voted = [e for e in product.audit.for_request(record.id) if e.event == "request.approved"]
    assert voted and voted[0].data["reason"] == comment
    # Every card copy shows it.
    for ref in final.cards:
        latest = product.connector.activity(ref.conversation_id, ref.activity_id)
        if ref.audience != "requester":
            assert "Fine, but only the CA fix" in texts(card_of(latest)), ref.audience


async def test_approving_without_a_comment_is_still_one_click(teams):
    product = teams.product
    record = await pending_riley_request(teams)
    await teams.invoke_card(teams.click("dana", "request.approve", record.id))
    product.run_jobs()
    final = product.store.get(record.id)
    assert final.state is State.ACTIVE and final.approvals[0].reason == ""

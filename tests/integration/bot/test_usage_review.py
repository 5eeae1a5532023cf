"""The access review in Teams: the `report` chat command (an approver sees everyone's lines, a requester only their
own) and the scheduled review (the summary card with the CSV posted to the approvals channel once per period,
audited), against a log the real workflow wrote."""

from __future__ import annotations

import base64
import csv
import io
import uuid

import pytest

from services.workflow.access import IntakeInput, Who
from tests.factories import PEOPLE
from tests.harness import Product
from tests.teams_activities import message

from .conftest import Teams, card_of, texts


def granted(product: Product, alias: str, entitlement: str, text: str, ticket: str) -> None:
    person = PEOPLE[alias]
    form = IntakeInput(entitlement=entitlement, duration_minutes=None, justification=text, ticket=ticket, target="",
                       duration_seconds=3600)
    result = product.services.access.submit(Who(person.object_id, person.display_name), form,
                                            draft_id=uuid.uuid4().hex)
    assert result.accepted, result.problems
    product.run_jobs()
    assert product.store.get(result.record.id).state.value == "active"


@pytest.fixture
def used(product: Product) -> Product:
    granted(product, "riley", "user-admin", "Restore the deleted accounts of the finance team, INC0012347",
            "INC0012347")
    granted(product, "sam", "helpdesk-admin", "Reset the MFA registration of the CFO after the phone loss, "
            "INC0012345", "INC0012345")
    return product


@pytest.mark.asyncio
async def test_an_approver_sees_everyone_and_a_requester_only_themselves(used: Product, teams: Teams):
    await teams.post(message("dana", "report", used.service_url))
    card = teams.cards_to("dana")[-1]
    assert "Access review (last 90 days)" in texts(card)
    assert "Riley Chen: User Administrator" in texts(card) and "Sam Okafor: Helpdesk Administrator" in texts(card)
    await teams.post(message("riley", "report", used.service_url))
    mine = teams.cards_to("riley")[-1]
    assert "Your use of breakglass" in texts(mine) and "Riley Chen: User Administrator" in texts(mine)
    assert "Sam" not in texts(mine)
    viewed = [e for e in used.audit.events() if e.event == "report.viewed"]
    assert [(e.actor, e.data["scope"]) for e in viewed] == [(PEOPLE["dana"].object_id, "all"),
                                                          (PEOPLE["riley"].object_id, "own")]


def test_the_scheduled_review_posts_once_per_period_with_the_csv(used: Product):
    assert used.services.reviews.post_if_due()["posted"] is True
    assert used.services.reviews.post_if_due()["posted"] is False
    channel = used.settings.teams_approvals_channel_id
    posts = [r["current"] for r in used.connector.all_activities() if r["conversationId"].split(";")[0] == channel
             and any(a.get("contentType") == "text/csv" for a in r["current"].get("attachments") or [])]
    assert len(posts) == 1
    card = card_of(posts[0])
    assert card is not None and "Access review: the last 90 days" in texts(card)
    attachment = next(a for a in posts[0]["attachments"] if a["contentType"] == "text/csv")
    rows = list(csv.DictReader(io.StringIO(base64.b64decode(attachment["contentUrl"].split(",", 1)[1]).decode())))
    assert {(r["person_name"], r["role"]) for r in rows} == {("Riley Chen", "user-admin"), ("Sam Okafor",
                                                                                        "helpdesk-admin")}
    [posted] = [e for e in used.audit.events() if e.event == "review.posted"]
    assert posted.data["lines"] == 2 and posted.data["csv_sha256"]

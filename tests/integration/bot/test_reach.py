"""Reaching a person who never opened the bot (issue 17, section 2; PROTOCOL_NOTES §9): breakglass installs its
Teams app for them through Graph (org catalog → install, 409 = already installed → the installation → its chat),
sends the card to that chat through the Bot Connector, caches the chat and audits the install. When Graph
refuses (app blocked for the user, not in the org catalog, permission missing) it falls back to what it did
before: the channel copy, and an alert naming the person and why.

The product runs against the emulators (real Redis, real clients, the real endpoint for the team install that
teaches the bot everyone else's Teams id); Priya Natarajan, a security lead, is in no team with the bot."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from policies.lifecycle import State
from policies.record import RequestRecord
from services.emulators import seed as demo
from services.emulators.teamwork import chat_id
from services.workflow.access import IntakeInput, Who
from tests.harness import Product
from tests.integration.bot.conftest import Teams, actions, assert_valid_card, card_of, texts
from tests.teams_activities import invoke

PRIYA = demo.BY_ALIAS["priya"]
PRIYA_CHAT = chat_id(demo.DEMO_BOT_APP_ID, PRIYA.object_id)
INSTALL_PATH = f"users/{PRIYA.object_id}/teamwork/installedApps"


TICKETS = {"riley": "INC0012347", "morgan": "INC0012346"}  # each is the ticket's caller


def security_admin_request(product: Product, alias: str = "riley") -> RequestRecord:
    person = demo.BY_ALIAS[alias]
    ticket = TICKETS[alias]
    form = IntakeInput(entitlement="security-admin", duration_minutes=30, ticket=ticket, target="",
                       justification=f"Review the Defender alert rules after the phishing wave, {ticket}")
    result = product.services.access.submit(Who(person.object_id, person.display_name), form,
                                            draft_id=uuid.uuid4().hex)
    assert result.accepted and result.record is not None, (result.field_errors, result.problems)
    assert result.record.state is State.PENDING_APPROVAL
    assert PRIYA.object_id in {a.object_id for a in result.record.decision.approvers if a.notify_first}
    return result.record


def cards_in(product: Product, conversation: str) -> list[dict[str, Any]]:
    return [c for c in (card_of(a) for a in product.connector.activities(conversation)) if c is not None]


def audit(product: Product, name: str) -> list[Any]:
    return [e for e in product.audit.events() if e.event == name]


def calls(product: Product, path: str, method: str) -> int:
    return len(product.graph.calls.list(path=path, method=method))


def graph_teams_calls(product: Product) -> int:
    return calls(product, "teamwork", "GET") + calls(product, "teamwork", "POST") + calls(product, "appCatalogs", "GET")


def alerts(teams: Teams) -> list[str]:
    return [texts(card_of(a)) for a in teams.channel_posts() if "Approval needed" not in (a.get("summary") or "")]


async def test_an_approver_who_never_opened_the_bot_gets_the_card_in_the_chat_of_the_installed_app(teams):
    product = teams.product
    await teams.install_in_team()  # the bot learns everyone in the team; Priya is not in it
    record = security_admin_request(product)
    product.run_jobs()
    cards = cards_in(product, PRIYA_CHAT)
    assert cards, "Priya gets the approval card personally"
    assert_valid_card(cards[-1])
    assert record.id in texts(cards[-1])
    assert {v for v, _ in actions(cards[-1])} >= {"request.approve", "request.deny"}
    assert calls(product, INSTALL_PATH, "POST") == 1
    [installed] = audit(product, "teams.app_installed")
    assert installed.data["user"] == PRIYA.object_id and installed.data["outcome"] == "installed"
    assert installed.request_id == record.id
    [requested] = audit(product, "approval.requested")
    assert PRIYA.object_id in requested.data["notified"]
    # Nobody else needed an install: the team roster already gave their Teams ids.
    assert calls(product, "teamwork/installedApps", "POST") == 1
    # The card is a real one: Priya's click from that chat approves.
    approve = next(d for v, d in actions(cards[-1]) if v == "request.approve")
    posted = next(a for a in product.connector.activities(PRIYA_CHAT) if card_of(a) == cards[-1])
    click = invoke("priya", "request.approve", approve, product.service_url, conversation=PRIYA_CHAT,
                   reply_to_id=posted["id"])
    card = await teams.invoke_card(click)
    assert "Approved" in texts(card)
    assert product.store.get(record.id).state is State.APPROVED


async def test_the_chat_is_cached_a_second_card_needs_no_graph_call(teams):
    product = teams.product
    await teams.install_in_team()
    security_admin_request(product)
    product.run_jobs()
    before = graph_teams_calls(product)
    second = security_admin_request(product, "morgan")  # another request, Priya among its approvers again
    product.run_jobs()
    assert graph_teams_calls(product) == before
    assert [c for c in cards_in(product, PRIYA_CHAT) if second.id in texts(c)]
    assert len(audit(product, "teams.app_installed")) == 1


async def test_already_installed_409_finds_the_existing_installation(teams):
    product = teams.product
    product.graph.set_state({"teams_installations": [{"userId": PRIYA.object_id,
                                                      "teamsAppId": demo.TEAMS_APP_CATALOG_ID}]})
    await teams.install_in_team()
    record = security_admin_request(product)
    product.run_jobs()
    assert [c for c in cards_in(product, PRIYA_CHAT) if record.id in texts(c)]
    [installed] = audit(product, "teams.app_installed")
    assert installed.data["outcome"] == "already installed"


@pytest.mark.parametrize(("setup", "reason"), [
    ("blocked", "blocked by the app permission policy"),
    ("not_in_catalog", "not in the org app catalog"),
    ("no_permission", "permission missing"),
])
async def test_a_refused_install_falls_back_to_the_channel_and_an_alert(teams, setup, reason):
    product = teams.product
    if setup == "blocked":
        product.graph.set_state({"teams_blocked_users": [PRIYA.object_id]})
    elif setup == "not_in_catalog":
        product.graph.set_state({"teams_apps": []})
    else:
        product.graph.add_fault(path="teamwork/installedApps", method="POST", status=403)
    await teams.install_in_team()
    record = security_admin_request(product)
    product.run_jobs()
    assert cards_in(product, PRIYA_CHAT) == []
    assert [p for p in teams.channel_posts() if record.id in texts(card_of(p))], "the channel copy went out"
    [refused] = audit(product, "teams.app_install_refused")
    assert refused.data["user"] == PRIYA.object_id and refused.data["reason"] == reason
    [requested] = audit(product, "approval.requested")
    assert any("Priya Natarajan" in u and reason in u for u in requested.data["unreachable"]), requested.data
    assert [a for a in alerts(teams) if "Priya Natarajan" in a and reason in a], alerts(teams)
    # A refusal is remembered for a while: the next card does not ask Graph again, nor alert again.
    posts = calls(product, "teamwork/installedApps", "POST")
    security_admin_request(product, "morgan")
    product.run_jobs()
    assert calls(product, "teamwork/installedApps", "POST") == posts
    assert len(audit(product, "teams.app_install_refused")) == 1


async def test_a_throttled_install_is_retried_after_retry_after(teams):
    product = teams.product
    product.graph.add_fault(path="teamwork/installedApps", method="POST", status=429,
                            headers={"Retry-After": "0.3"}, times=1)
    await teams.install_in_team()
    record = security_admin_request(product)
    product.run_jobs()
    assert [c for c in cards_in(product, PRIYA_CHAT) if record.id in texts(c)]
    posts = product.graph.calls.list(path=INSTALL_PATH, method="POST")
    assert [p.status for p in posts] == [429, 201]
    assert posts[1].monotonic - posts[0].monotonic >= 0.3


async def test_a_chat_that_is_not_ready_yet_is_polled_with_backoff(teams):
    product = teams.product
    product.graph.set_state({"teams_chat_delay_s": 5})
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the product waits in business time: move the clocks instead
        waits.append(seconds)
        product.clock.advance(timedelta(seconds=seconds))
        product.graph.clock.advance(seconds)  # one Clock shared by the whole emulator stack

    product.services.app_installer.sleep = sleep
    await teams.install_in_team()
    record = security_admin_request(product)
    product.run_jobs()
    assert [c for c in cards_in(product, PRIYA_CHAT) if record.id in texts(c)]
    assert waits[:3] == [1, 2, 4] and sum(waits) >= 5


async def test_a_requester_nobody_has_seen_in_teams_is_reached_the_same_way(teams):
    product = teams.product  # no team install: the bot knows nobody yet
    record = security_admin_request(product, "riley")
    assert product.services.notifier.tell_requester(record.id, "Your request was received.")
    riley_chat = chat_id(demo.DEMO_BOT_APP_ID, demo.BY_ALIAS["riley"].object_id)
    assert [a for a in product.connector.activities(riley_chat) if "was received" in (a.get("summary") or "")]


async def test_an_installation_whose_bot_is_not_ours_is_refused(teams):
    product = teams.product
    product.services.app_installer.bot_id = "eeeeeeee-0000-0000-0000-000000000099"  # our bot, as configured
    await teams.install_in_team()
    security_admin_request(product)
    product.run_jobs()
    assert cards_in(product, PRIYA_CHAT) == []
    [refused] = audit(product, "teams.app_install_refused")
    assert refused.data["reason"] == "an app with our manifest id belongs to another bot"


async def test_graph_down_is_not_remembered_as_a_refusal(tmp_path, redis_client, redis_url):
    from bot.app import create_app
    from tests.harness import start_product
    from tests.integration.bot.conftest import serving

    product = start_product(tmp_path, redis_client, redis_url, http_retry_budget_s=1, http_max_attempts=2)
    try:
        async with serving(create_app(product.settings, product.services)) as client:
            teams = Teams(client, product)
            product.graph.add_fault(path="appCatalogs/teamsApps", method="GET", status=503, times=20)
            await teams.install_in_team()
            security_admin_request(product)
            product.run_jobs()
            assert cards_in(product, PRIYA_CHAT) == []
            assert audit(product, "teams.app_install_failed") and not audit(product, "teams.app_install_refused")
            product.graph.faults.clear()
            second = security_admin_request(product, "morgan")
            product.run_jobs()
            assert [c for c in cards_in(product, PRIYA_CHAT) if second.id in texts(c)]
    finally:
        product.stop()

"""ServiceNow (and friends) trigger a request over a signed webhook; the caller gets the card in Teams."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
import pytest_asyncio

from bot.app import create_app
from bot.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from policies.lifecycle import State
from services.composition import Services
from tests.integration.bot.conftest import serving, texts
from tests.teams_activities import message, personal_conversation

SECRET = "webhook-secret-for-tests-0123456789abcdef"
BODY = {"event": "jit.requested", "ticket": "INC0012345", "requested_for": "sam@contoso.example",
        "role": "Global Administrator", "duration": "PT30M",
        "justification": "Fix the Conditional Access lockout from the major incident bridge, INC0012345"}


@pytest_asyncio.fixture()
async def hook(product):
    settings = product.settings.model_copy(update={"itsm_webhook_secret": type(product.settings.app_password)(SECRET)})
    async with serving(create_app(settings, Services(product.runtime))) as client:
        yield client


async def deliver(client, body, *, stamp=None, secret=SECRET, signature=None, provider="servicenow"):
    raw = json.dumps(body).encode()
    stamp = str(int(time.time())) if stamp is None else stamp
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: stamp,
               SIGNATURE_HEADER: signature or sign(secret.encode(), stamp, raw)}
    response = await client.post(f"/api/itsm/{provider}", data=raw, headers=headers)
    return response.status, await response.json()


async def test_signed_trigger_creates_a_request_for_the_caller_who_gets_the_card(hook, product, teams):
    await teams.post(message("sam", "help", product.service_url))  # Sam has used the bot before
    status, body = await deliver(hook, BODY)
    assert status == 202, body
    record = product.store.get(body["request_id"])
    assert record.request.source == "itsm" and record.request.requester == "cccccccc-0000-0000-0000-000000000003"
    assert record.state in {State.APPROVED, State.PENDING_APPROVAL}
    product.run_jobs()
    cards = teams.cards_to("sam")
    assert any(record.id in texts(c) for c in cards)
    assert any(ref.audience == "requester" and ref.conversation_id == personal_conversation("sam")
               for ref in product.store.get(record.id).cards)


async def test_servicenow_base64_signature_is_accepted(hook):
    raw = json.dumps(BODY).encode()
    stamp = str(int(time.time()))
    mac = base64.b64encode(hmac.new(SECRET.encode(), stamp.encode() + b"." + raw, hashlib.sha256).digest()).decode()
    status, body = await deliver(hook, BODY, stamp=stamp, signature="sha256=" + mac)
    assert status == 202, body


@pytest.mark.parametrize("case,expected", [
    ("bad signature", 401), ("stale timestamp", 401), ("no timestamp", 401), ("unknown provider", 404),
])
async def test_untrusted_deliveries_are_refused(hook, product, case, expected):
    kwargs = {"bad signature": {"secret": "wrong"}, "stale timestamp": {"stamp": str(int(time.time()) - 3600)},
              "no timestamp": {"stamp": "yesterday"}, "unknown provider": {"provider": "jira"}}[case]
    status, body = await deliver(hook, BODY, **kwargs)
    assert status == expected and body["error"], body
    assert product.store.by_requester("cccccccc-0000-0000-0000-000000000003") == []


async def test_a_replayed_delivery_is_refused(hook):
    raw = json.dumps(BODY).encode()
    stamp = str(int(time.time()))
    signature = sign(SECRET.encode(), stamp, raw)
    first, _ = await deliver(hook, BODY, stamp=stamp, signature=signature)
    again, body = await deliver(hook, BODY, stamp=stamp, signature=signature)
    assert (first, again) == (202, 409), body


async def test_a_trigger_that_fails_policy_is_explained(hook):
    status, body = await deliver(hook, {**BODY, "justification": "testing"})
    assert status == 422 and "justification" in body["fields"]
    status, body = await deliver(hook, {**BODY, "role": "Exchange Administrator"})
    assert status == 422 and "unknown role" in body["error"]


async def test_webhook_is_off_without_a_secret(client):
    response = await client.post("/api/itsm/servicenow", json=BODY)
    assert response.status == 503

"""The ITSM webhook through the real aiohttp app, real Redis and the ServiceNow emulator: a delivery is accepted
once whatever spelling its MAC arrives in, and a ticket only asks for access for the person the policy allows
(its caller unless the policy explicitly widens that to the assignment group)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from bot.app import create_app
from bot.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.harness import Product, person, start_product
from tests.integration.bot.conftest import serving
from tests.resilience.conftest import policy_file

SECRET = "webhook-secret-for-tests-0123456789abcdef"
# INC0012345: caller Sam, assignment group Identity On-Call (Sam and Kai).
BODY = {"event": "jit.requested", "ticket": "INC0012345", "requested_for": "sam@contoso.example",
        "role": "Global Administrator", "duration": "PT30M",
        "justification": "Fix the Conditional Access lockout from the major incident bridge, INC0012345"}


def webhook_policy(directory: Path, requested_for: str | None) -> Path:
    path = policy_file(directory)
    if requested_for is not None:
        data = yaml.safe_load(path.read_text())
        data["webhooks"] = {"requested_for": requested_for}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(params=[None], ids=["default-policy"])
def product(request: Any, tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Product]:
    p = start_product(tmp_path, redis_client, redis_url, policy_file=webhook_policy(tmp_path, request.param),
                      itsm_webhook_secret=SecretStr(SECRET))
    yield p
    p.stop()


@pytest_asyncio.fixture()
async def hook(product: Product) -> AsyncIterator[TestClient]:
    async with serving(create_app(product.settings, product.services)) as client:
        yield client


def mac(stamp: str, raw: bytes) -> bytes:
    return hmac.new(SECRET.encode(), stamp.encode() + b"." + raw, hashlib.sha256).digest()


async def deliver(client: TestClient, body: dict[str, Any], *, stamp: str, signature: str) -> tuple[int, Any]:
    raw = json.dumps(body).encode()
    response = await client.post("/api/itsm/servicenow", data=raw, headers={
        "Content-Type": "application/json", TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature})
    return response.status, await response.json()


async def test_the_base64_spelling_of_a_hex_signed_delivery_is_a_replay(hook, product):
    raw = json.dumps(BODY).encode()
    stamp = str(int(time.time()))
    digest = mac(stamp, raw)
    first = await deliver(hook, BODY, stamp=stamp, signature="sha256=" + digest.hex())
    assert first[0] == 202, first
    for spelling in ("sha256=" + base64.b64encode(digest).decode(), "sha256=" + digest.hex().upper()):
        again = await deliver(hook, BODY, stamp=stamp, signature=spelling)
        assert again[0] in {401, 409}, (spelling, again)  # never a second delivery
    status, body = await deliver(hook, BODY, stamp=stamp, signature="sha256=" + base64.b64encode(digest).decode())
    assert (status, body["error"]) == (409, "replayed delivery")
    requests = product.store.by_requester(person("sam").object_id)
    assert len(requests) == 1


async def test_a_ticket_asks_only_for_its_caller_by_default(hook, product):
    stamp = str(int(time.time()))
    body = {**BODY, "requested_for": "kai@contoso.example"}  # Kai: in the assignment group, not the caller
    raw = json.dumps(body).encode()
    status, answer = await deliver(hook, body, stamp=stamp, signature="sha256=" + mac(stamp, raw).hex())
    assert status == 422, answer
    assert "caller" in answer["error"]
    assert product.store.by_requester(person("kai").object_id) == []
    refused = [e for e in product.audit.events() if e.event == "itsm.trigger_rejected"]
    assert refused and refused[-1].data["requested_for"] == person("kai").object_id
    # The caller herself still works.
    raw = json.dumps(BODY).encode()
    status, answer = await deliver(hook, BODY, stamp=stamp, signature="sha256=" + mac(stamp, raw).hex())
    assert status == 202, answer


@pytest.mark.parametrize("product", ["assignment_group"], indirect=True, ids=["policy-allows-group"])
async def test_a_policy_may_allow_the_assignment_group_explicitly(hook, product):
    stamp = str(int(time.time()))
    body = {**BODY, "requested_for": "kai@contoso.example"}
    raw = json.dumps(body).encode()
    status, answer = await deliver(hook, body, stamp=stamp, signature="sha256=" + mac(stamp, raw).hex())
    assert status == 202, answer
    assert product.store.get(answer["request_id"]).request.requester == person("kai").object_id
    # Someone outside the ticket entirely is still refused.
    body = {**BODY, "requested_for": "riley@contoso.example", "justification": BODY["justification"] + " (riley)"}
    raw = json.dumps(body).encode()
    status, answer = await deliver(hook, body, stamp=stamp, signature="sha256=" + mac(stamp, raw).hex())
    assert status == 422, answer

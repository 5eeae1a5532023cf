"""The endpoint's front door: tokens, bodies, tenant and channel. Every bad request is a 4xx with a short message,
never a 500 and never a stack trace."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from bot.app import create_app
from services.composition import Services
from services.emulators.botauth import METADATA_PATH, BotAuthEmulator, TokenVariant
from services.settings import Settings
from services.state.queue import WorkerRoll
from tests.harness import TENANT
from tests.integration.bot.conftest import serving
from tests.teams_activities import invoke, message

APP_ID = "bbbbbbbb-0000-0000-0000-000000000001"


def no_trace(body: Any) -> None:
    text = json.dumps(body) if not isinstance(body, str) else body
    assert "Traceback" not in text and 'File "' not in text


async def post_raw(client: TestClient, data: bytes | str, content_type: str = "application/json",
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
    response = await client.post("/api/messages", data=data, headers={"Content-Type": content_type,
                                                                      **(headers or {})})
    text = await response.text()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, text


@pytest.mark.parametrize("data,content_type,status", [
    (b"not json", "application/json", 400),
    (b"{\"type\": \"message\"", "application/json", 400),
    (b"[1, 2, 3]", "application/json", 400),
    (b"{\"text\": \"no type\"}", "application/json", 400),
    (b"{\"type\": \"message\"}", "text/plain", 415),
    (b"type=message", "application/x-www-form-urlencoded", 415),
    (b"[" * 50_000 + b"]" * 50_000, "application/json", 400),
    (b"{\"type\": \"message\", \"text\": \"" + b"x" * (3 * 1024 * 1024) + b"\"}", "application/json", 413),
])
async def test_bad_bodies_get_a_clear_4xx(client, data, content_type, status):
    got, body = await post_raw(client, data, content_type)
    assert got == status, body
    assert isinstance(body, dict) and body["error"]
    no_trace(body)


async def test_other_tenant_and_other_channel_are_rejected_and_audited(teams):
    product = teams.product
    status, body = await teams.post(message("sam", "help", product.service_url,
                                            tenant="99999999-0000-0000-0000-000000000000"))
    assert status == 403 and "tenant" in body["error"]
    status, body = await teams.post(message("sam", "help", product.service_url, channel="slack"))
    assert status == 403 and "channel" in body["error"]
    rejected = [e for e in product.audit.events() if e.event == "activity.rejected"]
    assert [e.actor for e in rejected] == ["cccccccc-0000-0000-0000-000000000003"] * 2
    # Rejected before any state lookup: nothing was learned about the sender, nothing was sent.
    assert product.store.get_doc("teams-user", "cccccccc-0000-0000-0000-000000000003") is None
    assert product.connector.all_activities() == []


@pytest_asyncio.fixture()
async def secured(product) -> AsyncIterator[tuple[TestClient, BotAuthEmulator, str]]:
    emulator = BotAuthEmulator(app_id=APP_ID)
    with emulator.start() as running:
        settings = product.settings.model_copy(update={
            "app_id": APP_ID, "app_password": product.settings.app_password.__class__("secret"),
            "app_tenant_id": TENANT, "bot_openid_metadata_url": running.url + METADATA_PATH})
        assert not settings.auth_disabled
        app = create_app(settings, Services(product.runtime))
        async with serving(app) as client:
            yield client, emulator, product.service_url


@pytest.mark.parametrize("variant", [v for v in TokenVariant if v is not TokenVariant.VALID])
async def test_bad_tokens_get_401_never_500(secured, variant):
    client, emulator, service_url = secured
    activity = invoke("sam", "request.refresh", {"requestId": "BG-AAAAAA"}, service_url)
    header = emulator.minter().authorization(service_url, variant)
    status, body = await post_raw(client, json.dumps(activity), headers={"Authorization": header})
    assert status == 401, (variant, body)
    no_trace(body)


@pytest.mark.parametrize("header", ["", "Bearer abc", "Basic dXNlcjpwYXNz", "Bearer " + "a" * (1024 * 1024 - 7)])
async def test_missing_or_garbage_authorization_gets_401(secured, header):
    client, _, service_url = secured
    activity = invoke("sam", "request.refresh", {"requestId": "BG-AAAAAA"}, service_url)
    headers = {"Authorization": header} if header else {}
    status, body = await post_raw(client, json.dumps(activity), headers=headers)
    assert status == 401, body
    no_trace(body)


async def test_valid_token_is_accepted(secured, product):
    client, emulator, service_url = secured
    activity = invoke("sam", "request.refresh", {"requestId": "BG-AAAAAA"}, service_url)
    header = emulator.minter().authorization(service_url)
    status, body = await post_raw(client, json.dumps(activity), headers={"Authorization": header})
    assert status == 200 and body["statusCode"] == 200, body


async def test_a_remembered_token_is_accepted_again_only_where_it_was_validated(secured):
    # The endpoint remembers accepted tokens (bot.auth.ValidatedTokens); the same token must still be refused for
    # another service URL (its serviceurl claim) and another channel (its endorsements).
    client, emulator, service_url = secured
    header = emulator.minter().authorization(service_url)
    activity = invoke("sam", "request.refresh", {"requestId": "BG-AAAAAA"}, service_url)
    for _ in range(2):
        status, body = await post_raw(client, json.dumps(activity), headers={"Authorization": header})
        assert status == 200 and body["statusCode"] == 200, body
    elsewhere = invoke("sam", "request.refresh", {"requestId": "BG-AAAAAA"}, "https://smba.attacker.example/")
    status, body = await post_raw(client, json.dumps(elsewhere), headers={"Authorization": header})
    assert status == 401, body
    other_channel = invoke("sam", "request.refresh", {"requestId": "BG-AAAAAA"}, service_url, channel="slack")
    status, body = await post_raw(client, json.dumps(other_channel), headers={"Authorization": header})
    assert status == 401, body
    status, _ = await post_raw(client, json.dumps(activity), headers={"Authorization": header + "x"})
    assert status == 401


async def test_health_and_readiness(client, product):
    from bot.app import create_ops_app
    from tests.integration.bot.conftest import serving

    assert (await client.get("/healthz")).status == 200
    for path in ("/readyz", "/metrics"):  # never on the public listener
        assert (await client.get(path)).status == 404
    async with serving(create_ops_app(product.services)) as ops:
        ready = await ops.get("/readyz")
        body = await ready.json()  # no worker yet: still serving, and saying why approvals would wait
        assert ready.status == 200 and body["status"] == "degraded", body
        assert body["problems"][0].startswith("workers: none running"), body
        WorkerRoll(product.runtime.redis, product.settings.key_prefix, product.settings.reconcile_interval_s).beat("w")
        ready = await ops.get("/readyz")
        assert ready.status == 200 and (await ready.json())["status"] == "ready"
        metrics = await ops.get("/metrics")
        assert metrics.status == 200 and "breakglass_grants_active" in await metrics.text()


def test_serve_refuses_to_start_without_credentials(tmp_path):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "BREAKGLASS_ENV": "production", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "services.ops.cli", "serve", "--port", "0"], capture_output=True,
                            text=True, env=env, timeout=60, cwd=str(tmp_path.parent))
    assert result.returncode == 2
    for name in ("MicrosoftAppId", "MicrosoftAppPassword", "MicrosoftAppTenantId", "ENTRA_CLIENT_ID"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr


def test_auth_disabled_mode_is_loopback_only():
    settings = Settings(_env_file=None, env="development", host="0.0.0.0", entra_tenant_id=TENANT)  # type: ignore[call-arg]
    assert settings.auth_disabled
    assert any("loopback" in p for p in settings.problems_for_bot())
    local = settings.model_copy(update={"host": "127.0.0.1"})
    assert not any("loopback" in p for p in local.problems_for_bot())

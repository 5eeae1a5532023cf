"""Nobody captures the approvals channel by installing the bot (issue 16, item 3): production refuses to start
without TEAMS_APPROVALS_CHANNEL_ID; in development a channel is learned only from an install by a member of an
approver group; in every mode an install anywhere else re-routes nothing, is audited (`bot.installed_elsewhere`)
and raises an alert. Installs go through the real aiohttp app and botbuilder, real Redis and the emulators."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from services.emulators import seed as demo
from tests.harness import TENANT, Product, person, settings_env, start_product
from tests.resilience.conftest import ROOT, free_port
from tests.resilience.test_approval_integrity import playing
from tests.teams_activities import bot_added_to_team

ROGUE_TEAM = "19:rogue-team-general@thread.tacv2"
ROGUE_CHANNEL = "19:rogue-exfiltration@thread.tacv2"


def installed_by(alias: str, service_url: str, *, team: str = ROGUE_TEAM, channel: str = ROGUE_CHANNEL) -> dict:
    activity = bot_added_to_team(alias, service_url)
    activity["conversation"]["id"] = team
    activity["channelData"]["team"] = {"id": team, "name": f"{alias}'s team"}
    activity["channelData"]["settings"] = {"selectedChannel": {"id": channel}}
    return activity


@pytest.fixture()
def unset(tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Product]:
    """Development, TEAMS_APPROVALS_CHANNEL_ID unset: the channel may only be learned."""
    p = start_product(tmp_path, redis_client, redis_url, teams_approvals_channel_id=None)
    yield p
    p.stop()


@pytest.fixture()
def configured(tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Product]:
    p = start_product(tmp_path, redis_client, redis_url)
    yield p
    p.stop()


def elsewhere(product: Product) -> list[Any]:
    return [e for e in product.audit.events() if e.event == "bot.installed_elsewhere"]


def alerts(product: Product) -> list[Any]:
    return [e for e in product.audit.events() if e.event == "alert.raised"]


def test_production_refuses_to_start_without_the_approvals_channel(configured, tmp_path):
    """Every other credential is there: the missing channel alone stops serve, the worker and doctor."""
    settings = configured.settings.model_copy(update={
        "env": "production", "clock_offset_s": 0.0, "teams_approvals_channel_id": None, "port": free_port(),
        "app_id": "bbbbbbbb-0000-0000-0000-000000000001", "app_password": SecretStr("secret"),
        "app_tenant_id": TENANT})
    env = {k: v for k, v in settings_env(settings).items() if k != "TEAMS_APPROVALS_CHANNEL_ID"}
    env.update({"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    for command in (["serve"], ["worker", "--burst"], ["doctor"]):
        proc = subprocess.Popen([sys.executable, "-m", "services.ops.cli", *command], env=env, cwd=str(ROOT),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=10)
            pytest.fail(f"{command} started without TEAMS_APPROVALS_CHANNEL_ID: {err[-1500:]}")
        assert proc.returncode != 0, (command, out[-2000:], err[-2000:])
        assert "TEAMS_APPROVALS_CHANNEL_ID" in out + err, (command, out[-2000:], err[-2000:])
        assert "Traceback" not in err, err[-2000:]


async def test_in_development_only_an_approver_teaches_the_channel(unset):
    product = unset
    users = product.services.notifier.users
    async with playing(product) as teams:
        # Jordan (no approver group) installs the bot into his own team first: nothing is learned.
        status, _ = await teams.post(installed_by("jordan", product.service_url))
        assert status == 201
        assert users.channel("approvals") is None
        seen = elsewhere(product)
        assert [(e.actor, e.data["team_id"], e.data["channel_id"]) for e in seen] == [
            (person("jordan").object_id, ROGUE_TEAM, ROGUE_CHANNEL)]
        assert alerts(product)
        # Dana (identity leads) installs it into the real team: that channel becomes the approvals channel ...
        status, _ = await teams.post(bot_added_to_team("dana", product.service_url))
        assert status == 201
        assert users.channel("approvals").channel_id == demo.APPROVALS_CHANNEL_ID
        # ... and a later install elsewhere, even by an approver, re-routes nothing.
        await teams.post(installed_by("bo", product.service_url, team="19:other@thread.tacv2",
                                      channel="19:other-channel@thread.tacv2"))
        assert users.channel("approvals").channel_id == demo.APPROVALS_CHANNEL_ID
        assert len(elsewhere(product)) == 2


async def test_an_install_elsewhere_is_audited_and_alerted_and_routes_nothing(configured):
    product = configured
    async with playing(product) as teams:
        status, _ = await teams.post(installed_by("dana", product.service_url))
        assert status == 201
        assert product.services.notifier.channel("approvals").channel_id == demo.APPROVALS_CHANNEL_ID
        assert product.services.notifier.users.channel("approvals") is None
        [seen] = elsewhere(product)
        assert (seen.actor, seen.data["team_id"], seen.data["channel_id"]) == (
            person("dana").object_id, ROGUE_TEAM, ROGUE_CHANNEL)
        [alert] = alerts(product)
        assert ROGUE_TEAM in str(alert.data["facts"])
        # The alert reached the alerts channel (here: the approvals channel), never the new team.
        posted = {r["conversationId"].split(";")[0] for r in product.connector.all_activities()}
        assert demo.APPROVALS_CHANNEL_ID in posted and not posted & {ROGUE_TEAM, ROGUE_CHANNEL}
        # The real team's install is not "elsewhere".
        await teams.post(bot_added_to_team("dana", product.service_url))
        assert len(elsewhere(product)) == 1

"""The demo tenant seed and the in-process stack built from a configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from services.emulators import StackConfig, ThreadedStack, demo_seed
from services.emulators.stack import StackConfigError, build_emulators


def test_demo_seed_is_plain_json() -> None:
    seed = demo_seed()
    assert json.loads(json.dumps(seed)) == seed
    assert set(seed) == {"tenant", "graph", "servicenow", "freshservice", "halo", "botconnector"}


def test_demo_seed_people_groups_and_incidents() -> None:
    seed = demo_seed()
    users = {u["userPrincipalName"]: u for u in seed["graph"]["users"]}
    assert len(users) == 11
    assert users["riley@contoso.example"]["id"] == "cccccccc-0000-0000-0000-000000000001"
    assert users["breakglass01@contoso.example"]["displayName"] == "Break Glass 01"
    groups = {g["displayName"]: g["id"] for g in seed["graph"]["groups"]}
    assert seed["graph"]["memberships"][groups["Identity On-Call"]] == [
        "cccccccc-0000-0000-0000-000000000003", "cccccccc-0000-0000-0000-000000000007"]
    assert seed["graph"]["assignments"] == []
    assert len(seed["graph"]["role_definitions"]) == 5

    incidents = {i["number"]: i for i in seed["servicenow"]["incidents"]}
    assert set(incidents) == {"INC0012345", "INC0012346", "INC0012347", "INC0012300", "INC0012348"}
    assert incidents["INC0012300"]["state"] == "7" and incidents["INC0012300"]["active"] == "false"
    assert incidents["INC0012346"]["assigned_to"] == "bbbbbbbbbbbbbbbbbbbbbbbbbbbb0005"
    assert {u["sys_id"] for u in seed["servicenow"]["users"]} >= {
        f"bbbbbbbbbbbbbbbbbbbbbbbbbbbb{n:04d}" for n in range(1, 11)}
    assert [t["status"] for t in seed["freshservice"]["tickets"]] == [2, 5]
    assert [t["status_id"] for t in seed["halo"]["tickets"]] == [2, 9]
    assert {m["id"] for m in seed["botconnector"]["members"]} >= {"29:riley", "29:dana"}
    # Priya never opened the bot: not in the team roster, no 1:1 chat; only a proactive install reaches her.
    assert "29:priya" not in {m["id"] for m in seed["botconnector"]["members"]}
    assert [a["externalId"] for a in seed["graph"]["teams_apps"]] == ["bbbbbbbb-0000-0000-0000-0000000000e1"]


def test_threaded_stack_from_config_shares_the_token_secret_and_clock(tmp_path: Path) -> None:
    config = StackConfig.from_json({
        "emulators": {"entra": {}, "graph": {}, "servicenow": {"port": 0}},
        "seed": "demo", "pim_min_active_seconds": 0, "clock_offset_s": 60,
        "entra_ca_bundle_out": str(tmp_path / "bundle.pem"),
    })
    with ThreadedStack.start(config) as stack:
        graph, entra = stack.emulators["graph"], stack.emulators["entra"]
        assert graph.signing_secret == entra.signing_secret  # type: ignore[attr-defined]
        assert graph.clock is stack.emulators["servicenow"].clock
        assert graph.clock.offset_s == 60
        assert graph.pim.min_active_seconds == 0  # type: ignore[attr-defined]
        token = entra.mint_token()  # type: ignore[attr-defined]
        response = requests.get(stack.urls["graph"] + "/v1.0/users/sam@contoso.example",
                                headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert response.json()["displayName"] == "Sam Okafor"
        assert (tmp_path / "bundle.pem").read_bytes().count(b"BEGIN CERTIFICATE") > 1
        assert stack.urls["entra"].startswith("https://127.0.0.1:")


def test_stack_config_rejects_unknowns() -> None:
    with pytest.raises(StackConfigError):
        StackConfig.from_json({"bogus": 1})
    with pytest.raises(StackConfigError):
        build_emulators(StackConfig(emulators={"nope": {}}))
    with pytest.raises(StackConfigError):
        build_emulators(StackConfig(emulators={"graph": {"not_an_option": 1}}))
    with pytest.raises(StackConfigError):
        build_emulators(StackConfig(emulators={"graph": {}}, secrets={"what": "x"}))

"""`open_incident`: a standalone incident at a given priority in ServiceNow, Freshservice and Halo (the emergency
watch opens P1s), returned as TicketFacts the adapters can add notes to. Hostile text from a sign-in record (an app
display name an attacker registered) is encoded per sink: no [code] tag in ServiceNow, escaped HTML in
Freshservice and Halo."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from services.clients.itsm.freshservice import FreshserviceTicketing
from services.clients.itsm.halo import HaloTicketing
from services.clients.itsm.servicenow import ServiceNowTicketing
from services.emulators import FreshserviceEmulator, HaloEmulator, RunningEmulator, ServiceNowEmulator, demo_seed

from .conftest import FAST
from .test_freshservice_halo import FS_KEY, HALO_ID, HALO_SECRET
from .test_servicenow import PASSWORD, USER

HOSTILE = "App [code]<img src=x onerror=alert(1)>[/code] <script>x</script>"


@pytest.fixture
def snow(start: Callable[[Any], RunningEmulator]) -> tuple[ServiceNowEmulator, str]:
    emulator = ServiceNowEmulator(username=USER, password=PASSWORD)
    emulator.seed(demo_seed()["servicenow"])
    return emulator, start(emulator).url


def test_servicenow_p1_is_impact_and_urgency_high(snow: tuple[ServiceNowEmulator, str]) -> None:
    client = ServiceNowTicketing(snow[1], USER, PASSWORD, retry=FAST)
    ticket = client.open_incident("Emergency account breakglass01 signed in", f"Application: {HOSTILE}", priority=1)
    row = snow[0].incident(ticket.number)
    assert row is not None and (row["impact"], row["urgency"], row["priority"]) == ("1", "1", "1")
    assert "[code]" not in row["description"].lower() and "(code)" in row["description"]
    assert ticket.exists and ticket.sys_id == row["sys_id"] and ticket.priority == 1 and ticket.system == "servicenow"
    client.add_note(ticket, "[breakglass] checklist: reason documented")
    assert any("reason documented" in e["value"] for e in snow[0].journal(ticket.number))


def test_freshservice_p1_is_urgent(start: Callable[[Any], RunningEmulator]) -> None:
    emulator = FreshserviceEmulator(api_key=FS_KEY)
    emulator.seed(demo_seed()["freshservice"])
    url = start(emulator).url
    client = FreshserviceTicketing(url, FS_KEY, requester_email="secops@contoso.example", retry=FAST)
    ticket = client.open_incident("Emergency account breakglass01 signed in", f"Application: {HOSTILE}", priority=1)
    [created] = emulator.state()["created_tickets"]
    assert created["priority"] == 4 and created["urgency"] == 3 and created["impact"] == 3
    assert "<script>" not in created["description"] and "&lt;script&gt;" in created["description"]
    assert ticket.number == f"INC-{created['id']}" and ticket.priority == 1
    client.add_note(ticket, "checklist: reason documented")
    assert emulator.notes(created["id"])


def test_halo_p1_uses_the_mapped_priority_id(start: Callable[[Any], RunningEmulator]) -> None:
    emulator = HaloEmulator(client_id=HALO_ID, client_secret=HALO_SECRET)
    emulator.seed(demo_seed()["halo"])
    url = start(emulator).url
    client = HaloTicketing(url, HALO_ID, HALO_SECRET, tenant="contoso", retry=FAST, priority_map={7: 1, 8: 2})
    ticket = client.open_incident("Emergency account breakglass01 signed in", f"Application: {HOSTILE}", priority=1)
    [created] = emulator.state()["created_tickets"]
    assert created["priority_id"] == 7 and created["tickettype_id"] == 1
    assert "<script>" not in created["details"] and "&lt;script&gt;" in created["details"]
    assert ticket.number == str(created["id"]) and ticket.priority == 1
    client.add_note(ticket, "checklist: reason documented")
    assert emulator.actions_for(created["id"])

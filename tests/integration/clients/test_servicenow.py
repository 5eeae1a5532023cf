"""ServiceNowTicketing against the ServiceNow emulator (Table + Attachment APIs, Basic auth)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from policies.model import TicketFacts
from services.clients.itsm import build_ticketing
from services.clients.itsm.servicenow import ServiceNowTicketing
from services.emulators import RunningEmulator, ServiceNowEmulator, demo_seed
from services.ports import TicketingUnavailableError

from .conftest import FAST, make_settings

USER, PASSWORD = "svc_breakglass", "breakglass-demo-password"
INC_12345 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaa0001"


@pytest.fixture
def snow(start: Callable[[Any], RunningEmulator]) -> tuple[ServiceNowEmulator, str]:
    emulator = ServiceNowEmulator(username=USER, password=PASSWORD)
    emulator.seed(demo_seed()["servicenow"])
    return emulator, start(emulator).url


@pytest.fixture
def client(snow: tuple[ServiceNowEmulator, str]) -> ServiceNowTicketing:
    return ServiceNowTicketing(snow[1], USER, PASSWORD, retry=FAST)


def test_get_ticket_resolves_people_group_and_priority(client: ServiceNowTicketing,
                                                        snow: tuple[ServiceNowEmulator, str]) -> None:
    ticket = client.get_ticket("INC0012345")

    assert ticket == TicketFacts(
        number="INC0012345", system="servicenow", exists=True, open=True, kind="incident", priority=1,
        state="In Progress", caller="sam@contoso.example", assignee=None, assignment_group="Identity On-Call",
        assignment_group_members=frozenset({"sam@contoso.example", "kai@contoso.example"}),
        short_description="Conditional Access policy misfire locked out all admins",
        url=f"{snow[1]}/incident.do?sys_id={INC_12345}", sys_id=INC_12345)
    assert snow[0].calls.count(path="/api/now/table/") == 2  # the incident (dot-walked), then the group members


def test_assignee_dash_number_closed_and_unknown(client: ServiceNowTicketing) -> None:
    assigned = client.get_ticket("inc-0012346")
    assert (assigned.number, assigned.assignee, assigned.caller) == (
        "INC0012346", "jordan@contoso.example", "morgan@contoso.example")
    closed = client.get_ticket("INC0012300")
    assert (closed.exists, closed.open, closed.state, closed.priority) == (True, False, "Closed", 2)
    missing = client.get_ticket("INC9999999")
    assert (missing.exists, missing.open) == (False, False)
    junk = client.get_ticket("INC1^ORactive=true")  # never reaches the encoded query
    assert junk.exists is False


def test_work_note_lands_in_the_journal(client: ServiceNowTicketing, snow: tuple[ServiceNowEmulator, str]) -> None:
    ticket = client.get_ticket("INC0012345")
    client.add_note(ticket, "breakglass BG-7K3F9Q: Global Administrator granted for 30 minutes")
    client.add_note(TicketFacts(number="INC0012345"), "a second note, found by number")

    assert snow[0].work_notes("INC0012345") == [
        "breakglass BG-7K3F9Q: Global Administrator granted for 30 minutes", "a second note, found by number"]
    [patch, _] = snow[0].calls.list(method="PATCH")
    assert patch.path == f"/api/now/table/incident/{INC_12345}"


def test_attachment_is_stored_with_its_content_type(client: ServiceNowTicketing,
                                                    snow: tuple[ServiceNowEmulator, str]) -> None:
    ticket = client.get_ticket("INC0012345")
    content = b'{"request": "BG-7K3F9Q", "events": []}'
    client.attach(ticket, "breakglass-BG-7K3F9Q-activated.json", content, "application/json")

    [meta] = snow[0].attachments(INC_12345)
    assert (meta["file_name"], meta["content_type"], meta["table_name"]) == (
        "breakglass-BG-7K3F9Q-activated.json", "application/json", "incident")
    assert snow[0].attachment_content(meta["sys_id"]) == content


def test_child_incident_points_at_its_parent(client: ServiceNowTicketing,
                                              snow: tuple[ServiceNowEmulator, str]) -> None:
    parent = client.get_ticket("INC0012345")
    number = client.open_child_incident(parent, "breakglass integration failure for BG-7K3F9Q",
                                        "The receipt could not be written after 6 attempts.")

    [child] = snow[0].state()["created_child_incidents"]
    assert child["number"] == number and number.startswith("INC")
    assert child["parent_incident"] == INC_12345
    assert child["short_description"] == "breakglass integration failure for BG-7K3F9Q"
    assert snow[0].incident(INC_12345)["child_incidents"] == "1"
    orphan = client.open_child_incident(None, "integration failure", "no parent ticket")
    assert snow[0].incident(orphan)["parent_incident"] == ""


def test_wrong_password_is_unavailable_without_leaking_it(snow: tuple[ServiceNowEmulator, str]) -> None:
    client = ServiceNowTicketing(snow[1], USER, "wrong-password-123", retry=FAST)
    with pytest.raises(TicketingUnavailableError) as caught:
        client.get_ticket("INC0012345")
    assert "credentials rejected (HTTP 401)" in str(caught.value)
    assert "wrong-password-123" not in str(caught.value)
    assert snow[0].calls.count() == 1  # 401 is not retried


def test_outage_rate_limit_and_unreachable_are_unavailable(client: ServiceNowTicketing,
                                                           snow: tuple[ServiceNowEmulator, str]) -> None:
    snow[0].add_fault(path="/api/now/table/incident", status=503)
    with pytest.raises(TicketingUnavailableError) as outage:
        client.get_ticket("INC0012345")
    assert "HTTP 503" in str(outage.value) and f"after {FAST.max_attempts} attempts" in str(outage.value)

    snow[0].faults.clear()
    snow[0].calls.clear()
    snow[0].add_fault(path="/api/now/table/incident", status=429)  # Retry-After: 1800 from the fixture
    started = time.monotonic()
    with pytest.raises(TicketingUnavailableError) as limited:
        client.get_ticket("INC0012345")
    assert "rate limited (HTTP 429, retry after 1800s)" in str(limited.value)
    assert time.monotonic() - started < 1 and snow[0].calls.count() == 1

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    with pytest.raises(TicketingUnavailableError) as unreachable:
        ServiceNowTicketing(f"http://127.0.0.1:{free_port}", USER, PASSWORD, retry=FAST).get_ticket("INC0012345")
    assert "unreachable (connection)" in str(unreachable.value)


def test_build_ticketing(snow: tuple[ServiceNowEmulator, str]) -> None:
    assert build_ticketing(make_settings(itsm="none")) is None
    client = build_ticketing(make_settings(itsm="servicenow", servicenow_instance_url=snow[1] + "/",
                                           servicenow_username=USER, servicenow_password=PASSWORD))
    assert isinstance(client, ServiceNowTicketing)
    assert client.get_ticket("INC0012345").exists

"""FreshserviceTicketing (Basic api_key:X) and HaloTicketing (authinfo -> client credentials -> bearer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from policies.model import TicketFacts
from services.clients.itsm import build_ticketing
from services.clients.itsm.freshservice import FreshserviceTicketing
from services.clients.itsm.halo import HaloTicketing
from services.emulators import FreshserviceEmulator, HaloEmulator, RunningEmulator, demo_seed
from services.ports import TicketingUnavailableError

from .conftest import FAST, make_settings

FS_KEY = "breakglass-demo-freshservice-key"
HALO_ID, HALO_SECRET = "breakglass-halo-client", "breakglass-demo-halo-secret"


@pytest.fixture
def freshservice(start: Callable[[Any], RunningEmulator]) -> tuple[FreshserviceEmulator, str]:
    emulator = FreshserviceEmulator(api_key=FS_KEY)
    emulator.seed(demo_seed()["freshservice"])
    return emulator, start(emulator).url


@pytest.fixture
def halo(start: Callable[[Any], RunningEmulator]) -> tuple[HaloEmulator, str]:
    emulator = HaloEmulator(client_id=HALO_ID, client_secret=HALO_SECRET)
    emulator.seed(demo_seed()["halo"])
    return emulator, start(emulator).url


def halo_client(url: str, redis_client: redis.Redis | None = None, **options: Any) -> HaloTicketing:
    return HaloTicketing(url, HALO_ID, HALO_SECRET, tenant="contoso", redis_client=redis_client, key_prefix="bgt",
                         retry=FAST, **options)


# --- Freshservice ----------------------------------------------------------------------------------------------

def test_freshservice_ticket_facts(freshservice: tuple[FreshserviceEmulator, str]) -> None:
    client = FreshserviceTicketing(freshservice[1], FS_KEY, retry=FAST)
    ticket = client.get_ticket("INC-501")

    assert ticket == TicketFacts(
        number="INC-501", system="freshservice", exists=True, open=True, kind="incident", priority=1, state="Open",
        caller="riley@contoso.example", assignee="sam@contoso.example", assignment_group="Identity On-Call",
        assignment_group_members=frozenset({"sam@contoso.example", "kai@contoso.example"}),
        short_description="Conditional Access policy misfire locked out all admins",
        url=f"{freshservice[1]}/a/tickets/501", sys_id="501")
    closed = client.get_ticket("#502")
    assert (closed.open, closed.state, closed.priority) == (False, "Closed", 3)  # priority 2 (Medium) -> P3
    assert client.get_ticket("INC-9999").exists is False
    calls = freshservice[0].calls.count()
    client.get_ticket("501")
    assert freshservice[0].calls.count() - calls == 2  # people are cached: only the ticket and the group again


def test_freshservice_private_note_is_escaped_html(freshservice: tuple[FreshserviceEmulator, str]) -> None:
    client = FreshserviceTicketing(freshservice[1], FS_KEY, retry=FAST)
    ticket = client.get_ticket("INC-501")
    client.add_note(ticket, "Granted <Global Administrator> to riley & co\nuntil 10:30")

    [note] = freshservice[0].notes(501)
    assert note["private"] is True
    assert note["body"] == "<div>Granted &lt;Global Administrator&gt; to riley &amp; co<br>until 10:30</div>"
    assert note["body_text"] == "Granted <Global Administrator> to riley & countil 10:30"


def test_freshservice_attachment_becomes_a_note(freshservice: tuple[FreshserviceEmulator, str]) -> None:
    client = FreshserviceTicketing(freshservice[1], FS_KEY, retry=FAST)
    client.attach(TicketFacts(number="INC-501", system="freshservice"), "evidence.md", b"# Evidence\n<b>x</b>",
                  "text/markdown")
    [note] = freshservice[0].notes(501)
    assert note["private"] is True
    assert note["body"].startswith("<div><b>[breakglass attachment] evidence.md (text/markdown, 19 bytes, SHA-256 ")
    assert "<pre># Evidence\n&lt;b&gt;x&lt;/b&gt;</pre>" in note["body"]


def test_freshservice_child_incident(freshservice: tuple[FreshserviceEmulator, str]) -> None:
    client = FreshserviceTicketing(freshservice[1], FS_KEY, retry=FAST,
                                   requester_email="svc_breakglass@contoso.example")
    parent = client.get_ticket("INC-501")
    number = client.open_child_incident(parent, "breakglass integration failure", "Receipt failed\n6 attempts")

    [created] = freshservice[0].state()["created_tickets"]
    assert number == f"INC-{created['id']}"
    assert (created["subject"], created["type"], created["status"], created["priority"]) == (
        "breakglass integration failure", "Incident", 2, 3)
    assert "Receipt failed<br>6 attempts" in created["description"] and "Related to INC-501" in created["description"]
    assert freshservice[0].requesters[created["requester_id"]]["primary_email"] == "svc_breakglass@contoso.example"
    with pytest.raises(TicketingUnavailableError, match="FRESHSERVICE_REQUESTER_EMAIL"):
        FreshserviceTicketing(freshservice[1], FS_KEY, retry=FAST).open_child_incident(None, "x", "y")


def test_freshservice_failures(freshservice: tuple[FreshserviceEmulator, str]) -> None:
    with pytest.raises(TicketingUnavailableError, match=r"credentials rejected \(HTTP 401\)"):
        FreshserviceTicketing(freshservice[1], "wrong-key", retry=FAST).get_ticket("INC-501")
    with pytest.raises(TicketingUnavailableError, match=r"HTTP 400 missing_field: Validation failed: subject"):
        FreshserviceTicketing(freshservice[1], FS_KEY, retry=FAST, requester_email="a@contoso.example"
                              ).open_child_incident(None, "", "no subject")
    freshservice[0].add_fault(path="/api/v2/tickets/501/notes", status=502)
    with pytest.raises(TicketingUnavailableError, match="HTTP 502"):
        FreshserviceTicketing(freshservice[1], FS_KEY, retry=FAST).add_note(TicketFacts(number="INC-501"), "x")
    assert freshservice[0].calls.count(path="/notes") == FAST.max_attempts


# --- Halo ------------------------------------------------------------------------------------------------------

def test_halo_ticket_facts_and_token_reuse(halo: tuple[HaloEmulator, str]) -> None:
    client = halo_client(halo[1])
    ticket = client.get_ticket("5001")

    assert (ticket.exists, ticket.open, ticket.kind, ticket.priority, ticket.caller, ticket.assignee) == (
        True, True, "incident", 1, "riley@contoso.example", "sam@contoso.example")
    assert (ticket.assignment_group, ticket.url, ticket.sys_id) == (
        "Identity On-Call", f"{halo[1]}/ticket?id=5001", "5001")
    closed = client.get_ticket("INC-5002")
    assert (closed.open, closed.priority) == (False, 2)
    assert client.get_ticket("4242").exists is False
    assert halo[0].token_request_count == 1
    [token_call] = halo[0].calls.list(path="/auth/token")
    assert token_call.query == {"tenant": "contoso"}
    assert (token_call.body["grant_type"], token_call.body["scope"]) == ("client_credentials", "all")


def test_halo_priority_and_status_mapping_is_configurable(halo: tuple[HaloEmulator, str]) -> None:
    client = halo_client(halo[1], priority_map={1: 2, 2: 1}, closed_status_ids=[2], ticket_types={1: "change"})
    ticket = client.get_ticket("5001")
    assert (ticket.priority, ticket.open, ticket.kind) == (2, False, "change")


def test_halo_note_is_a_hidden_action_posted_as_an_array(halo: tuple[HaloEmulator, str]) -> None:
    client = halo_client(halo[1])
    client.add_note(TicketFacts(number="5001", system="halo", sys_id="5001"), "Granted for 30 minutes")
    client.attach(TicketFacts(number="5001", system="halo"), "evidence.json", b'{"a": 1}', "application/json")

    note, attachment = halo[0].actions_for(5001)
    assert (note["note"], note["hiddenfromuser"], note["outcome"]) == ("Granted for 30 minutes", True,
                                                                         "Private Note")
    assert attachment["note"].startswith("[breakglass attachment] evidence.json (application/json, 8 bytes")
    # Halo shows notes as HTML: the content goes in escaped, its line breaks as <br>.
    assert attachment["note"].endswith("<br><br>{&quot;a&quot;: 1}") and attachment["hiddenfromuser"] is True
    assert all(isinstance(c.body, list) for c in halo[0].calls.list(path="/api/Actions", method="POST"))


def test_halo_child_incident(halo: tuple[HaloEmulator, str]) -> None:
    client = halo_client(halo[1])
    number = client.open_child_incident(client.get_ticket("5001"), "integration failure", "details")
    [created] = halo[0].state()["created_tickets"]
    assert number == str(created["id"])
    assert (created["summary"], created["parent_id"], created["tickettype_id"]) == ("integration failure", 5001, 1)


def test_halo_token_is_shared_through_redis_and_renewed_after_a_401(halo: tuple[HaloEmulator, str],
                                                                    redis_client: redis.Redis) -> None:
    halo_client(halo[1], redis_client).get_ticket("5001")
    other_process = halo_client(halo[1], redis_client)
    other_process.get_ticket("5001")
    assert halo[0].token_request_count == 1
    stored = redis_client.get(other_process.auth.cache_key)
    assert stored and other_process.auth.token().encode() not in stored  # encrypted at rest

    with halo[0].lock:
        halo[0].tokens.clear()  # Halo forgets every token (restart, revocation)
    assert other_process.get_ticket("5001").exists
    assert halo[0].token_request_count == 2
    assert other_process.http.stats.reauthenticated == 1


def test_halo_failures(halo: tuple[HaloEmulator, str]) -> None:
    wrong = HaloTicketing(halo[1], HALO_ID, "not-the-secret", retry=FAST)
    with pytest.raises(TicketingUnavailableError) as caught:
        wrong.get_ticket("5001")
    assert "credentials rejected (HTTP 401)" in str(caught.value) and "not-the-secret" not in str(caught.value)
    assert halo[0].token_request_count == 1  # a refused secret is not retried

    halo[0].add_fault(path="/auth/token", status=503)
    with pytest.raises(TicketingUnavailableError, match="authentication failed"):
        halo_client(halo[1]).get_ticket("5001")
    assert halo[0].calls.count(path="/auth/token") == 1 + FAST.max_attempts


def test_build_ticketing_for_freshservice_and_halo(freshservice: tuple[FreshserviceEmulator, str],
                                                   halo: tuple[HaloEmulator, str], redis_client: redis.Redis) -> None:
    fs = build_ticketing(make_settings(itsm="freshservice", freshservice_url=freshservice[1],
                                       freshservice_api_key=FS_KEY), redis_client)
    assert isinstance(fs, FreshserviceTicketing) and fs.get_ticket("INC-501").exists
    hl = build_ticketing(make_settings(itsm="halo", halo_url=halo[1], halo_client_id=HALO_ID,
                                       halo_client_secret=HALO_SECRET, halo_tenant="contoso"), redis_client)
    assert isinstance(hl, HaloTicketing) and hl.get_ticket("5001").exists


def test_a_ticket_reference_without_a_number_is_refused_before_any_call(freshservice, halo, redis_client):
    fs_emulator, fs_url = freshservice
    halo_emulator, halo_url = halo
    facts = TicketFacts(number="INC-ABC", system="x", exists=True)
    for name, client, emulator in [("Freshservice", FreshserviceTicketing(fs_url, FS_KEY, retry=FAST), fs_emulator),
                                   ("Halo", halo_client(halo_url, redis_client), halo_emulator)]:
        before = len(emulator.calls.list())
        with pytest.raises(TicketingUnavailableError, match=f"{name} .* 'INC-ABC' is not a ticket number"):
            client.add_note(facts, "granted")
        assert len(emulator.calls.list()) == before

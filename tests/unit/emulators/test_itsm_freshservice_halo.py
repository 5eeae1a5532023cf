"""Freshservice (Basic api_key:X) and HaloITSM (authinfo -> client credentials -> bearer, JSON-array bodies)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from services.emulators import FreshserviceEmulator, HaloEmulator, demo_seed
from services.emulators.fixture_files import body_of, load_fixture

from .conftest import Served, same_keys

FS_KEY = "breakglass-demo-freshservice-key"
RILEY_FS = 1_000_000_001


@pytest.fixture
def freshservice(serve: Callable[..., Served]) -> Served:
    emulator = FreshserviceEmulator()
    emulator.seed(demo_seed()["freshservice"])
    return serve(emulator, auth=(FS_KEY, "X"))


@pytest.fixture
def halo(serve: Callable[..., Served]) -> Served:
    emulator = HaloEmulator()
    emulator.seed(demo_seed()["halo"])
    return serve(emulator)


def test_freshservice_rejects_requests_without_the_api_key(freshservice: Served) -> None:
    response = requests.get(freshservice.url + "/api/v2/tickets/501", auth=("wrong", "X"), timeout=5)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"


def test_freshservice_ticket_has_the_fixture_fields(freshservice: Served) -> None:
    response = freshservice.get("/api/v2/tickets/501")
    assert response.status_code == 200
    ticket = response.json()["ticket"]
    same_keys(ticket, body_of("freshservice/ticket_get.http.json")["ticket"])
    assert (ticket["status"], ticket["priority"], ticket["requester_id"]) == (2, 4, RILEY_FS)
    assert freshservice.get("/api/v2/tickets/502").json()["ticket"]["status"] == 5
    assert freshservice.get("/api/v2/tickets/9999").status_code == 404


def test_freshservice_people_and_groups(freshservice: Served) -> None:
    assert freshservice.get(f"/api/v2/requesters/{RILEY_FS}").json()["requester"]["primary_email"] == (
        "riley@contoso.example")
    assert freshservice.get("/api/v2/agents/1000000003").json()["agent"]["email"] == "sam@contoso.example"
    group = freshservice.get("/api/v2/groups/2000000001").json()["group"]
    assert (group["name"], group["members"]) == ("Identity On-Call", [1_000_000_003, 1_000_000_007])


def test_freshservice_note_matches_the_fixture(freshservice: Served) -> None:
    request = load_fixture("freshservice/ticket_note_create.http.json")["request"]
    response = freshservice.post("/api/v2/tickets/501/notes", json=request["body"])
    expected = body_of("freshservice/ticket_note_create.http.json")["conversation"]
    assert response.status_code == 201
    note = response.json()["conversation"]
    same_keys(note, expected)
    assert (note["body"], note["body_text"], note["private"], note["ticket_id"]) == (
        expected["body"], expected["body_text"], True, 501)
    assert freshservice.emulator.notes(501) == [note]
    assert freshservice.post("/api/v2/tickets/501/notes", json={"private": True}).status_code == 400
    assert freshservice.post("/api/v2/tickets/9999/notes", json=request["body"]).status_code == 404


def test_freshservice_create_ticket(freshservice: Served) -> None:
    response = freshservice.post("/api/v2/tickets", json={
        "subject": "Breakglass integration failure", "description": "<p>Graph unreachable</p>",
        "email": "riley@contoso.example", "priority": 3, "status": 2})
    assert response.status_code == 201
    ticket = response.json()["ticket"]
    assert (ticket["requester_id"], ticket["description_text"]) == (RILEY_FS, "Graph unreachable")
    assert freshservice.get("/_emulator/state").json()["created_tickets"][0]["id"] == ticket["id"]
    assert freshservice.post("/api/v2/tickets", json={"subject": "x"}).status_code == 400


def _halo_token(halo: Served) -> str:
    auth_url = halo.get("/api/authinfo").json()["auth_url"]
    form = {**load_fixture("halo/auth_token_client_credentials.http.json")["request"]["form"],
            "client_id": "breakglass-halo-client", "client_secret": "breakglass-demo-halo-secret"}
    response = requests.post(f"{auth_url}/token", params={"tenant": "contoso"}, data=form, timeout=5)
    assert response.status_code == 200
    same_keys(response.json(), body_of("halo/auth_token_client_credentials.http.json"))
    return response.json()["access_token"]


def test_halo_authinfo_points_at_its_own_auth_endpoint(halo: Served) -> None:
    body = halo.get("/api/authinfo").json()
    same_keys(body, body_of("halo/authinfo.http.json"))
    assert body["auth_url"] == f"{halo.url}/auth"


def test_halo_requires_a_bearer_token_from_its_token_endpoint(halo: Served) -> None:
    assert halo.get("/api/Tickets/5001").status_code == 401
    bad = requests.post(f"{halo.url}/auth/token", data={"grant_type": "client_credentials", "client_id": "x",
                                                          "client_secret": "y", "scope": "all"}, timeout=5)
    assert bad.status_code == 400
    token = _halo_token(halo)
    assert halo.get("/api/Tickets/5001", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_halo_ticket_has_the_fixture_fields(halo: Served) -> None:
    halo.http.headers["Authorization"] = f"Bearer {_halo_token(halo)}"
    ticket = halo.get("/api/Tickets/5001").json()
    same_keys(ticket, body_of("halo/ticket_get.http.json"))
    assert (ticket["user_name"], ticket["priority_id"]) == ("Riley Chen", 1)
    assert halo.get("/api/tickets/5002").json()["status_id"] == 9  # case-insensitive route, closed ticket
    assert halo.get("/api/Tickets/4242").status_code == 404


def test_halo_actions_take_a_json_array_and_answer_the_saved_object(halo: Served) -> None:
    halo.http.headers["Authorization"] = f"Bearer {_halo_token(halo)}"
    body = load_fixture("halo/actions_post_note.http.json")["request"]["body"]
    body[0]["ticket_id"] = 5001
    response = halo.post("/api/Actions", json=body)
    expected = body_of("halo/actions_post_note.http.json")
    assert response.status_code == 201
    saved = response.json()
    assert set(expected) <= set(saved)
    assert (saved["ticket_id"], saved["note"], saved["hiddenfromuser"]) == (5001, body[0]["note"], True)
    assert halo.emulator.actions_for(5001) == [saved]

    not_array = halo.post("/api/Actions", json=body[0])
    assert not_array.status_code == 400


def test_halo_tickets_post_creates_and_updates(halo: Served) -> None:
    halo.http.headers["Authorization"] = f"Bearer {_halo_token(halo)}"
    created = halo.post("/api/Tickets", json=[{"summary": "Breakglass integration failure", "priority_id": 2}])
    assert created.status_code == 201
    ticket_id = created.json()["id"]
    updated = halo.post("/api/Tickets", json=[{"id": ticket_id, "status_id": 9}])
    assert (updated.json()["id"], updated.json()["status_id"]) == (ticket_id, 9)
    assert halo.post("/api/Tickets", json={"summary": "not an array"}).status_code == 400

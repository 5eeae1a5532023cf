"""Freshservice API v2: tickets, notes (conversations), requesters, agents, agent groups.

Auth is HTTP Basic ``base64(<api_key>:X)``: only the user part is checked, as on Freshservice. Ticket enums:
status 2 Open, 3 Pending, 4 Resolved, 5 Closed; priority 1 Low .. 4 Urgent. Error bodies other than the
fixtures follow the Freshworks v2 conventions and are marked unverified in the report.
"""

from __future__ import annotations

import base64
import binascii
import copy
import html
import itertools
import re
from typing import Any

from aiohttp import web

from .base import Emulator, StateError
from .clock import Clock, NowFn
from .isotime import zulu_seconds
from .responses import json_response, read_json

TICKET_DEFAULTS: dict[str, Any] = {
    # Field set of ticket_get.http.json.
    "cc_emails": [], "fwd_emails": [], "reply_cc_emails": [], "fr_escalated": False, "spam": False,
    "email_config_id": None, "group_id": None, "priority": 1, "requester_id": None, "requested_for_id": None,
    "responder_id": None, "source": 2, "status": 2, "subject": "", "to_emails": None, "sla_policy_id": None,
    "department_id": None, "id": None, "type": "Incident", "due_by": None, "fr_due_by": None,
    "is_escalated": False, "description": "", "description_text": "", "custom_fields": {}, "created_at": None,
    "updated_at": None, "urgency": 1, "impact": 1, "category": None, "sub_category": None,
    "item_category": None, "deleted": False, "attachments": [],
}
_TAGS = re.compile(r"<[^>]+>")
CONTENT_TYPE = "application/json; charset=utf-8"


def strip_html(text: str) -> str:
    return html.unescape(_TAGS.sub("", text)).strip()


def _error(status: int, code: str, message: str) -> web.Response:
    return json_response({"code": code, "message": message}, status=status, content_type=CONTENT_TYPE)


def _validation(field: str, message: str, code: str = "missing_field") -> web.Response:
    body = {"description": "Validation failed", "errors": [{"field": field, "message": message, "code": code}]}
    return json_response(body, status=400, content_type=CONTENT_TYPE)


class FreshserviceEmulator(Emulator):
    name = "freshservice"

    def __init__(
        self,
        *,
        api_key: str = "breakglass-demo-freshservice-key",
        api_agent_id: int | None = None,
        clock: Clock | NowFn | None = None,
        fault_seed: int = 0,
    ) -> None:
        self._api_key = api_key
        self._api_agent_id = api_agent_id  # the agent the API key belongs to: user_id of notes it writes
        super().__init__(clock=clock, fault_seed=fault_seed)

    # ----- state -----------------------------------------------------------------------------------------
    def _clear_state(self) -> None:
        self.api_key = self._api_key
        self.api_agent_id = self._api_agent_id
        self.tickets: dict[int, dict[str, Any]] = {}
        self.requesters: dict[int, dict[str, Any]] = {}
        self.agents: dict[int, dict[str, Any]] = {}
        self.groups: dict[int, dict[str, Any]] = {}
        self.conversations: dict[int, list[dict[str, Any]]] = {}
        self.created_tickets: list[int] = []
        self._ids = itertools.count(1000123456)

    def _snapshot(self) -> dict[str, Any]:
        return {
            "tickets": list(self.tickets.values()),
            "requesters": list(self.requesters.values()),
            "agents": list(self.agents.values()),
            "groups": list(self.groups.values()),
            "notes": {str(k): v for k, v in self.conversations.items()},
            "created_tickets": [self.tickets[i] for i in self.created_tickets if i in self.tickets],
            "api_agent_id": self.api_agent_id,
        }

    def _apply_state(self, data: dict[str, Any]) -> None:
        data = dict(data)
        if "api_key" in data:
            self.api_key = data.pop("api_key")
        if "api_agent_id" in data:
            self.api_agent_id = data.pop("api_agent_id")
        if "tickets" in data:
            self.tickets = {}
            for ticket in data.pop("tickets"):
                self._store_ticket(ticket)
        for key, target in (("requesters", "requesters"), ("agents", "agents"), ("groups", "groups")):
            if key in data:
                setattr(self, target, {int(item["id"]): copy.deepcopy(item) for item in data.pop(key)})
        if "notes" in data:
            self.conversations = {int(k): list(v) for k, v in data.pop("notes").items()}
        if "created_tickets" in data:
            raise StateError("'created_tickets' is read-only state")
        super()._apply_state(data)

    def _store_ticket(self, fields: dict[str, Any]) -> dict[str, Any]:
        now = zulu_seconds(self.clock.now())
        ticket = copy.deepcopy(TICKET_DEFAULTS)
        ticket.update({"created_at": now, "updated_at": now, "due_by": now, "fr_due_by": now})
        ticket.update(copy.deepcopy(fields))
        if ticket["id"] is None:
            ticket["id"] = max(self.tickets, default=100) + 1
        ticket["requested_for_id"] = ticket["requested_for_id"] or ticket["requester_id"]
        if ticket["description"] and not ticket["description_text"]:
            ticket["description_text"] = strip_html(ticket["description"])
        self.tickets[int(ticket["id"])] = ticket
        return ticket

    def _new_requester(self, email: str) -> dict[str, Any]:
        requester_id = max(self.requesters, default=1_000_000_500) + 1
        requester = {"id": requester_id, "first_name": email.split("@")[0], "last_name": "", "primary_email": email,
                     "secondary_emails": [], "job_title": None, "active": True, "department_ids": [],
                     "is_agent": False}
        self.requesters[requester_id] = requester
        return requester

    # ----- Python API ------------------------------------------------------------------------------------
    def notes(self, ticket_id: int) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.conversations.get(int(ticket_id), []))

    # ----- pipeline hooks --------------------------------------------------------------------------------
    async def preflight(self, request: web.Request) -> web.StreamResponse | None:
        if not request.path.startswith("/api/"):
            return None
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        user = ""
        if scheme.lower() == "basic":
            try:
                user = base64.b64decode(encoded.strip()).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                user = ""
        if not user or user != self.api_key:
            return _error(401, "invalid_credentials", "You have to be logged in to perform this action.")
        return None

    def fault_defaults(self, status: int, request: web.Request) -> tuple[dict[str, str], Any]:
        if status == 429:
            headers = {"Retry-After": "60", "X-Ratelimit-Total": "140", "X-Ratelimit-Remaining": "0",
                       "X-Ratelimit-Used-CurrentRequest": "1", "Content-Type": CONTENT_TYPE}
            return headers, {"message": "You have exceeded the limit of requests per minute"}
        return {"Content-Type": CONTENT_TYPE}, {"code": "emulated_fault", "message": f"Injected HTTP {status}"}

    # ----- routes ----------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v2/tickets/{id:\\d+}", self._h_ticket)
        r.add_put("/api/v2/tickets/{id:\\d+}", self._h_update_ticket)
        r.add_post("/api/v2/tickets", self._h_create_ticket)
        r.add_post("/api/v2/tickets/{id:\\d+}/notes", self._h_create_note)
        r.add_get("/api/v2/tickets/{id:\\d+}/conversations", self._h_conversations)
        r.add_get("/api/v2/requesters/{id:\\d+}", self._entity("requesters", "requester"))
        r.add_get("/api/v2/agents/{id:\\d+}", self._entity("agents", "agent"))
        r.add_get("/api/v2/groups/{id:\\d+}", self._entity("groups", "group"))

    def _entity(self, attribute: str, envelope: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            with self.lock:
                item = getattr(self, attribute).get(int(request.match_info["id"]))
            if item is None:
                return _error(404, "not_found", "The requested resource was not found.")
            return json_response({envelope: item}, content_type=CONTENT_TYPE)

        return handler

    async def _h_ticket(self, request: web.Request) -> web.Response:
        with self.lock:
            ticket = self.tickets.get(int(request.match_info["id"]))
        if ticket is None:
            return _error(404, "not_found", "The requested resource was not found.")
        return json_response({"ticket": ticket}, content_type=CONTENT_TYPE)

    async def _h_create_ticket(self, request: web.Request) -> web.Response:
        body, problem = await _object(request)
        if problem:
            return problem
        for required in ("subject", "description"):
            if not body.get(required):
                return _validation(required, "It should not be blank as this is a mandatory field")
        with self.lock:
            if "requester_id" not in body:
                email = body.get("email")
                requester = next((r for r in self.requesters.values() if r.get("primary_email") == email), None)
                if requester is None and not email:
                    return _validation("requester_id", "Please fill at least 1 of requester_id, email fields",
                                       "missing_field")
                if requester is None:  # Freshservice adds an unknown e-mail as a new requester (contact)
                    requester = self._new_requester(str(email))
                body["requester_id"] = requester["id"]
            body.pop("email", None)
            ticket = self._store_ticket({**body, "id": None})
            self.created_tickets.append(ticket["id"])
        return json_response({"ticket": ticket}, status=201, content_type=CONTENT_TYPE)

    async def _h_update_ticket(self, request: web.Request) -> web.Response:
        body, problem = await _object(request)
        if problem:
            return problem
        with self.lock:
            ticket = self.tickets.get(int(request.match_info["id"]))
            if ticket is None:
                return _error(404, "not_found", "The requested resource was not found.")
            ticket.update({k: v for k, v in body.items() if k in TICKET_DEFAULTS and k != "id"})
            ticket["updated_at"] = zulu_seconds(self.clock.now())
        return json_response({"ticket": ticket}, content_type=CONTENT_TYPE)

    async def _h_create_note(self, request: web.Request) -> web.Response:
        body, problem = await _object(request)
        if problem:
            return problem
        if not body.get("body"):
            return _validation("body", "It should not be blank as this is a mandatory field")
        ticket_id = int(request.match_info["id"])
        with self.lock:
            if ticket_id not in self.tickets:
                return _error(404, "not_found", "The requested resource was not found.")
            now = zulu_seconds(self.clock.now())
            note = {
                "id": next(self._ids), "user_id": self.api_agent_id, "from_email": None, "cc_emails": [],
                "bcc_emails": [], "to_emails": list(body.get("notify_emails") or []), "body": body["body"],
                "body_text": strip_html(body["body"]), "ticket_id": ticket_id, "incoming": False,
                "private": bool(body.get("private", True)), "support_email": None, "attachments": [],
                "created_at": now, "updated_at": now,
            }
            self.conversations.setdefault(ticket_id, []).append(note)
        return json_response({"conversation": note}, status=201, content_type=CONTENT_TYPE)

    async def _h_conversations(self, request: web.Request) -> web.Response:
        ticket_id = int(request.match_info["id"])
        with self.lock:
            if ticket_id not in self.tickets:
                return _error(404, "not_found", "The requested resource was not found.")
            items = list(self.conversations.get(ticket_id, []))
        return json_response({"conversations": items, "meta": {"count": len(items)}}, content_type=CONTENT_TYPE)


async def _object(request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
    try:
        body = await read_json(request)
    except ValueError:
        return {}, _validation("body", "Invalid JSON", "invalid_json")
    if not isinstance(body, dict):
        return {}, _validation("body", "The request body must be a JSON object", "datatype_mismatch")
    return body, None

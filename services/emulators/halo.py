"""HaloITSM: ``/api/authinfo`` -> ``/auth/token`` client credentials -> bearer on ``/api/*``.

Halo creates *and* updates by POSTing a JSON **array** to the same endpoint (an update carries ``id``); a non-array
body is rejected with 400 so a client that forgets the array shows up in tests. Routes are case-insensitive,
like Halo's ASP.NET backend (``/api/Tickets`` and ``/api/tickets`` both work).
"""

from __future__ import annotations

import copy
import itertools
import secrets
import time
from typing import Any

from aiohttp import web

from .base import Emulator
from .clock import Clock, NowFn
from .isotime import local_seconds
from .responses import json_response, origin, read_json

TICKET_DEFAULTS: dict[str, Any] = {
    # Field set of halo/ticket_get.http.json.
    "id": None, "summary": "", "details": "", "status_id": 1, "tickettype_id": 1, "client_id": None,
    "site_id": None, "user_id": None, "user_name": "", "agent_id": None, "team": "", "priority_id": 4,
    "dateoccurred": None,
}
CLOSED_STATUS_ID = 9  # Halo's default "Closed" status


def _ci(word: str) -> str:
    return f"{{_{word}:(?i:{word})}}"


class HaloEmulator(Emulator):
    name = "halo"

    def __init__(
        self,
        *,
        tenant: str = "contoso",
        client_id: str = "breakglass-halo-client",
        client_secret: str = "breakglass-demo-halo-secret",  # noqa: S107 - emulator-only credential
        token_lifetime_s: int = 3600,
        clock: Clock | NowFn | None = None,
        fault_seed: int = 0,
    ) -> None:
        self.tenant = tenant
        self._credentials = (client_id, client_secret)
        self.token_lifetime_s = token_lifetime_s
        super().__init__(clock=clock, fault_seed=fault_seed)

    # ----- state -----------------------------------------------------------------------------------------
    def _clear_state(self) -> None:
        self.client_id, self.client_secret = self._credentials
        self.tickets: dict[int, dict[str, Any]] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self.agents: dict[int, dict[str, Any]] = {}
        self.actions: list[dict[str, Any]] = []
        self.created_tickets: list[int] = []
        self.tokens: dict[str, float] = {}  # token -> expiry (real time, like the Entra tokens)
        self.token_request_count = 0
        self._action_ids = itertools.count(1)

    def _snapshot(self) -> dict[str, Any]:
        return {
            "tickets": list(self.tickets.values()),
            "users": list(self.users.values()),
            "agents": list(self.agents.values()),
            "actions": list(self.actions),
            "created_tickets": [self.tickets[i] for i in self.created_tickets if i in self.tickets],
            "token_request_count": self.token_request_count,
        }

    def _apply_state(self, data: dict[str, Any]) -> None:
        data = dict(data)
        if "credentials" in data:
            creds = data.pop("credentials")
            self.client_id, self.client_secret = creds["client_id"], creds["client_secret"]
        if "tickets" in data:
            self.tickets = {}
            for ticket in data.pop("tickets"):
                self._store_ticket(ticket)
        if "users" in data:
            self.users = {int(u["id"]): copy.deepcopy(u) for u in data.pop("users")}
        if "agents" in data:
            self.agents = {int(a["id"]): copy.deepcopy(a) for a in data.pop("agents")}
        if "actions" in data:
            self.actions = copy.deepcopy(data.pop("actions"))
        super()._apply_state(data)

    def _store_ticket(self, fields: dict[str, Any]) -> dict[str, Any]:
        ticket = copy.deepcopy(TICKET_DEFAULTS)
        ticket["dateoccurred"] = local_seconds(self.clock.now())
        ticket.update(copy.deepcopy(fields))
        if ticket["id"] is None:
            ticket["id"] = max(self.tickets, default=1000) + 1
        self.tickets[int(ticket["id"])] = ticket
        return ticket

    # ----- Python API ------------------------------------------------------------------------------------
    def actions_for(self, ticket_id: int) -> list[dict[str, Any]]:
        with self.lock:
            return [a for a in self.actions if int(a.get("ticket_id", -1)) == int(ticket_id)]

    # ----- pipeline hooks --------------------------------------------------------------------------------
    async def preflight(self, request: web.Request) -> web.StreamResponse | None:
        if not request.path.lower().startswith("/api/") or request.path.lower() == "/api/authinfo":
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        with self.lock:
            expiry = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or expiry <= time.time():
            return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None

    def fault_defaults(self, status: int, request: web.Request) -> tuple[dict[str, str], Any]:
        headers = {"Retry-After": "10"} if status == 429 else {}
        return headers, {"ClassName": "EmulatedFault", "Message": f"Injected HTTP {status}"}

    # ----- routes ----------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(f"/api/{_ci('authinfo')}", self._h_authinfo)
        r.add_post("/auth/token", self._h_token)
        r.add_get(f"/api/{_ci('tickets')}/{{id:\\d+}}", self._h_ticket)
        r.add_post(f"/api/{_ci('tickets')}", self._h_post_tickets)
        r.add_post(f"/api/{_ci('actions')}", self._h_post_actions)
        r.add_get(f"/api/{_ci('actions')}", self._h_list_actions)
        r.add_get(f"/api/{_ci('users')}/{{id:\\d+}}", self._entity("users"))
        r.add_get(f"/api/{_ci('agent')}/{{id:\\d+}}", self._entity("agents"))

    async def _h_authinfo(self, request: web.Request) -> web.Response:
        return json_response({"auth_url": f"{origin(request)}/auth", "tenant_id": self.tenant})

    async def _h_token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        with self.lock:
            self.token_request_count += 1
        tenant = request.query.get("tenant")
        if tenant is not None and tenant != self.tenant:
            return json_response({"error": "invalid_request", "error_description": "Unknown tenant"}, status=400)
        if form.get("grant_type") != "client_credentials":
            return json_response({"error": "unsupported_grant_type"}, status=400)
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id, self.client_secret):
            return json_response({"error": "invalid_client"}, status=400)
        if "all" not in form.get("scope", "").split():
            return json_response({"error": "invalid_scope"}, status=400)
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = time.time() + self.token_lifetime_s
        return json_response({"token_type": "Bearer", "access_token": token,
                              "expires_in": self.token_lifetime_s, "scope": "all"})

    def _entity(self, attribute: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            with self.lock:
                item = getattr(self, attribute).get(int(request.match_info["id"]))
            if item is None:
                return json_response({"ClassName": "NotFound", "Message": "Record not found"}, status=404)
            return json_response(item)

        return handler

    async def _h_ticket(self, request: web.Request) -> web.Response:
        with self.lock:
            ticket = self.tickets.get(int(request.match_info["id"]))
        if ticket is None:
            return json_response({"ClassName": "NotFound", "Message": "Ticket not found"}, status=404)
        return json_response(ticket)

    async def _h_post_tickets(self, request: web.Request) -> web.Response:
        items, problem = await _array(request)
        if problem:
            return problem
        saved: list[dict[str, Any]] = []
        with self.lock:
            for item in items:
                if item.get("id"):
                    existing = self.tickets.get(int(item["id"]))
                    if existing is None:
                        return json_response({"ClassName": "NotFound", "Message": f"Ticket {item['id']} not found"},
                                             status=404)
                    existing.update({k: v for k, v in item.items() if k != "id"})
                    saved.append(existing)
                else:
                    ticket = self._store_ticket({**item, "id": None})
                    self.created_tickets.append(ticket["id"])
                    saved.append(ticket)
        return json_response(saved[0] if len(saved) == 1 else saved, status=201)

    async def _h_post_actions(self, request: web.Request) -> web.Response:
        items, problem = await _array(request)
        if problem:
            return problem
        saved: list[dict[str, Any]] = []
        with self.lock:
            for item in items:
                ticket_id = item.get("ticket_id")
                if ticket_id is None or int(ticket_id) not in self.tickets:
                    return json_response({"ClassName": "BadRequest", "Message": f"Invalid ticket_id {ticket_id}"},
                                         status=400)
                action = {"id": next(self._action_ids), **item, "who": "API User",
                          "datetime": local_seconds(self.clock.now())}
                self.actions.append(action)
                saved.append(action)
        return json_response(saved[0] if len(saved) == 1 else saved, status=201)

    async def _h_list_actions(self, request: web.Request) -> web.Response:
        ticket_id = request.query.get("ticket_id")
        with self.lock:
            rows = [a for a in self.actions if ticket_id is None or str(a.get("ticket_id")) == ticket_id]
        return json_response({"record_count": len(rows), "actions": rows})


async def _array(request: web.Request) -> tuple[list[dict[str, Any]], web.Response | None]:
    try:
        body = await read_json(request)
    except ValueError:
        return [], json_response({"ClassName": "BadRequest", "Message": "Invalid JSON"}, status=400)
    if not isinstance(body, list) or not all(isinstance(i, dict) for i in body) or not body:
        return [], json_response(
            {"ClassName": "BadRequest", "Message": "The request body must be a JSON array of objects"}, status=400
        )
    return body, None

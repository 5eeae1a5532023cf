"""Inbound ITSM trigger: `POST /api/itsm/{servicenow|freshservice|halo}`.

A ServiceNow Business Rule (or Flow step, or the equivalent automation in Freshservice/Halo) posts a small JSON
body signed with HMAC-SHA256 over "<timestamp>.<body>" (header X-Breakglass-Signature: sha256=<hex>, header
X-Breakglass-Timestamp: unix seconds). A stale timestamp or a replayed MAC (in any spelling) is refused. The request
is created on behalf of `requested_for`, who must be the ticket's caller as the ticketing system reports it (or,
only where the policy says `webhooks: {requested_for: assignment_group}`, its assignee or a member of its assignment
group), and goes through exactly the same policy as a chat request; that person gets the request card in Teams.
See docs/deploy-azure.md for the Business Rule script.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from policies.document import PolicyDocument
from policies.durations import DurationError, parse_duration
from policies.model import Principal
from policies.text import clean_input, one_line
from services.composition import Services
from services.settings import Settings
from services.state import queue as jobs
from services.state.queue import job_id
from services.workflow.access import AccessError, IntakeInput, Who

PROVIDERS = {"servicenow", "freshservice", "halo"}
SIGNATURE_HEADER = "X-Breakglass-Signature"
TIMESTAMP_HEADER = "X-Breakglass-Timestamp"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verified_mac(secret: bytes, timestamp: str, body: bytes, given: str) -> bytes | None:
    """Hex (most HTTP clients) or base64 (ServiceNow's GlideCertificateEncryption.generateMac) encodings: the MAC
    bytes when `given` is a valid spelling of them, else None. Replays are keyed on these bytes, never
    on the header string: one MAC has several spellings (hex, base64), and each must count as the same delivery."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).digest()
    candidates = ["sha256=" + digest.hex(), "sha256=" + base64.b64encode(digest).decode()]
    return digest if any(hmac.compare_digest(given.encode(), c.encode()) for c in candidates) else None


class TicketTrigger(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event: str = "jit.requested"
    ticket: str = Field(min_length=3, max_length=40)
    requested_for: str = Field(min_length=3, max_length=256)
    role: str = Field(min_length=2, max_length=120)
    duration: str | int
    justification: str = Field(default="", max_length=2000)

    @field_validator("ticket", "requested_for", "role")
    @classmethod
    def _one_line(cls, v: str) -> str:
        return one_line(v)

    @field_validator("justification")
    @classmethod
    def _text(cls, v: str) -> str:
        return clean_input(v)

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: str | int) -> str | int:
        try:
            parse_duration(v)
        except DurationError as exc:
            raise ValueError(str(exc)) from exc
        return v


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class ItsmWebhook:
    def __init__(self, settings: Settings, services: Services):
        self.settings = settings
        self.services = services

    async def handle(self, request: web.Request) -> web.Response:
        provider = request.match_info.get("provider", "")
        if provider not in PROVIDERS:
            return _error(404, "unknown ticketing system")
        secret = self.settings.itsm_webhook_secret
        if secret is None or not secret.get_secret_value():
            return _error(503, "the ITSM webhook is disabled (BREAKGLASS_ITSM_WEBHOOK_SECRET is not set)")
        if request.content_type != "application/json":
            return _error(415, "Content-Type must be application/json")
        if request.content_length is not None and request.content_length > 64 * 1024:
            return _error(413, "body too large")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "body too large")
        if len(body) > 64 * 1024:
            return _error(413, "body too large")
        stamp = request.headers.get(TIMESTAMP_HEADER, "")
        given = request.headers.get(SIGNATURE_HEADER, "")
        try:
            skew = abs(time.time() - int(stamp))
        except ValueError:
            return _error(401, "missing or malformed timestamp")
        if skew > self.settings.itsm_webhook_max_skew_s:
            return _error(401, "timestamp outside the replay window")
        digest = verified_mac(secret.get_secret_value().encode(), stamp, body, given)
        if digest is None:
            return _error(401, "bad signature")
        store = self.services.runtime.store
        if not await asyncio.to_thread(store.first_time, f"webhook:{digest.hex()}",
                                       2 * self.settings.itsm_webhook_max_skew_s):
            return _error(409, "replayed delivery")
        try:
            trigger = TicketTrigger.model_validate(json.loads(body))
        except (ValueError, ValidationError) as exc:
            return _error(400, "invalid body", detail=str(exc)[:500])
        return await self._create(provider, trigger)

    async def _create(self, provider: str, trigger: TicketTrigger) -> web.Response:
        access = self.services.access
        audit = self.services.runtime.audit
        try:
            caller = await asyncio.to_thread(access.principal, trigger.requested_for)
        except AccessError as exc:
            await asyncio.to_thread(audit.append, "itsm.trigger_rejected", actor=f"itsm:{provider}",
                                    data={"ticket": trigger.ticket, "reason": exc.message})
            return _error(422, exc.message)
        policy = self.services.runtime.policies.current()
        refusal = await asyncio.to_thread(self._not_allowed_for, trigger.ticket.upper(), caller, policy)
        if refusal is not None:
            status, reason = refusal
            await asyncio.to_thread(audit.append, "itsm.trigger_rejected", actor=f"itsm:{provider}",
                                    data={"ticket": trigger.ticket, "requested_for": caller.object_id,
                                          "reason": reason})
            return _error(status, reason)
        wanted = trigger.role.strip().lower()
        entitlement = next((e.id for e in policy.entitlements if wanted in {e.id, e.display_name.lower()}), None)
        if entitlement is None:
            return _error(422, f"unknown role {trigger.role!r}")
        minutes = int(parse_duration(trigger.duration).total_seconds() // 60)
        form = IntakeInput(entitlement=entitlement, duration_minutes=minutes,
                           justification=trigger.justification or f"Requested in {trigger.ticket}",
                           ticket=trigger.ticket.upper(), target="")
        who = Who(object_id=caller.object_id, name=caller.display_name)
        await asyncio.to_thread(audit.append, "itsm.trigger_received", actor=f"itsm:{provider}",
                                data={"ticket": trigger.ticket, "requested_for": caller.object_id,
                                      "entitlement": entitlement, "minutes": minutes})
        draft = f"itsm:{provider}:{trigger.ticket.upper()}:{entitlement}:{minutes}:{caller.object_id}"
        result = await asyncio.to_thread(access.submit, who, form, draft_id=draft, source="itsm", requester=caller)
        if not result.accepted:
            return _error(422, "the request does not satisfy the policy", fields=result.field_errors,
                          reasons=result.problems)
        record = result.record
        assert record is not None
        await asyncio.to_thread(self.services.queue.enqueue, jobs.SEND_REQUEST_CARD, record.id,
                                jid=job_id("request-card", record.id))
        return web.json_response({"request_id": record.id, "state": record.state.value,
                                  "summary": record.decision.summary()}, status=202)

    def _not_allowed_for(self, ticket: str, person: Principal, policy: PolicyDocument) -> tuple[int, str] | None:
        """Why the ticket may not ask access for `person`, or None. Checked against the ticketing system's own
        record of the ticket, never the webhook body; a ticket that cannot be read asks for nobody."""
        facts = self.services.access.ticket_facts(ticket)
        if facts is None:
            return 503, f"ticket {ticket} could not be read right now, so whom it may ask for cannot be checked"
        if not facts.exists:
            return 422, f"ticket {ticket} does not exist"
        ids = person.identifiers()
        if facts.caller and facts.caller.lower() in ids:
            return None
        if policy.webhooks.requested_for == "assignment_group":
            if (facts.assignee and facts.assignee.lower() in ids) or \
                    ids & {m.lower() for m in facts.assignment_group_members}:
                return None
            return 422, f"requested_for must be the caller, the assignee or in the assignment group of {ticket}"
        return 422, (f"requested_for must be the caller of {ticket} (the policy's webhooks.requested_for is "
                     f"\"caller\")")

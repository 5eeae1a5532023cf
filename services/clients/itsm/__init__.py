"""Ticketing adapters (`services.ports.Ticketing`) for ServiceNow, Freshservice and HaloITSM.

Every failure (unreachable, 5xx, 429 after retries, rejected credentials, refused calls) surfaces as
`TicketingUnavailableError` with a short message that names the system and the HTTP status, never a credential.
ITSM calls get a shorter retry budget than Graph: the bot looks tickets up while a person waits, and receipts
are retried by the job layer anyway.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import re
from typing import TYPE_CHECKING

import redis

from policies.model import TicketFacts
from services.clients.http import RetryPolicy, UpstreamError
from services.ports import Ticketing, TicketingUnavailableError

if TYPE_CHECKING:
    from services.settings import Settings

ITSM_MAX_ATTEMPTS = 3
ITSM_BUDGET_S = 20.0
ATTACHMENT_NOTE_LIMIT = 60_000  # characters of attachment content copied into a note
_TRAILING_NUMBER = re.compile(r"(\d+)\s*$")


def unavailable(system: str, exc: UpstreamError, action: str) -> TicketingUnavailableError:
    """A short, secret-free description of why a ticketing call failed."""
    if exc.kind == "auth" or exc.status in (401, 403):
        why = f"credentials rejected (HTTP {exc.status})" if exc.status else f"authentication failed ({exc.code})"
    elif exc.status == 429:
        wait = f", retry after {exc.retry_after:g}s" if exc.retry_after is not None else ""
        why = f"rate limited (HTTP 429{wait})"
    elif exc.status is not None:
        why = f"HTTP {exc.status}" + (f" {exc.code}" if exc.code else "") + (f": {exc.message[:120]}"
                                                                              if exc.message else "")
    else:
        why = "unreachable (" + ("timed out" if exc.kind == "timeout" else exc.kind) + ")"
    tries = f" after {exc.attempts} attempts" if exc.attempts > 1 else ""
    return TicketingUnavailableError(f"{system} {action} failed: {why}{tries}")


def html_text(text: str) -> str:
    """Plain text as an HTML fragment (Freshservice and Halo render notes as HTML): escaped, line breaks kept."""
    return html.escape(text).replace("\r\n", "\n").replace("\n", "<br>")


def trailing_number(reference: str) -> int | None:
    """501 from "INC-501", "#SR-501" or "501" (Freshservice and Halo number tickets with plain integers)."""
    match = _TRAILING_NUMBER.search(reference.strip())
    return int(match.group(1)) if match else None


def numeric_ticket_id(system: str, ticket: TicketFacts, action: str) -> int:
    """The integer id Freshservice and Halo address a ticket by, from what the ticket facts recorded."""
    ticket_id = trailing_number(ticket.sys_id or ticket.number)
    if ticket_id is None:
        raise TicketingUnavailableError(f"{system} {action} failed: {ticket.number!r} is not a ticket number")
    return ticket_id


def attachment_note(filename: str, content: bytes, content_type: str) -> tuple[str, str]:
    """(header, text) to put an attachment into a note where the adapter uploads no files: UTF-8 content as is,
    anything else base64; long content is cut (the header gives the size and SHA-256 of the whole file)."""
    digest = hashlib.sha256(content).hexdigest()
    try:
        text, encoding = content.decode("utf-8"), ""
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(content).decode(), ", base64"
    cut = ""
    if len(text) > ATTACHMENT_NOTE_LIMIT:
        text, cut = text[:ATTACHMENT_NOTE_LIMIT], f" (first {ATTACHMENT_NOTE_LIMIT} characters)"
    header = (f"[breakglass attachment] {filename} ({content_type}, {len(content)} bytes{encoding}, "
              f"SHA-256 {digest}){cut}")
    return header, text


def itsm_retry(settings: Settings) -> RetryPolicy:
    return dataclasses.replace(RetryPolicy.from_settings(settings),
                               max_attempts=min(settings.http_max_attempts, ITSM_MAX_ATTEMPTS),
                               budget_s=min(settings.http_retry_budget_s, ITSM_BUDGET_S))


def build_ticketing(settings: Settings, redis_client: redis.Redis | None = None) -> Ticketing | None:
    """The configured adapter, or None when BREAKGLASS_ITSM=none."""
    if settings.itsm == "none":
        return None
    from services.settings import ConfigurationError

    problems = settings._problems_itsm()
    if problems:
        raise ConfigurationError(problems)
    retry = itsm_retry(settings)
    if settings.itsm == "servicenow":
        from services.clients.itsm.servicenow import ServiceNowTicketing

        assert settings.servicenow_instance_url and settings.servicenow_username and settings.servicenow_password
        return ServiceNowTicketing(settings.servicenow_instance_url, settings.servicenow_username,
                                   settings.servicenow_password.get_secret_value(), timeout=settings.itsm_timeout_s,
                                   retry=retry, affected_field=settings.itsm_affected_field)
    if settings.itsm == "freshservice":
        from services.clients.itsm.freshservice import FreshserviceTicketing

        assert settings.freshservice_url and settings.freshservice_api_key
        return FreshserviceTicketing(settings.freshservice_url, settings.freshservice_api_key.get_secret_value(),
                                     requester_email=settings.freshservice_requester_email,
                                     timeout=settings.itsm_timeout_s, retry=retry)
    from services.clients.itsm.halo import HaloTicketing

    assert settings.halo_url and settings.halo_client_id and settings.halo_client_secret
    return HaloTicketing(settings.halo_url, settings.halo_client_id, settings.halo_client_secret.get_secret_value(),
                         tenant=settings.halo_tenant, priority_map=settings.halo_priority_map,
                         closed_status_ids=settings.halo_closed_status_ids, ticket_types=settings.halo_ticket_types,
                         redis_client=redis_client, key_prefix=settings.key_prefix, timeout=settings.itsm_timeout_s,
                         retry=retry)

"""Freshservice API v2 with Basic auth `api_key:X` (PROTOCOL_NOTES §7).

Ticket numbers are plain integers shown as INC-501 / SR-502. The caller is the requester (an agent may be the
requester, so an unknown requester id is looked up among agents too), the assignee is the responder agent and
the assignment group's members are agents. Agent and requester e-mails are cached in process for a few minutes:
a group of ten would otherwise cost ten calls per lookup.

Notes are private and HTML (the text is escaped). Files: breakglass does not upload through the multipart note
API; `attach` adds a private note with a clear "[breakglass attachment]" header and the content instead.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from policies.model import TicketFacts
from services.clients.http import HttpClient, RetryPolicy, UpstreamError
from services.clients.itsm import attachment_note, html_text, numeric_ticket_id, trailing_number, unavailable
from services.ports import TicketingUnavailableError

SYSTEM = "Freshservice"
STATUS_NAMES = {2: "Open", 3: "Pending", 4: "Resolved", 5: "Closed"}
CLOSED_STATUSES = frozenset({4, 5})
KINDS = {"incident": "incident", "service request": "service_request", "change": "change"}


class FreshserviceTicketing:
    system = "freshservice"

    def __init__(self, base_url: str, api_key: str, *, requester_email: str | None = None, timeout: float = 10.0,
                 retry: RetryPolicy | None = None, people_ttl_s: float = 600.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.base_url = base_url.rstrip("/")
        self.requester_email = requester_email
        self.http = HttpClient("freshservice", base_url=self.base_url, timeout=timeout, retry=retry,
                               basic_auth=(api_key, "X"), sleep=sleep)
        self.people_ttl_s = people_ttl_s
        self._people: dict[tuple[str, int], tuple[str | None, float]] = {}
        self._people_lock = threading.Lock()

    def _call(self, action: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except UpstreamError as exc:
            raise unavailable(SYSTEM, exc, action) from None

    # --- people ---

    def _person(self, kind: str, person_id: Any) -> str | None:
        """Lower-cased e-mail of a requester ("requesters") or agent ("agents"); None when unknown."""
        if not isinstance(person_id, int) or person_id <= 0:
            return None
        key = (kind, person_id)
        with self._people_lock:
            hit = self._people.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        response = self._call("ticket lookup", "GET", f"api/v2/{kind}/{person_id}", allow=(404,))
        email = None
        if response.status_code != 404:
            body = response.json()
            record = body.get("requester") or body.get("agent") or {}
            email = str(record.get("primary_email") or record.get("email") or "").strip().lower() or None
        elif kind == "requesters":
            email = self._person("agents", person_id)  # an agent who raised the ticket
        with self._people_lock:
            self._people[key] = (email, time.monotonic() + self.people_ttl_s)
        return email

    def _group(self, group_id: Any) -> tuple[str | None, frozenset[str]]:
        if not isinstance(group_id, int) or group_id <= 0:
            return None, frozenset()
        response = self._call("group lookup", "GET", f"api/v2/groups/{group_id}", allow=(404,))
        if response.status_code == 404:
            return None, frozenset()
        group = response.json().get("group") or {}
        emails = (self._person("agents", member) for member in group.get("members") or [])
        return (str(group.get("name") or "") or None), frozenset(e for e in emails if e)

    # --- Ticketing ---

    def get_ticket(self, number: str) -> TicketFacts:
        ticket_id = trailing_number(number)
        if ticket_id is None:
            return TicketFacts(number=number.strip(), system=self.system, exists=False, open=False)
        response = self._call("ticket lookup", "GET", f"api/v2/tickets/{ticket_id}", allow=(404,))
        if response.status_code == 404:
            return TicketFacts(number=number.strip(), system=self.system, exists=False, open=False)
        ticket = response.json().get("ticket") or {}
        kind = KINDS.get(str(ticket.get("type") or "").strip().lower(), "other")
        status = ticket.get("status")
        priority = ticket.get("priority")
        group, members = self._group(ticket.get("group_id"))
        prefix = "SR" if kind == "service_request" else "INC"
        return TicketFacts(
            number=f"{prefix}-{ticket_id}", system=self.system, exists=True, open=status not in CLOSED_STATUSES,
            kind=kind,  # type: ignore[arg-type]
            priority=5 - priority if isinstance(priority, int) and 1 <= priority <= 4 else None,  # 4 Urgent = P1
            state=STATUS_NAMES.get(status, str(status)) if isinstance(status, int) else "",
            caller=self._person("requesters", ticket.get("requester_id")),
            assignee=self._person("agents", ticket.get("responder_id")),
            assignment_group=group, assignment_group_members=members,
            short_description=str(ticket.get("subject") or ""), url=f"{self.base_url}/a/tickets/{ticket_id}",
            sys_id=str(ticket_id))

    def _note(self, ticket: TicketFacts, body_html: str, action: str) -> None:
        ticket_id = numeric_ticket_id(SYSTEM, ticket, action)
        self._call(action, "POST", f"api/v2/tickets/{ticket_id}/notes", json={"body": body_html, "private": True})

    def add_note(self, ticket: TicketFacts, text: str) -> None:
        self._note(ticket, f"<div>{html_text(text)}</div>", "note")

    def attach(self, ticket: TicketFacts, filename: str, content: bytes, content_type: str) -> None:
        header, text = attachment_note(filename, content, content_type)
        self._note(ticket, f"<div><b>{html.escape(header)}</b></div><pre>{html.escape(text)}</pre>", "attachment")

    def open_child_incident(self, parent: TicketFacts | None, short_description: str, description: str) -> str:
        requester = self.requester_email or (parent.caller if parent is not None else None)
        if not requester:
            raise TicketingUnavailableError(f"{SYSTEM} child incident failed: no requester (set "
                                            "FRESHSERVICE_REQUESTER_EMAIL)")
        body_html = f"<div>{html_text(description)}</div>"
        if parent is not None:
            link = html.escape(parent.url or "", quote=True)
            body_html += (f'<p>Related to {html.escape(parent.number)}'
                          + (f': <a href="{link}">{link}</a>' if link else "") + "</p>")
        response = self._call("child incident", "POST", "api/v2/tickets", json={
            "subject": short_description[:255], "description": body_html, "email": requester, "priority": 3,
            "status": 2, "type": "Incident"})
        return f"INC-{response.json()['ticket']['id']}"

    def open_incident(self, short_description: str, description: str, *, priority: int = 1) -> TicketFacts:
        if not self.requester_email:
            raise TicketingUnavailableError(f"{SYSTEM} incident failed: no requester (set "
                                            "FRESHSERVICE_REQUESTER_EMAIL)")
        # Freshservice priority 4 is Urgent (P1) .. 1 Low (P4); urgency and impact 3 are High.
        level = max(1, min(4, 5 - priority))
        response = self._call("incident", "POST", "api/v2/tickets", json={
            "subject": short_description[:255], "description": f"<div>{html_text(description)}</div>",
            "email": self.requester_email, "priority": level, "urgency": 3 if priority <= 2 else 2,
            "impact": 3 if priority <= 2 else 2, "status": 2, "type": "Incident"})
        ticket_id = int(response.json()["ticket"]["id"])
        return TicketFacts(number=f"INC-{ticket_id}", system=self.system, exists=True, open=True, kind="incident",
                           priority=priority, state="Open", short_description=short_description[:255],
                           url=f"{self.base_url}/a/tickets/{ticket_id}", sys_id=str(ticket_id))

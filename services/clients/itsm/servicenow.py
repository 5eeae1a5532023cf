"""ServiceNow Table and Attachment APIs with Basic auth (PROTOCOL_NOTES §6).

A ticket is read in one query with dot-walked fields (caller and assignee e-mail and user name, the assignment
group's name) and `sysparm_display_value=all`, so the state reads as "In Progress" while logic uses raw values;
the group's active members come from `sys_user_grmember` in a second query. Work notes are PATCHed (the Table API
echoes journal fields as ""), attachments are raw bytes with their Content-Type, and an integration-failure
incident is a child of the ticket through `parent_incident`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from policies.model import TicketFacts
from services.clients.http import HttpClient, RetryPolicy, UpstreamError
from services.clients.itsm import unavailable
from services.ports import TicketingUnavailableError

SYSTEM = "ServiceNow"
_NUMBER = re.compile(r"([A-Za-z]+)-?([0-9]+)")
_SYS_ID = re.compile(r"[0-9A-Za-z]{32}")
# Text between [code] and [/code] in a journal field is rendered as HTML (glide.ui.security.allow_codetag, true by
# default), so a tag in anything we write, however spelled, is broken into plain parentheses.
_CODE_TAG = re.compile(r"\[(\s*/?\s*code\s*)\]", re.IGNORECASE)
CLOSED_INCIDENT_STATES = frozenset({"6", "7", "8"})  # Resolved, Closed, Canceled (a resolved incident stays active)


@dataclass(frozen=True)
class TableInfo:
    table: str
    kind: str
    caller_field: str


TABLES = {
    "INC": TableInfo("incident", "incident", "caller_id"),
    "CHG": TableInfo("change_request", "change", "requested_by"),
    "RITM": TableInfo("sc_req_item", "request", "requested_for"),
    "REQ": TableInfo("sc_request", "request", "requested_for"),
    "SCTASK": TableInfo("sc_task", "request", "opened_by"),
    "PRB": TableInfo("problem", "other", "opened_by"),
}
OTHER = TableInfo("task", "other", "opened_by")


def journal_text(text: str) -> str:
    """Text for a journal or description field: no [code] tag survives."""
    return _CODE_TAG.sub(r"(\1)", text)


def parse_number(number: str) -> tuple[str, TableInfo] | None:
    """("INC0012345", incident) from "INC0012345" or "inc-0012345"; None for anything that is not a number
    (which also keeps user input out of the encoded query)."""
    match = _NUMBER.fullmatch(number.strip())
    if not match:
        return None
    prefix = match.group(1).upper()
    return prefix + match.group(2), TABLES.get(prefix, OTHER)


def _identity(email: str, user_name: str) -> str | None:
    for value in (email, user_name):
        if value and "@" in value:
            return value.strip().lower()
    return None


class ServiceNowTicketing:
    system = "servicenow"

    def __init__(self, instance_url: str, username: str, password: str, *, timeout: float = 10.0,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                 affected_field: str | None = None):
        self.base_url = instance_url.rstrip("/")
        # A reference to sys_user naming the incident's affected account (u_affected_user, caller_id, ...).
        self.affected_field = affected_field
        self.http = HttpClient("servicenow", base_url=self.base_url, timeout=timeout, retry=retry,
                               basic_auth=(username, password), sleep=sleep)

    def _call(self, action: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except UpstreamError as exc:
            raise unavailable(SYSTEM, exc, action) from None

    def _rows(self, action: str, table: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        body = self._call(action, "GET", f"api/now/table/{table}", params=params).json()
        return list(body.get("result") or [])

    # --- Ticketing ---

    def get_ticket(self, number: str) -> TicketFacts:
        parsed = parse_number(number)
        if parsed is None:
            return TicketFacts(number=number.strip(), system=self.system, exists=False, open=False)
        normalised, info = parsed
        caller = info.caller_field
        fields = ["sys_id", "number", "state", "active", "priority", "short_description", f"{caller}.email",
                  f"{caller}.user_name", "assigned_to.email", "assigned_to.user_name", "assignment_group",
                  "assignment_group.name"]
        if self.affected_field:
            fields += [f"{self.affected_field}.email", f"{self.affected_field}.user_name"]
        rows = self._rows("ticket lookup", info.table, {
            "sysparm_query": f"number={normalised}", "sysparm_limit": 1, "sysparm_fields": ",".join(fields),
            "sysparm_display_value": "all", "sysparm_exclude_reference_link": "true"})
        if not rows:
            return TicketFacts(number=normalised, system=self.system, exists=False, open=False,
                               kind=info.kind)  # type: ignore[arg-type]
        row = rows[0]

        def value(name: str) -> str:
            item = row.get(name)
            return str(item.get("value") or "") if isinstance(item, dict) else str(item or "")

        def shown(name: str) -> str:
            item = row.get(name)
            return str(item.get("display_value") or "") if isinstance(item, dict) else str(item or "")

        state = value("state")
        is_open = value("active") == "true" and not (info.table == "incident" and state in CLOSED_INCIDENT_STATES)
        priority = int(value("priority")) if value("priority") in {"1", "2", "3", "4", "5"} else None
        group_id = value("assignment_group")
        sys_id = value("sys_id")
        return TicketFacts(
            number=value("number") or normalised, system=self.system, exists=True, open=is_open,
            kind=info.kind,  # type: ignore[arg-type]
            priority=priority, state=shown("state") or state,
            caller=_identity(value(f"{caller}.email"), value(f"{caller}.user_name")),
            assignee=_identity(value("assigned_to.email"), value("assigned_to.user_name")),
            assignment_group=value("assignment_group.name") or shown("assignment_group") or None,
            assignment_group_members=self._group_members(group_id),
            short_description=value("short_description"),
            url=f"{self.base_url}/{info.table}.do?sys_id={sys_id}" if sys_id else None, sys_id=sys_id or None,
            affected=_identity(value(f"{self.affected_field}.email"), value(f"{self.affected_field}.user_name"))
            if self.affected_field else None)

    def _group_members(self, group_sys_id: str) -> frozenset[str]:
        if not _SYS_ID.fullmatch(group_sys_id or ""):
            return frozenset()
        rows = self._rows("group lookup", "sys_user_grmember", {
            "sysparm_query": f"group={group_sys_id}^user.active=true", "sysparm_fields": "user.email,user.user_name",
            "sysparm_exclude_reference_link": "true", "sysparm_limit": 1000})
        members = (_identity(str(r.get("user.email") or ""), str(r.get("user.user_name") or "")) for r in rows)
        return frozenset(m for m in members if m)

    def _target(self, ticket: TicketFacts, action: str) -> tuple[TableInfo, str]:
        parsed = parse_number(ticket.number)
        if parsed is None:
            raise TicketingUnavailableError(f"{SYSTEM} {action} failed: {ticket.number!r} is not a ticket number")
        normalised, info = parsed
        sys_id = ticket.sys_id
        if not sys_id:
            rows = self._rows(action, info.table, {"sysparm_query": f"number={normalised}", "sysparm_limit": 1,
                                                   "sysparm_fields": "sys_id"})
            if not rows:
                raise TicketingUnavailableError(f"{SYSTEM} {action} failed: {normalised} not found")
            sys_id = str(rows[0]["sys_id"])
        return info, sys_id

    def add_note(self, ticket: TicketFacts, text: str) -> None:
        info, sys_id = self._target(ticket, "work note")
        self._call("work note", "PATCH", f"api/now/table/{info.table}/{quote(sys_id, safe='')}",
                   params={"sysparm_fields": "sys_id"}, json={"work_notes": journal_text(text)})

    def attach(self, ticket: TicketFacts, filename: str, content: bytes, content_type: str) -> None:
        info, sys_id = self._target(ticket, "attachment")
        self._call("attachment", "POST", "api/now/attachment/file",
                   params={"table_name": info.table, "table_sys_id": sys_id, "file_name": filename},
                   data=content, headers={"Content-Type": content_type or "application/octet-stream"})

    def open_child_incident(self, parent: TicketFacts | None, short_description: str, description: str) -> str:
        body: dict[str, Any] = {"short_description": journal_text(short_description)[:160],
                                "description": journal_text(description),
                                "impact": "2", "urgency": "2"}
        if parent is not None:
            info, sys_id = self._target(parent, "child incident")
            body["parent_incident" if info.table == "incident" else "parent"] = sys_id
        response = self._call("child incident", "POST", "api/now/table/incident",
                              params={"sysparm_fields": "number,sys_id"}, json=body)
        return str(response.json()["result"]["number"])

    def open_incident(self, short_description: str, description: str, *, priority: int = 1) -> TicketFacts:
        # Priority is derived from impact x urgency by ServiceNow's default lookup: 1/1 is "1 - Critical", 1/2 is
        # "2 - High", 2/2 "3 - Moderate" (writing `priority` itself is refused by many instances' data policies).
        impact, urgency = {1: ("1", "1"), 2: ("1", "2"), 3: ("2", "2")}.get(priority, ("3", "3"))
        body = {"short_description": journal_text(short_description)[:160], "description": journal_text(description),
                "impact": impact, "urgency": urgency}
        result = self._call("incident", "POST", "api/now/table/incident",
                            params={"sysparm_fields": "number,sys_id,priority"}, json=body).json()["result"]
        number, sys_id = str(result["number"]), str(result["sys_id"])
        given = str(result.get("priority") or "")
        return TicketFacts(number=number, system=self.system, exists=True, open=True, kind="incident",
                           priority=int(given) if given in {"1", "2", "3", "4", "5"} else priority,
                           short_description=short_description[:160], sys_id=sys_id,
                           url=f"{self.base_url}/incident.do?sys_id={sys_id}")

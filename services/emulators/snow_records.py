"""ServiceNow Table API semantics: table schemas, reference fields, dot-walking, encoded queries, rendering.

Stored records are flat ``{field: str}`` dicts where a reference holds the target's sys_id; rendering turns
references into ``{"link", "value"}`` objects unless ``sysparm_exclude_reference_link=true``, exactly as the
fixtures show. All values are strings on the wire.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

INCIDENT_DEFAULTS: dict[str, str] = {
    # Field set and neutral defaults of incident_get_by_number.http.json (same key order).
    "upon_approval": "proceed", "location": "", "expected_start": "", "reopen_count": "0", "close_notes": "",
    "additional_assignee_list": "", "impact": "3", "urgency": "3", "correlation_id": "", "sys_tags": "",
    "sys_domain": "global", "description": "", "group_list": "", "priority": "5", "delivery_plan": "",
    "sys_mod_count": "0", "work_notes_list": "", "business_service": "", "follow_up": "", "closed_at": "",
    "sla_due": "", "delivery_task": "", "sys_updated_on": "", "parent": "", "work_end": "", "number": "",
    "closed_by": "", "work_start": "", "calendar_stc": "", "category": "inquiry", "business_duration": "",
    "incident_state": "1", "activity_due": "", "correlation_display": "", "company": "", "active": "true",
    "due_date": "", "assignment_group": "", "caller_id": "", "knowledge": "false", "made_sla": "true",
    "comments_and_work_notes": "", "parent_incident": "", "state": "1", "user_input": "", "sys_created_on": "",
    "approval_set": "", "reassignment_count": "0", "rfc": "", "child_incidents": "0", "opened_at": "",
    "short_description": "", "order": "", "sys_updated_by": "", "resolved_by": "", "notify": "1",
    "upon_reject": "cancel", "approval_history": "", "problem_id": "", "work_notes": "", "calendar_duration": "",
    "close_code": "", "sys_id": "", "approval": "not requested", "caused_by": "", "severity": "3",
    "sys_created_by": "", "resolved_at": "", "assigned_to": "", "business_stc": "", "wf_activity": "",
    "sys_domain_path": "/", "cmdb_ci": "", "opened_by": "", "subcategory": "", "rejection_goto": "",
    "sys_class_name": "incident", "watch_list": "", "time_worked": "", "contact_type": "phone",
    "escalation": "0", "comments": "",
}
_AUDIT = {"sys_id": "", "sys_created_on": "", "sys_created_by": "", "sys_updated_on": "", "sys_updated_by": "",
          "sys_mod_count": "0", "sys_tags": ""}
TABLE_DEFAULTS: dict[str, dict[str, str]] = {
    "incident": INCIDENT_DEFAULTS,
    "sys_user": {**_AUDIT, "user_name": "", "name": "", "first_name": "", "last_name": "", "email": "",
                 "active": "true", "title": "", "department": "", "manager": "", "phone": "", "mobile_phone": "",
                 "locked_out": "false", "vip": "false", "employee_number": "", "time_zone": "",
                 "sys_domain": "global", "sys_class_name": "sys_user"},
    "sys_user_group": {**_AUDIT, "name": "", "description": "", "manager": "", "email": "", "active": "true",
                       "type": "", "parent": "", "sys_domain": "global"},
    "sys_user_grmember": {**_AUDIT, "user": "", "group": ""},
    "sys_journal_field": {"sys_id": "", "element": "", "element_id": "", "name": "", "value": "",
                          "sys_created_on": "", "sys_created_by": "", "sys_tags": ""},
    "sys_attachment": {**_AUDIT, "file_name": "", "content_type": "", "size_bytes": "", "size_compressed": "",
                       "compressed": "true", "table_name": "", "table_sys_id": "", "image_width": "",
                       "image_height": "", "average_image_color": ""},
}
REFERENCES: dict[str, dict[str, str]] = {
    "incident": {
        "caller_id": "sys_user", "assigned_to": "sys_user", "opened_by": "sys_user", "closed_by": "sys_user",
        "resolved_by": "sys_user", "assignment_group": "sys_user_group", "parent_incident": "incident",
        "parent": "task", "sys_domain": "sys_user_group", "company": "core_company", "location": "cmn_location",
        "cmdb_ci": "cmdb_ci", "business_service": "cmdb_ci_service", "problem_id": "problem",
        "rfc": "change_request", "caused_by": "change_request",
        # The demo instance's custom field (u_ = customer-defined) naming the account an incident is about.
        "u_affected_user": "sys_user",
    },
    "sys_user": {"manager": "sys_user", "department": "cmn_department", "sys_domain": "sys_user_group"},
    "sys_user_group": {"manager": "sys_user", "parent": "sys_user_group", "sys_domain": "sys_user_group"},
    "sys_user_grmember": {"user": "sys_user", "group": "sys_user_group"},
}
DISPLAY_FIELD = {"incident": "number", "sys_user": "name", "sys_user_group": "name"}
JOURNAL_FIELDS = frozenset({"work_notes", "comments"})
CHOICES: dict[str, dict[str, dict[str, str]]] = {
    "incident": {
        "state": {"1": "New", "2": "In Progress", "3": "On Hold", "6": "Resolved", "7": "Closed", "8": "Canceled"},
        "incident_state": {"1": "New", "2": "In Progress", "3": "On Hold", "6": "Resolved", "7": "Closed",
                           "8": "Canceled"},
        "priority": {"1": "1 - Critical", "2": "2 - High", "3": "3 - Moderate", "4": "4 - Low", "5": "5 - Planning"},
        "impact": {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"},
        "urgency": {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"},
    },
}


def new_sys_id() -> str:
    return secrets.token_hex(16)


def incident_priority(impact: str, urgency: str) -> str:
    """ServiceNow's default priority lookup (impact x urgency)."""
    try:
        score = int(impact) + int(urgency)
    except ValueError:
        return "5"
    return {2: "1", 3: "2", 4: "3", 5: "4"}.get(score, "5")


def as_field_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) and "value" in value:  # accept a rendered {link, value} back
        return str(value["value"])
    return str(value)


class Tables:
    """All records, keyed table -> sys_id -> record."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, dict[str, str]]] = {name: {} for name in TABLE_DEFAULTS}

    def known(self, table: str) -> bool:
        return table in self.rows

    def get(self, table: str, sys_id: str) -> dict[str, str] | None:
        return self.rows.get(table, {}).get(sys_id)

    def put(self, table: str, record: dict[str, Any]) -> dict[str, str]:
        """Insert with defaults filled (unknown columns are kept: seed data may carry custom ``u_`` fields)."""
        row = dict(TABLE_DEFAULTS[table])
        row.update({k: as_field_value(v) for k, v in record.items()})
        row["sys_id"] = row["sys_id"] or new_sys_id()
        self.rows[table][row["sys_id"]] = row
        return row

    def display_value(self, table: str, record: dict[str, str]) -> str:
        return record.get(DISPLAY_FIELD.get(table, "sys_id"), "")

    def resolve_reference(self, table: str, field: str, given: str) -> str:
        """A reference may be set by sys_id or by display value (ServiceNow resolves unique display values)."""
        target = REFERENCES.get(table, {}).get(field)
        if not target or not given or target not in self.rows or given in self.rows[target]:
            return given
        matches = [sid for sid, row in self.rows[target].items() if self.display_value(target, row) == given]
        return matches[0] if len(matches) == 1 else given

    def walk(self, table: str, record: dict[str, str], dotted: str) -> tuple[str, str, str] | None:
        """Follow ``a.b.c``; returns (table, field, raw value) of the last hop, or None if a hop is missing."""
        parts = dotted.split(".")
        current_table, current = table, record
        for hop in parts[:-1]:
            target = REFERENCES.get(current_table, {}).get(hop)
            next_row = self.get(target, current.get(hop, "")) if target else None
            if next_row is None or target is None:
                return None
            current_table, current = target, next_row
        last = parts[-1]
        if last not in current:
            return None
        return current_table, last, current[last]


@dataclass(frozen=True)
class RenderOptions:
    fields: tuple[str, ...] | None = None
    exclude_reference_link: bool = False
    display_value: str = "false"  # "false" | "true" | "all"
    base_url: str = ""


def render(tables: Tables, table: str, record: dict[str, str], options: RenderOptions) -> dict[str, Any]:
    names = options.fields if options.fields else tuple(record)
    out: dict[str, Any] = {}
    for name in names:
        hop = tables.walk(table, record, name)
        if hop is None:
            if "." in name:
                out[name] = ""  # a dot-walk through an empty reference reads back empty
            continue
        field_table, field, raw = hop
        out[name] = _render_field(tables, field_table, field, raw, options)
    return out


def _render_field(tables: Tables, table: str, field: str, raw: str, options: RenderOptions) -> Any:
    if field in JOURNAL_FIELDS or field == "comments_and_work_notes":
        raw = ""  # journal fields read back empty through the Table API (fixture PATCH echo)
    target = REFERENCES.get(table, {}).get(field)
    if target is not None:
        return _render_reference(tables, target, raw, options)
    display = CHOICES.get(table, {}).get(field, {}).get(raw, raw)
    if options.display_value == "true":
        return display
    if options.display_value == "all":
        return {"display_value": display, "value": raw}
    return raw


def _render_reference(tables: Tables, target: str, raw: str, options: RenderOptions) -> Any:
    if not raw:
        return {"display_value": "", "value": ""} if options.display_value == "all" else ""
    link = f"{options.base_url}/api/now/table/{target}/{raw}"
    referenced = tables.get(target, raw)
    display = tables.display_value(target, referenced) if referenced else raw
    if options.display_value == "true":
        return display if options.exclude_reference_link else {"display_value": display, "link": link}
    if options.display_value == "all":
        out = {"display_value": display, "value": raw}
        return out if options.exclude_reference_link else {**out, "link": link}
    return raw if options.exclude_reference_link else {"link": link, "value": raw}


# ----- encoded queries -------------------------------------------------------------------------------------
_TERM = re.compile(
    r"^(?P<field>[A-Za-z0-9_.]+?)"
    r"(?P<op>ISNOTEMPTY|ISEMPTY|NOT LIKE|NOT IN|STARTSWITH|ENDSWITH|LIKE|IN|!=|>=|<=|=|>|<)(?P<value>.*)$",
    re.DOTALL,
)


class QueryError(ValueError):
    pass


@dataclass(frozen=True)
class Term:
    field: str
    op: str
    value: str


@dataclass(frozen=True)
class Query:
    groups: tuple[tuple[tuple[Term, ...], ...], ...]  # ^NQ-separated groups of AND-ed OR-clauses
    order_by: tuple[tuple[str, bool], ...]  # (field, descending)


def parse_query(text: str | None) -> Query:
    if not text:
        return Query(groups=(), order_by=())
    groups: list[tuple[tuple[Term, ...], ...]] = []
    order: list[tuple[str, bool]] = []
    for group_text in text.split("^NQ"):
        clauses: list[list[Term]] = []
        for raw in group_text.split("^"):
            if not raw or raw == "EQ":
                continue
            if raw.startswith("ORDERBYDESC"):
                order.append((raw[len("ORDERBYDESC"):], True))
                continue
            if raw.startswith("ORDERBY"):
                order.append((raw[len("ORDERBY"):], False))
                continue
            is_or = raw.startswith("OR") and bool(clauses)
            match = _TERM.match(raw[2:] if is_or else raw)
            if not match:
                raise QueryError(f"Unsupported encoded query term: {raw!r}")
            term = Term(match["field"], match["op"], match["value"])
            if is_or:
                clauses[-1].append(term)
            else:
                clauses.append([term])
        if clauses:
            groups.append(tuple(tuple(c) for c in clauses))
    return Query(groups=tuple(groups), order_by=tuple(order))


def matches(tables: Tables, table: str, record: dict[str, str], query: Query) -> bool:
    if not query.groups:
        return True
    return any(
        all(any(_term_holds(tables, table, record, t) for t in clause) for clause in group)
        for group in query.groups
    )


def _term_holds(tables: Tables, table: str, record: dict[str, str], term: Term) -> bool:
    hop = tables.walk(table, record, term.field)
    actual = (hop[2] if hop else "").casefold()
    expected = term.value.casefold()
    op = term.op
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    if op == "LIKE":
        return expected in actual
    if op == "NOT LIKE":
        return expected not in actual
    if op == "STARTSWITH":
        return actual.startswith(expected)
    if op == "ENDSWITH":
        return actual.endswith(expected)
    if op in ("IN", "NOT IN"):
        inside = actual in {v.strip().casefold() for v in term.value.split(",")}
        return inside if op == "IN" else not inside
    if op == "ISEMPTY":
        return actual == ""
    if op == "ISNOTEMPTY":
        return actual != ""
    return _compare(actual, expected, op)


def _compare(actual: str, expected: str, op: str) -> bool:
    left: Any = actual
    right: Any = expected
    try:
        left, right = float(actual), float(expected)
    except ValueError:
        pass
    return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[op]


def order_rows(rows: list[dict[str, str]], order_by: tuple[tuple[str, bool], ...]) -> list[dict[str, str]]:
    # Stable sorts applied from the last key to the first give a multi-key ORDERBY.
    for field, descending in reversed(order_by):
        rows = sorted(rows, key=_field_key(field), reverse=descending)
    return rows


def _field_key(field: str) -> Callable[[dict[str, str]], str]:
    return lambda row: row.get(field, "")

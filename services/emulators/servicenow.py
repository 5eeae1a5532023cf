"""ServiceNow Table API and Attachment API (``/api/now/...``) with Basic auth.

Envelopes are ``{"result": ...}``, errors ``{"error": {"message", "detail"}, "status": "failure"}``; a query with
no match is 200 ``{"result": []}`` (v2 semantics). ``work_notes``/``comments`` become journal entries that the
Table API reads back as ``""``, as the PATCH fixture shows; the state API and ``journal()`` expose them.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import re
from typing import Any

from aiohttp import web

from .base import Emulator, StateError
from .clock import Clock, NowFn
from .fixture_files import response_of
from .isotime import servicenow_datetime
from .responses import json_response, origin, read_json
from .snow_records import (
    JOURNAL_FIELDS,
    TABLE_DEFAULTS,
    QueryError,
    RenderOptions,
    Tables,
    as_field_value,
    incident_priority,
    matches,
    new_sys_id,
    order_rows,
    parse_query,
    render,
)

CONTENT_TYPE = "application/json;charset=UTF-8"
SN_USER: web.RequestKey[str] = web.RequestKey("sn_user", str)
ADMIN_SYS_ID = "6816f79cc0a8016401c5a33be04be441"  # the out-of-box admin user, as in the POST fixtures
TABLE_PREFIXES = ("/api/now/table", "/api/now/v2/table")
_NUMBER = re.compile(r"^INC(\d+)$")


def failure(message: str, detail: str | None, status: int, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "detail": detail}, "status": "failure"}
    return json_response(body, status=status, headers=headers, content_type=CONTENT_TYPE)


class ServiceNowEmulator(Emulator):
    name = "servicenow"

    def __init__(
        self,
        *,
        username: str = "svc_breakglass",
        password: str = "breakglass-demo-password",  # noqa: S107 - emulator-only credential
        clock: Clock | NowFn | None = None,
        fault_seed: int = 0,
    ) -> None:
        self._credentials = (username, password)
        super().__init__(clock=clock, fault_seed=fault_seed)

    # ----- state -----------------------------------------------------------------------------------------
    def _clear_state(self) -> None:
        self.username, self.password = self._credentials
        self.tables = Tables()
        self.attachment_bytes: dict[str, bytes] = {}
        self.created_incidents: list[str] = []

    def _snapshot(self) -> dict[str, Any]:
        rows = self.tables.rows
        incidents = list(rows["incident"].values())
        return {
            "incidents": incidents,
            "users": list(rows["sys_user"].values()),
            "groups": list(rows["sys_user_group"].values()),
            "memberships": list(rows["sys_user_grmember"].values()),
            "journal": self._journal_by_record(),
            "attachments": [
                {**meta, "content_base64": base64.b64encode(self.attachment_bytes.get(sid, b"")).decode()}
                for sid, meta in rows["sys_attachment"].items()
            ],
            "created_incidents": [rows["incident"][s] for s in self.created_incidents if s in rows["incident"]],
            "created_child_incidents": [
                rows["incident"][s] for s in self.created_incidents
                if s in rows["incident"] and rows["incident"][s].get("parent_incident")
            ],
        }

    def _apply_state(self, data: dict[str, Any]) -> None:
        data = dict(data)
        if "credentials" in data:
            creds = data.pop("credentials")
            self.username, self.password = creds["username"], creds["password"]
        if "users" in data:
            self.tables.rows["sys_user"] = {}
            for user in data.pop("users"):
                self.tables.put("sys_user", self._stamped(user))
        if "groups" in data:
            self.tables.rows["sys_user_group"] = {}
            for group in data.pop("groups"):
                members = group.get("members", [])
                row = self.tables.put("sys_user_group", self._stamped({k: v for k, v in group.items()
                                                                        if k != "members"}))
                for user_sys_id in members:
                    self.tables.put("sys_user_grmember", self._stamped({"group": row["sys_id"], "user": user_sys_id}))
        if "memberships" in data:
            self.tables.rows["sys_user_grmember"] = {}
            for membership in data.pop("memberships"):
                self.tables.put("sys_user_grmember", self._stamped(membership))
        if "incidents" in data:
            self.tables.rows["incident"] = {}
            for incident in data.pop("incidents"):
                self._insert_incident(incident, author="admin", opened_by=incident.get("opened_by"))
        if "journal" in data:
            self.tables.rows["sys_journal_field"] = {}
            for entry in data.pop("journal"):
                self.tables.put("sys_journal_field", entry)
        for derived in ("attachments", "created_incidents", "created_child_incidents"):
            if derived in data:
                raise StateError(f"'{derived}' is read-only state")
        super()._apply_state(data)

    def _stamped(self, record: dict[str, Any], author: str = "admin") -> dict[str, Any]:
        now = servicenow_datetime(self.clock.now())
        defaults = {"sys_created_on": now, "sys_updated_on": now, "sys_created_by": author, "sys_updated_by": author}
        return {**defaults, **record}

    # ----- Python API ------------------------------------------------------------------------------------
    def incident(self, number_or_sys_id: str) -> dict[str, str] | None:
        with self.lock:
            return self._find_incident(number_or_sys_id)

    def journal(self, number_or_sys_id: str, element: str | None = None) -> list[dict[str, str]]:
        """Journal entries (oldest first) of one incident; ``element`` is "work_notes" or "comments"."""
        with self.lock:
            incident = self._find_incident(number_or_sys_id)
            if incident is None:
                return []
            entries = self._journal_by_record().get(incident["sys_id"], [])
            return [e for e in entries if element is None or e["element"] == element]

    def work_notes(self, number_or_sys_id: str) -> list[str]:
        return [e["value"] for e in self.journal(number_or_sys_id, "work_notes")]

    def attachment_content(self, sys_id: str) -> bytes:
        with self.lock:
            return self.attachment_bytes[sys_id]

    def attachments(self, table_sys_id: str | None = None) -> list[dict[str, str]]:
        with self.lock:
            rows = self.tables.rows["sys_attachment"].values()
            return [dict(r) for r in rows if table_sys_id is None or r["table_sys_id"] == table_sys_id]

    # ----- internals -------------------------------------------------------------------------------------
    def _find_incident(self, key: str) -> dict[str, str] | None:
        rows = self.tables.rows["incident"]
        return rows.get(key) or next((r for r in rows.values() if r.get("number") == key), None)

    def _journal_by_record(self) -> dict[str, list[dict[str, str]]]:
        grouped: dict[str, list[dict[str, str]]] = {}
        entries = sorted(self.tables.rows["sys_journal_field"].values(), key=lambda e: e["sys_created_on"])
        for entry in entries:
            grouped.setdefault(entry["element_id"], []).append(entry)
        return grouped

    def _next_number(self) -> str:
        numbers = [int(m.group(1)) for r in self.tables.rows["incident"].values()
                   if (m := _NUMBER.match(r.get("number", "")))]
        return f"INC{(max(numbers) + 1 if numbers else 10001):07d}"

    def _author_sys_id(self, user_name: str) -> str:
        user = next((u for u in self.tables.rows["sys_user"].values() if u.get("user_name") == user_name), None)
        return user["sys_id"] if user else ADMIN_SYS_ID

    def _insert_incident(self, fields: dict[str, Any], *, author: str, opened_by: str | None) -> dict[str, str]:
        now = servicenow_datetime(self.clock.now())
        data = {k: v for k, v in fields.items() if k not in JOURNAL_FIELDS}
        record: dict[str, Any] = {
            "sys_created_on": now, "sys_updated_on": now, "opened_at": now,
            "sys_created_by": author, "sys_updated_by": author,
            "opened_by": opened_by or self._author_sys_id(author),
        }
        record.update({k: self.tables.resolve_reference("incident", k, as_field_value(v)) for k, v in data.items()})
        record["number"] = record.get("number") or self._next_number()
        if "priority" not in data:
            record["priority"] = incident_priority(record.get("impact", "3"), record.get("urgency", "3"))
        record.setdefault("incident_state", record.get("state", "1"))
        row = self.tables.put("incident", record)
        parent = self.tables.get("incident", row.get("parent_incident", ""))
        if parent is not None:
            parent["child_incidents"] = str(int(parent.get("child_incidents") or "0") + 1)
        self._journal(row, fields, author)
        return row

    def _journal(self, row: dict[str, str], fields: dict[str, Any], author: str) -> None:
        for element in ("work_notes", "comments"):
            text = as_field_value(fields.get(element))
            if text:
                self.tables.put("sys_journal_field", {
                    "element": element, "element_id": row["sys_id"], "name": "incident", "value": text,
                    "sys_created_on": servicenow_datetime(self.clock.now()), "sys_created_by": author,
                })

    def _update(self, table: str, row: dict[str, str], fields: dict[str, Any], author: str) -> None:
        for key, value in fields.items():
            if key in JOURNAL_FIELDS or key == "sys_id":
                continue
            if key in TABLE_DEFAULTS[table] or key.startswith("u_"):  # unknown columns are ignored, as on SN
                row[key] = self.tables.resolve_reference(table, key, as_field_value(value))
        if table == "incident":
            if "priority" not in fields and ({"impact", "urgency"} & set(fields)):
                row["priority"] = incident_priority(row["impact"], row["urgency"])
            if "state" in fields:
                row["incident_state"] = row["state"]
                if row["state"] in ("6", "7", "8"):
                    row["active"] = "false"
            self._journal(row, fields, author)
        row["sys_mod_count"] = str(int(row.get("sys_mod_count") or "0") + 1)
        row["sys_updated_on"] = servicenow_datetime(self.clock.now())
        row["sys_updated_by"] = author

    # ----- pipeline hooks --------------------------------------------------------------------------------
    async def preflight(self, request: web.Request) -> web.StreamResponse | None:
        if not request.path.startswith("/api/"):
            return None
        user = _basic_user(request.headers.get("Authorization", ""), self.username, self.password)
        if user is None:
            status, headers, body = response_of("servicenow/error_401_user_not_authenticated.http.json")
            return json_response(body, status=status,
                                 headers={**headers, "WWW-Authenticate": 'BASIC realm="Service-now"'},
                                 content_type=CONTENT_TYPE)
        request[SN_USER] = user
        return None

    def fault_defaults(self, status: int, request: web.Request) -> tuple[dict[str, str], Any]:
        fixtures = {
            401: "servicenow/error_401_user_not_authenticated.http.json",
            403: "servicenow/error_403_acl_update_failed.http.json",
            404: "servicenow/error_404_no_record_found.http.json",
            429: "servicenow/error_429_rate_limit_doc.http.json",
        }
        if status in fixtures:
            _, headers, body = response_of(fixtures[status])
            if status == 429:
                reset = int(self.clock.now().timestamp()) + int(float(headers["Retry-After"]))
                headers["X-RateLimit-Reset"] = str(reset)
            return headers, body
        return {"Content-Type": CONTENT_TYPE}, {
            "error": {"message": f"Injected HTTP {status}", "detail": None}, "status": "failure"}

    # ----- routes ----------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        for prefix in TABLE_PREFIXES:
            app.router.add_get(prefix + "/{table}", self._h_list)
            app.router.add_post(prefix + "/{table}", self._h_create)
            app.router.add_get(prefix + "/{table}/{sys_id}", self._h_get)
            app.router.add_patch(prefix + "/{table}/{sys_id}", self._h_update)
            app.router.add_put(prefix + "/{table}/{sys_id}", self._h_update)
            app.router.add_delete(prefix + "/{table}/{sys_id}", self._h_delete)
        app.router.add_post("/api/now/attachment/file", self._h_upload)
        app.router.add_get("/api/now/attachment", self._h_list_attachments)
        app.router.add_get("/api/now/attachment/{sys_id}", self._h_attachment_meta)
        app.router.add_get("/api/now/attachment/{sys_id}/file", self._h_attachment_file)

    def _options(self, request: web.Request) -> RenderOptions:
        q = request.query
        fields = tuple(f.strip() for f in q.get("sysparm_fields", "").split(",") if f.strip()) or None
        display = q.get("sysparm_display_value", "false").lower()
        return RenderOptions(
            fields=fields,
            exclude_reference_link=q.get("sysparm_exclude_reference_link", "false").lower() == "true",
            display_value=display if display in ("true", "false", "all") else "false",
            base_url=origin(request),
        )

    def _table_or_error(self, request: web.Request) -> tuple[str, web.Response | None]:
        table = request.match_info["table"]
        if not self.tables.known(table):
            return table, failure(f"Invalid table {table}", None, 400)
        return table, None

    async def _h_list(self, request: web.Request) -> web.Response:
        table, problem = self._table_or_error(request)
        if problem:
            return problem
        try:
            query = parse_query(request.query.get("sysparm_query"))
            limit = int(request.query.get("sysparm_limit", "10000"))
            offset = int(request.query.get("sysparm_offset", "0"))
        except (QueryError, ValueError) as exc:
            return failure("Invalid query", str(exc), 400)
        options = self._options(request)
        with self.lock:
            rows = [r for r in self.tables.rows[table].values() if matches(self.tables, table, r, query)]
            rows = order_rows(rows, query.order_by)
            page = rows[offset:offset + limit]
            result = [render(self.tables, table, r, options) for r in page]
        return json_response({"result": result}, headers={"X-Total-Count": str(len(rows))},
                             content_type=CONTENT_TYPE)

    async def _h_get(self, request: web.Request) -> web.Response:
        table, problem = self._table_or_error(request)
        if problem:
            return problem
        options = self._options(request)
        with self.lock:
            row = self.tables.get(table, request.match_info["sys_id"])
            if row is None:
                return _not_found()
            return json_response({"result": render(self.tables, table, row, options)}, content_type=CONTENT_TYPE)

    async def _h_create(self, request: web.Request) -> web.Response:
        table, problem = self._table_or_error(request)
        if problem:
            return problem
        fields, problem = await _object_body(request)
        if problem:
            return problem
        author = request[SN_USER]
        options = self._options(request)
        with self.lock:
            if table == "incident":
                row = self._insert_incident(fields, author=author, opened_by=None)
                self.created_incidents.append(row["sys_id"])
            else:
                row = self.tables.put(table, self._stamped(
                    {k: v for k, v in fields.items() if k in TABLE_DEFAULTS[table]}, author))
            body = {"result": render(self.tables, table, row, options)}
        location = f"{origin(request)}/api/now/table/{table}/{row['sys_id']}"
        return json_response(body, status=201, headers={"Location": location}, content_type=CONTENT_TYPE)

    async def _h_update(self, request: web.Request) -> web.Response:
        table, problem = self._table_or_error(request)
        if problem:
            return problem
        fields, problem = await _object_body(request)
        if problem:
            return problem
        options = self._options(request)
        with self.lock:
            row = self.tables.get(table, request.match_info["sys_id"])
            if row is None:
                return _not_found()
            self._update(table, row, fields, request[SN_USER])
            return json_response({"result": render(self.tables, table, row, options)}, content_type=CONTENT_TYPE)

    async def _h_delete(self, request: web.Request) -> web.Response:
        table, problem = self._table_or_error(request)
        if problem:
            return problem
        with self.lock:
            if self.tables.rows[table].pop(request.match_info["sys_id"], None) is None:
                return _not_found()
        return web.Response(status=204)

    async def _h_upload(self, request: web.Request) -> web.Response:
        q = request.query
        missing = [p for p in ("table_name", "table_sys_id", "file_name") if not q.get(p)]
        if missing:
            return failure("Invalid parameter", f"Missing required query parameter: {missing[0]}", 400)
        content_type = request.headers.get("Content-Type", "").strip()
        if not content_type:
            return failure("Content-Type header is required",
                           "The attachment's MIME type must be sent as the request Content-Type", 400)
        raw = await request.read()
        with self.lock:
            if not self.tables.known(q["table_name"]) or self.tables.get(q["table_name"], q["table_sys_id"]) is None:
                return _not_found()
            sys_id = new_sys_id()
            now = servicenow_datetime(self.clock.now())
            author = request[SN_USER]
            meta = self.tables.put("sys_attachment", {
                "sys_id": sys_id, "table_name": q["table_name"], "table_sys_id": q["table_sys_id"],
                "file_name": q["file_name"], "content_type": content_type, "size_bytes": str(len(raw)),
                "size_compressed": str(len(gzip.compress(raw))), "sys_created_on": now, "sys_updated_on": now,
                "sys_created_by": author, "sys_updated_by": author,
            })
            self.attachment_bytes[sys_id] = raw
            body = self._attachment_json(request, meta)
        location = f"{origin(request)}/api/now/attachment/{sys_id}"
        return json_response({"result": body}, status=201, headers={"Location": location}, content_type=CONTENT_TYPE)

    def _attachment_json(self, request: web.Request, meta: dict[str, str]) -> dict[str, str]:
        return {**meta, "download_link": f"{origin(request)}/api/now/attachment/{meta['sys_id']}/file"}

    async def _h_list_attachments(self, request: web.Request) -> web.Response:
        try:
            query = parse_query(request.query.get("sysparm_query"))
        except QueryError as exc:
            return failure("Invalid query", str(exc), 400)
        with self.lock:
            rows = [self._attachment_json(request, r) for r in self.tables.rows["sys_attachment"].values()
                    if matches(self.tables, "sys_attachment", r, query)]
        return json_response({"result": rows}, headers={"X-Total-Count": str(len(rows))}, content_type=CONTENT_TYPE)

    async def _h_attachment_meta(self, request: web.Request) -> web.Response:
        with self.lock:
            meta = self.tables.get("sys_attachment", request.match_info["sys_id"])
            if meta is None:
                return _not_found()
            return json_response({"result": self._attachment_json(request, meta)}, content_type=CONTENT_TYPE)

    async def _h_attachment_file(self, request: web.Request) -> web.Response:
        with self.lock:
            meta = self.tables.get("sys_attachment", request.match_info["sys_id"])
            if meta is None:
                return _not_found()
            content = self.attachment_bytes.get(meta["sys_id"], b"")
        return web.Response(body=content, headers={"Content-Type": meta["content_type"]})


def _not_found() -> web.Response:
    status, headers, body = response_of("servicenow/error_404_no_record_found.http.json")
    return json_response(body, status=status, headers=headers, content_type=CONTENT_TYPE)


async def _object_body(request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
    try:
        body = await read_json(request)
    except ValueError:
        return {}, failure("Exception while reading request", "The payload is not valid JSON.", 400)
    if not isinstance(body, dict):
        return {}, failure("Exception while reading request", "The payload must be a JSON object.", 400)
    return body, None


def _basic_user(header: str, username: str, password: str) -> str | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, secret = base64.b64decode(encoded.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user if (user, secret) == (username, password) else None


"""Microsoft Graph (application permissions): PIM schedule requests and instances, direct role assignments,
users and their transitive groups. Implements `services.ports.Graph`.

Errors are mapped by Graph's `error.code`, never by the message (PROTOCOL_NOTES §5). Writes pass the shared Redis
write limiter before every attempt, so all workers together stay under `BREAKGLASS_GRAPH_WRITE_RATE`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import isodate
import redis
import requests

from services.clients.http import BearerAuth, HttpClient, RetryPolicy, UpstreamError, error_body, origin
from services.clients.tokens import TokenProvider
from services.ports import (
    ActiveDurationTooShortError,
    AppInstallation,
    CatalogApp,
    DirectAssignment,
    GraphError,
    GraphForbiddenError,
    GraphNotFoundError,
    GraphThrottledError,
    GraphUnavailableError,
    GroupScheduleInstance,
    LicenceRequiredError,
    RoleAssignmentDoesNotExistError,
    RoleAssignmentExistsError,
    ScheduleInstance,
    ScheduleRequest,
    TeamsAppBlockedError,
)
from services.state.limiter import RateLimiter

if TYPE_CHECKING:
    from services.settings import Settings

RM = "roleManagement/directory"
PIM_GROUP = "identityGovernance/privilegedAccess/group"
GROUP_LINKS = {"member": "members", "owner": "owners"}
USER_FIELDS = "id,displayName,userPrincipalName,mail,accountEnabled"
MAX_PAGES = 200
USER_NOT_FOUND_CODES = frozenset({"Request_ResourceNotFound", "ResourceNotFound"})
CODE_ERRORS: dict[str, type[GraphError]] = {
    "Authentication_RequestFromNonPremiumTenantOrB2CTenant": LicenceRequiredError,
    "RoleAssignmentExists": RoleAssignmentExistsError,
    "RoleAssignmentDoesNotExist": RoleAssignmentDoesNotExistError,
    "ActiveDurationTooShort": ActiveDurationTooShortError,
}


def graph_error(exc: UpstreamError) -> GraphError:
    """The port's error type for a failed call: by error.code first, then by what kind of failure it was."""
    status = exc.status or 0
    code = exc.code or (f"HTTP{status}" if status else exc.kind.capitalize())
    detail = exc.message or exc.kind
    message = f"{detail} [{exc.method} {exc.path}; {exc.attempts} attempt{'s' if exc.attempts > 1 else ''}]"
    cls: type[GraphError]
    if exc.code in CODE_ERRORS:
        cls = CODE_ERRORS[exc.code]
    elif exc.throttled:
        cls, status = GraphThrottledError, 429
    elif exc.unavailable:
        cls = GraphUnavailableError
    elif status == 403:
        cls = GraphForbiddenError
    elif status == 404:
        cls = GraphNotFoundError
    else:
        cls = GraphError
    return cls(status, code, message, retry_after=exc.retry_after)


def odata_time(value: datetime) -> str:
    """A DateTimeOffset literal for $filter: unquoted, whole seconds, UTC (§8.2)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_datetime(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_duration(value: timedelta) -> str:
    """`PT30M`, `PT1H30M`, `PT24H` (whole seconds, hours not folded into days)."""
    total = round(value.total_seconds())
    if total < 0:
        raise ValueError("duration must not be negative")
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    return "PT" + (text or "0S")


def parse_datetime(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)  # 3.11: "Z" and 7 fractional digits (Graph's form) are accepted
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def parse_duration(value: str | None) -> timedelta | None:
    if not value:
        return None
    parsed = isodate.parse_duration(value)
    return parsed if isinstance(parsed, timedelta) else parsed.totimedelta(start=datetime.now(UTC))


def odata_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _filter(**conditions: str | None) -> dict[str, str] | None:
    terms = [f"{name} eq {odata_string(value)}" for name, value in conditions.items() if value]
    return {"$filter": " and ".join(terms)} if terms else None


def schedule_request(data: Mapping[str, Any]) -> ScheduleRequest:
    info = data.get("scheduleInfo") or {}
    expiration = info.get("expiration") or {}
    return ScheduleRequest(
        id=str(data["id"]), status=str(data.get("status") or ""), action=str(data.get("action") or ""),
        principal_id=str(data.get("principalId") or ""), role_definition_id=str(data.get("roleDefinitionId") or ""),
        directory_scope_id=str(data.get("directoryScopeId") or "/"), start=parse_datetime(info.get("startDateTime")),
        duration=parse_duration(expiration.get("duration")), target_schedule_id=data.get("targetScheduleId"))


def schedule_instance(data: Mapping[str, Any]) -> ScheduleInstance:
    return ScheduleInstance(
        id=str(data["id"]), principal_id=str(data.get("principalId") or ""),
        role_definition_id=str(data.get("roleDefinitionId") or ""),
        directory_scope_id=str(data.get("directoryScopeId") or "/"), start=parse_datetime(data.get("startDateTime")),
        end=parse_datetime(data.get("endDateTime")), assignment_type=str(data.get("assignmentType") or "Assigned"),
        member_type=str(data.get("memberType") or "Direct"), schedule_id=data.get("roleAssignmentScheduleId"))


def group_schedule_instance(data: Mapping[str, Any]) -> GroupScheduleInstance:
    # Enum casing differs between the doc examples ("Assigned") and the enum tables ("assigned") (§8.4).
    return GroupScheduleInstance(
        id=str(data["id"]), principal_id=str(data.get("principalId") or "").lower(),
        group_id=str(data.get("groupId") or "").lower(), access=str(data.get("accessId") or "").lower(),
        start=parse_datetime(data.get("startDateTime")), end=parse_datetime(data.get("endDateTime")),
        assignment_type=str(data.get("assignmentType") or "assigned").lower(),
        member_type=str(data.get("memberType") or "direct").lower(), schedule_id=data.get("assignmentScheduleId"))


def group_schedule_request(data: Mapping[str, Any]) -> ScheduleRequest:
    info = data.get("scheduleInfo") or {}
    expiration = info.get("expiration") or {}
    return ScheduleRequest(
        id=str(data["id"]), status=str(data.get("status") or ""), action=str(data.get("action") or ""),
        principal_id=str(data.get("principalId") or ""), role_definition_id="",
        directory_scope_id=str(data.get("accessId") or ""), start=parse_datetime(info.get("startDateTime")),
        duration=parse_duration(expiration.get("duration")), target_schedule_id=data.get("targetScheduleId"))


def _group_link(access: str) -> str:
    if access not in GROUP_LINKS:
        raise ValueError(f"group access must be member or owner, got {access!r}")
    return GROUP_LINKS[access]


def direct_assignment(data: Mapping[str, Any]) -> DirectAssignment:
    return DirectAssignment(id=str(data["id"]), principal_id=str(data.get("principalId") or ""),
                            role_definition_id=str(data.get("roleDefinitionId") or ""),
                            directory_scope_id=str(data.get("directoryScopeId") or "/"))


class GraphClient:
    """`services.ports.Graph` plus the directory reads `GraphDirectory` needs."""

    def __init__(self, base_url: str, tokens: Any, *, limiter: RateLimiter | None = None, timeout: float = 15.0,
                 retry: RetryPolicy | None = None, limiter_timeout_s: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self.http = HttpClient("graph", base_url=self.base_url, timeout=timeout, retry=retry,
                               auth=BearerAuth(tokens), limiter=limiter, limiter_timeout_s=limiter_timeout_s,
                               sleep=sleep)

    # --- plumbing ---

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except UpstreamError as exc:
            raise graph_error(exc) from None

    def _list(self, path: str, params: Mapping[str, Any] | None = None,
              headers: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Every item of a collection, following @odata.nextLink (only back to the same origin: the bearer token
        must never be sent anywhere else)."""
        url: str | None = self.http.url(path, params)
        items: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            if url is None:
                return items
            body = self._call("GET", url, headers=headers).json()
            items.extend(body.get("value") or [])
            url = body.get("@odata.nextLink")
            if url is not None and origin(url) != origin(self.base_url):
                raise GraphError(0, "UntrustedNextLink", "Graph returned a nextLink to another host; not followed")
        raise GraphError(0, "TooManyPages", f"more than {MAX_PAGES} pages at {path}")

    # --- PIM schedule requests ---

    def _schedule_request(self, body: dict[str, Any]) -> ScheduleRequest:
        return schedule_request(self._call("POST", f"{RM}/roleAssignmentScheduleRequests", json=body).json())

    @staticmethod
    def _schedule(start: datetime, duration: timedelta) -> dict[str, Any]:
        if duration <= timedelta(0):
            raise ValueError("duration must be positive")
        return {"startDateTime": iso_datetime(start),
                "expiration": {"type": "afterDuration", "duration": iso_duration(duration)}}

    def assign_pim(self, *, principal_id: str, role_id: str, scope: str, start: datetime, duration: timedelta,
                   justification: str, ticket_number: str | None, ticket_system: str | None) -> ScheduleRequest:
        body: dict[str, Any] = {
            "action": "adminAssign", "principalId": principal_id, "roleDefinitionId": role_id,
            "directoryScopeId": scope or "/", "justification": justification,
            "scheduleInfo": self._schedule(start, duration),
        }
        if ticket_number:
            body["ticketInfo"] = {"ticketNumber": ticket_number, "ticketSystem": ticket_system}
        return self._schedule_request(body)

    def update_pim(self, *, principal_id: str, role_id: str, scope: str, start: datetime, duration: timedelta,
                   justification: str) -> ScheduleRequest:
        return self._schedule_request({
            "action": "adminUpdate", "principalId": principal_id, "roleDefinitionId": role_id,
            "directoryScopeId": scope or "/", "justification": justification,
            "scheduleInfo": self._schedule(start, duration),
        })

    def remove_pim(self, *, principal_id: str, role_id: str, scope: str, justification: str) -> ScheduleRequest:
        return self._schedule_request({
            "action": "adminRemove", "principalId": principal_id, "roleDefinitionId": role_id,
            "directoryScopeId": scope or "/", "justification": justification,
        })

    def instances(self, *, principal_id: str | None = None, role_id: str | None = None) -> list[ScheduleInstance]:
        rows = self._list(f"{RM}/roleAssignmentScheduleInstances",
                          _filter(principalId=principal_id, roleDefinitionId=role_id))
        return [schedule_instance(row) for row in rows]

    # --- direct role assignments ---

    def direct_assignments(self, *, principal_id: str | None = None,
                           role_id: str | None = None) -> list[DirectAssignment]:
        rows = self._list(f"{RM}/roleAssignments", _filter(principalId=principal_id, roleDefinitionId=role_id))
        return [direct_assignment(row) for row in rows]

    def create_direct(self, *, principal_id: str, role_id: str, scope: str) -> DirectAssignment:
        body = {"@odata.type": "#microsoft.graph.unifiedRoleAssignment", "principalId": principal_id,
                "roleDefinitionId": role_id, "directoryScopeId": scope or "/"}
        return direct_assignment(self._call("POST", f"{RM}/roleAssignments", json=body).json())

    def delete_direct(self, assignment_id: str) -> None:
        self._call("DELETE", f"{RM}/roleAssignments/{quote(assignment_id, safe='')}")

    # --- PIM for Groups (PROTOCOL_NOTES §8.4) ---

    def _group_request(self, body: dict[str, Any]) -> ScheduleRequest:
        return group_schedule_request(self._call("POST", f"{PIM_GROUP}/assignmentScheduleRequests", json=body).json())

    def assign_group_pim(self, *, principal_id: str, group_id: str, access: str, start: datetime,
                         duration: timedelta, justification: str, ticket_number: str | None,
                         ticket_system: str | None) -> ScheduleRequest:
        body: dict[str, Any] = {"accessId": access, "principalId": principal_id, "groupId": group_id,
                                "action": "adminAssign", "scheduleInfo": self._schedule(start, duration),
                                "justification": justification}
        if ticket_number:
            body["ticketInfo"] = {"ticketNumber": ticket_number, "ticketSystem": ticket_system}
        return self._group_request(body)

    def update_group_pim(self, *, principal_id: str, group_id: str, access: str, start: datetime,
                         duration: timedelta, justification: str) -> ScheduleRequest:
        return self._group_request({"accessId": access, "principalId": principal_id, "groupId": group_id,
                                    "action": "adminUpdate", "scheduleInfo": self._schedule(start, duration),
                                    "justification": justification})

    def remove_group_pim(self, *, principal_id: str, group_id: str, access: str,
                         justification: str) -> ScheduleRequest:
        return self._group_request({"accessId": access, "principalId": principal_id, "groupId": group_id,
                                    "action": "adminRemove", "justification": justification})

    def group_instances(self, *, group_id: str | None = None,
                        principal_id: str | None = None) -> list[GroupScheduleInstance]:
        if not (group_id or principal_id):
            raise ValueError("PIM for Groups lists need a groupId or principalId filter")
        rows = self._list(f"{PIM_GROUP}/assignmentScheduleInstances",
                          _filter(groupId=group_id, principalId=principal_id))
        return [group_schedule_instance(row) for row in rows]

    def group_pim_managed(self, group_id: str) -> bool:
        """Whether PIM for Groups manages the group: an onboarded group has role management policies assigned at
        its scope (one per access); a group never onboarded has none. There is no onboarding API to ask instead."""
        query = f"scopeId eq {odata_string(group_id)} and scopeType eq 'Group'"
        return bool(self._list("policies/roleManagementPolicyAssignments", {"$filter": query}))

    # --- direct group membership / ownership ---

    def add_group_member(self, *, group_id: str, principal_id: str, access: str) -> None:
        ref = {"@odata.id": f"{self.base_url}/directoryObjects/{quote(principal_id, safe='')}"}
        self._call("POST", f"groups/{quote(group_id, safe='')}/{_group_link(access)}/$ref", json=ref)

    def remove_group_member(self, *, group_id: str, principal_id: str, access: str) -> bool:
        path = f"groups/{quote(group_id, safe='')}/{_group_link(access)}/{quote(principal_id, safe='')}/$ref"
        return self._call("DELETE", path, allow=(404,)).status_code != 404

    def group_member_ids(self, group_id: str, access: str) -> set[str]:
        rows = self._list(f"groups/{quote(group_id, safe='')}/{_group_link(access)}", {"$select": "id"})
        return {str(row["id"]).lower() for row in rows if row.get("id")}

    def group(self, group_id: str) -> dict[str, Any] | None:
        """The group (id, displayName, isAssignableToRole, groupTypes, onPremisesSyncEnabled); None if none."""
        response = self._call("GET", f"groups/{quote(group_id, safe='')}", allow=(404,),
                              params={"$select": "id,displayName,isAssignableToRole,groupTypes,"
                                                 "onPremisesSyncEnabled"})
        return None if response.status_code == 404 else dict(response.json())

    # --- directory ---

    def user(self, id_or_upn: str) -> dict[str, Any] | None:
        """The user by object id or UPN (id, displayName, userPrincipalName, mail, accountEnabled); None if none."""
        response = self._call("GET", f"users/{quote(id_or_upn.strip(), safe='@')}", params={"$select": USER_FIELDS},
                              allow=(404,))
        if response.status_code == 404:
            body = error_body(response)
            error = body.get("error") if isinstance(body, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            if code in USER_NOT_FOUND_CODES:
                return None
            raise GraphNotFoundError(404, str(code or "HTTP404"), f"GET {response.request.path_url.split('?')[0]}"
                                     " answered 404 without Graph's not-found error (check GRAPH_BASE_URL)")
        data = response.json()
        return {key: data.get(key) for key in USER_FIELDS.split(",")}

    def user_group_ids(self, user_id: str) -> set[str]:
        """Object ids of every group the user is in, directly or through nested groups."""
        rows = self._list(f"users/{quote(user_id, safe='@')}/transitiveMemberOf/microsoft.graph.group",
                          {"$select": "id", "$top": 999, "$count": "true"}, headers={"ConsistencyLevel": "eventual"})
        return {str(row["id"]).lower() for row in rows if row.get("id")}


    def group_members(self, group_id: str) -> list[dict[str, Any]]:
        """The group's users, through nested groups too (id, displayName, userPrincipalName)."""
        return self._list(f"groups/{quote(group_id, safe='')}/transitiveMembers/microsoft.graph.user",
                          {"$select": "id,displayName,userPrincipalName", "$top": 999})

    # --- Teams app installation (PROTOCOL_NOTES §9) ---

    # --- sessions, audit logs and risk (services.ports.IdentityLogs) ---

    def revoke_sign_in_sessions(self, user_id: str) -> None:
        # Any 2xx is success: today 200 {"value": true}, documented as meant to be 204 (§8.1).
        self._call("POST", f"users/{quote(user_id, safe='@')}/revokeSignInSessions")

    def sign_ins(self, *, user_id: str, since: datetime, until: datetime | None = None) -> list[dict[str, Any]]:
        query = f"userId eq {odata_string(user_id)} and createdDateTime ge {odata_time(since)}"
        if until is not None:
            query += f" and createdDateTime le {odata_time(until)}"
        return self._list("auditLogs/signIns", {"$filter": query, "$top": "1000"})

    def directory_audits(self, *, initiated_by: str, since: datetime,
                         until: datetime | None = None) -> list[dict[str, Any]]:
        query = f"activityDateTime ge {odata_time(since)}"
        if until is not None:
            query += f" and activityDateTime le {odata_time(until)}"
        query += f" and initiatedBy/user/id eq {odata_string(initiated_by)}"
        return self._list("auditLogs/directoryAudits", {"$filter": query})

    def risky_user(self, user_id: str) -> dict[str, Any] | None:
        try:
            return dict(self._call("GET", f"identityProtection/riskyUsers/{quote(user_id, safe='')}").json())
        except GraphNotFoundError:
            return None  # never flagged (§8.5: branch on the status only)

    def catalog_app(self, manifest_id: str) -> CatalogApp | None:
        query = f"externalId eq {odata_string(manifest_id)} and distributionMethod eq 'organization'"
        for row in self._list("appCatalogs/teamsApps", {"$filter": query}):
            # Graph writes "organization", the Teams docs "Organization" (§9.2).
            if (str(row.get("externalId") or "").lower() == manifest_id.lower()
                    and str(row.get("distributionMethod") or "").lower() == "organization" and row.get("id")):
                return CatalogApp(id=str(row["id"]), external_id=str(row["externalId"]))
        return None

    def install_app(self, user_id: str, catalog_id: str) -> bool:
        bind = f"{self.base_url}/appCatalogs/teamsApps/{quote(catalog_id, safe='')}"
        path = f"users/{quote(user_id, safe='@')}/teamwork/installedApps"
        try:
            response = self.http.request("POST", path, json={"teamsApp@odata.bind": bind}, allow=(409,))
        except UpstreamError as exc:
            # The blocked answer is told apart from a missing permission by its inner code, never the message.
            if exc.status == 403 and exc.code == "Forbidden" and _inner_code(exc.body) == "AccessDenied":
                raise TeamsAppBlockedError(403, "AccessDenied", exc.message) from None
            raise graph_error(exc) from None
        return response.status_code != 409  # 409: already installed (§9.3; its body is not verified)

    def app_installation(self, user_id: str, manifest_id: str) -> AppInstallation | None:
        rows = self._list(f"users/{quote(user_id, safe='@')}/teamwork/installedApps", {
            "$expand": "teamsApp,teamsAppDefinition($expand=bot)",
            "$filter": f"teamsApp/externalId eq {odata_string(manifest_id)}"})
        for row in rows:
            app = row.get("teamsApp") or {}
            bot = (row.get("teamsAppDefinition") or {}).get("bot") or {}
            if row.get("id"):
                return AppInstallation(id=str(row["id"]), catalog_id=str(app.get("id") or ""),
                                       bot_id=str(bot["id"]) if bot.get("id") else None)
        return None

    def installation_chat(self, user_id: str, installation_id: str) -> str | None:
        path = (f"users/{quote(user_id, safe='@')}/teamwork/installedApps/{quote(installation_id, safe='')}"
                "/chat")
        response = self._call("GET", path, allow=(404,))
        if response.status_code == 404:
            return None
        chat = response.json().get("id")
        return str(chat) if chat else None


def _inner_code(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    inner = error.get("innerError") if isinstance(error, dict) else None
    return str(inner.get("code") or "") if isinstance(inner, dict) else ""


def build_graph(settings: Settings, redis_client: redis.Redis | None) -> GraphClient:
    tokens = TokenProvider.for_graph(settings, redis_client)
    limiter = RateLimiter(redis_client, f"{settings.key_prefix}:ratelimit:graph-writes", settings.graph_write_rate,
                          settings.graph_write_burst)
    return GraphClient(settings.graph_base_url, tokens, limiter=limiter, timeout=settings.graph_timeout_s,
                       retry=RetryPolicy.from_settings(settings), limiter_timeout_s=settings.graph_write_wait_s)

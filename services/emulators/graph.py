"""Microsoft Graph v1.0: users, groups, role definitions, PIM schedule requests/instances, role assignments.

HTTP glue only; the domain lives in ``directory.py`` and ``pim.py``. Bearer tokens are the HS256 tokens of the
Entra emulator (shared secret). Optional write throttling answers 429 with the fixture body and a fractional
``Retry-After``, as real Graph does.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from .auditlogs import AuditLogError, AuditLogs
from .base import Emulator, StateError
from .clock import Clock, NowFn
from .directory import USER_DEFAULT_PROPERTIES, Directory
from .entra import DEFAULT_APP_ROLES, DEMO_GRAPH_CLIENT_ID, DEMO_TENANT_ID
from .fixture_files import body_of
from .isotime import graph_date_seconds, parse_datetime
from .odata import (
    ODataError,
    apply_filter,
    apply_select,
    check_properties,
    context_select_suffix,
    parse_filter,
    parse_select,
)
from .pim import PimEngine, PimError, RoleSettings
from .pim_groups import GroupPim
from .ratelimit import TokenBucket, format_retry_after
from .responses import json_response, read_json
from .teamwork import Teamwork, TeamworkError
from .tokens import DEFAULT_SIGNING_SECRET, TokenProblem, mint_access_token, verify_access_token

CTX = "https://graph.microsoft.com/v1.0/$metadata#"
RM = "/v1.0/roleManagement/directory"
PG = "/v1.0/identityGovernance/privilegedAccess/group"
SUCCESS_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
WWW_AUTHENTICATE = (
    'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
    'client_id="00000003-0000-0000-c000-000000000000"'
)
CLAIMS: web.RequestKey[dict[str, Any]] = web.RequestKey("claims", dict)
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
_NOT_WRITES = re.compile(r"/(checkMemberGroups|checkMemberObjects|getMemberGroups|getMemberObjects)$")
_READ_DIR = ("Directory.Read.All", "Directory.ReadWrite.All")
_RM_READ = ("RoleManagement.Read.Directory", "RoleManagement.Read.All", "RoleManagement.ReadWrite.Directory")
_SCHEDULE_READ = ("RoleAssignmentSchedule.Read.Directory", "RoleAssignmentSchedule.ReadWrite.Directory", *_RM_READ)
_INSTALL_WRITE = ("TeamsAppInstallation.ReadWriteSelfForUser.All", "TeamsAppInstallation.ReadWriteForUser.All",
                  "TeamsAppInstallation.ReadWriteAndConsentSelfForUser.All",
                  "TeamsAppInstallation.ReadWriteAndConsentForUser.All")
_INSTALL_READ = ("TeamsAppInstallation.ReadForUser.All", *_INSTALL_WRITE)
# (methods, path regex, accepted app roles): Graph's least-privileged permission tables, used if enforce_roles.
# First match wins: the teamwork rows come before the generic /users/ row.
PERMISSIONS: tuple[tuple[frozenset[str], re.Pattern[str], tuple[str, ...]], ...] = (
    (frozenset({"GET"}), re.compile(r"^/v1\.0/appCatalogs/teamsApps"),
     ("AppCatalog.Read.All", "AppCatalog.ReadWrite.All", *_READ_DIR)),
    (frozenset({"POST", "DELETE"}), re.compile(r"^/v1\.0/users/[^/]+/teamwork/installedApps"), _INSTALL_WRITE),
    (frozenset({"GET"}), re.compile(r"^/v1\.0/users/[^/]+/teamwork/installedApps"), _INSTALL_READ),
    (frozenset({"POST"}), re.compile(r"^/v1\.0/users/[^/]+/revokeSignInSessions$"),
     ("User.RevokeSessions.All", "User.ReadWrite.All", "Directory.ReadWrite.All")),
    (frozenset({"GET"}), re.compile(r"^/v1\.0/auditLogs/"), ("AuditLog.Read.All",)),
    (frozenset({"GET"}), re.compile(r"^/v1\.0/identityProtection/riskyUsers"),
     ("IdentityRiskyUser.Read.All", "IdentityRiskyUser.ReadWrite.All")),
    (frozenset({"GET"}), re.compile(r"^/v1\.0/users/[^/]+$"), ("User.Read.All", "User.ReadWrite.All", *_READ_DIR)),
    # PIM for Groups (§8.4) and direct membership: Graph's least-privileged application permissions.
    (frozenset({"POST"}), re.compile(rf"^{PG}/assignmentScheduleRequests"),
     ("PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup",)),
    (frozenset({"GET"}), re.compile(rf"^{PG}/assignmentSchedule"),
     ("PrivilegedAssignmentSchedule.Read.AzureADGroup", "PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup")),
    (frozenset({"GET"}), re.compile(r"^/v1\.0/policies/roleManagementPolicyAssignments"),
     ("RoleManagementPolicy.Read.AzureADGroup", "RoleManagementPolicy.ReadWrite.AzureADGroup")),
    (frozenset({"POST", "DELETE"}), re.compile(r"^/v1\.0/groups/[^/]+/members/"),
     ("GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All")),
    (frozenset({"POST", "DELETE"}), re.compile(r"^/v1\.0/groups/[^/]+/owners/"),
     ("Group.ReadWrite.All", "Directory.ReadWrite.All")),
    (frozenset({"GET", "POST"}), re.compile(r"^/v1\.0/(users|groups)/"),
     ("GroupMember.Read.All", "Group.Read.All", "User.Read.All", *_READ_DIR)),
    (frozenset({"GET"}), re.compile(rf"^{RM}/roleDefinitions"), (*_RM_READ, *_READ_DIR)),
    (frozenset({"POST"}), re.compile(rf"^{RM}/roleAssignmentScheduleRequests"),
     ("RoleAssignmentSchedule.ReadWrite.Directory", "RoleManagement.ReadWrite.Directory")),
    (frozenset({"GET"}), re.compile(rf"^{RM}/roleAssignmentSchedule"), _SCHEDULE_READ),
    (frozenset({"GET"}), re.compile(rf"^{RM}/roleAssignments"), (*_RM_READ, *_READ_DIR)),
    (frozenset({"POST", "DELETE"}), re.compile(rf"^{RM}/roleAssignments"), ("RoleManagement.ReadWrite.Directory",)),
)
ASSIGNMENT_FILTER_PROPS = ("id", "principalId", "roleDefinitionId", "directoryScopeId", "appScopeId",
                           "roleAssignmentScheduleId", "roleAssignmentOriginId", "assignmentType", "memberType")


class GraphEmulator(Emulator):
    name = "graph"

    def __init__(
        self,
        *,
        tenant_id: str = DEMO_TENANT_ID,
        signing_secret: str = DEFAULT_SIGNING_SECRET,
        min_active_seconds: float = 300.0,
        write_rate_limit: float | None = None,
        write_burst: float | None = None,
        reporting_rate_limit: float | None = None,
        default_role_settings: RoleSettings | None = None,
        enforce_roles: bool = False,
        clock: Clock | NowFn | None = None,
        fault_seed: int = 0,
    ) -> None:
        self.tenant_id = tenant_id
        self.signing_secret = signing_secret
        self._config = {
            "min_active_seconds": min_active_seconds,
            "write_rate_limit": write_rate_limit,
            "write_burst": write_burst,
            "enforce_roles": enforce_roles,
            "reporting_rate_limit": reporting_rate_limit,
        }
        self._default_role_settings = default_role_settings or RoleSettings()
        super().__init__(clock=clock, fault_seed=fault_seed)

    # ----- state -----------------------------------------------------------------------------------------
    def _clear_state(self) -> None:
        self.directory = Directory()
        self.pim = PimEngine(
            self.directory, self.clock, min_active_seconds=float(self._config["min_active_seconds"] or 0),
            default_settings=RoleSettings(**vars(self._default_role_settings)),
        )
        self.enforce_roles = bool(self._config["enforce_roles"])
        self.groups_pim = GroupPim(self.directory, self.clock,
                                   min_active_seconds=float(self._config["min_active_seconds"] or 0))
        self.teamwork = Teamwork()
        self.audit_logs = AuditLogs()
        self.throttled_count = 0
        self._configure_bucket(self._config["write_rate_limit"], self._config["write_burst"])
        self._configure_reporting(self._config["reporting_rate_limit"])

    def _configure_reporting(self, rate: float | None) -> None:
        """The reporting APIs' own limit (§8.2: 5 requests per 10 s per app per tenant), as requests per second."""
        self.reporting_rate_limit = rate
        self._reporting = TokenBucket(rate, max(1.0, rate * 10), now=lambda: self.clock.now().timestamp()) \
            if rate else None

    def _configure_bucket(self, rate: float | None, burst: float | None) -> None:
        self.write_rate_limit, self.write_burst = rate, burst
        self._bucket = (
            TokenBucket(rate, burst, now=lambda: self.clock.now().timestamp()) if rate else None
        )

    def _snapshot(self) -> dict[str, Any]:
        return {
            **self.directory.to_json(),
            **self.pim.to_json(),
            **self.groups_pim.to_json(),
            **self.teamwork.to_json(),
            **self.audit_logs.to_json(),
            "reporting_rate_limit": self.reporting_rate_limit,
            "write_rate_limit": self.write_rate_limit,
            "write_burst": self.write_burst,
            "throttled_count": self.throttled_count,
            "enforce_roles": self.enforce_roles,
        }

    def _apply_state(self, data: dict[str, Any]) -> None:
        data = dict(data)
        d = self.directory
        if "users" in data:
            d.replace_users(data.pop("users"))
        if "groups" in data:
            d.replace_groups(data.pop("groups"))
        if "memberships" in data:
            d.replace_memberships(data.pop("memberships"))
        if "owners" in data:
            d.replace_owners(data.pop("owners"))
        if "min_active_seconds" in data:
            self.groups_pim.min_active_seconds = float(data["min_active_seconds"])
        self.groups_pim.apply(data)
        if "role_definitions" in data:
            d.replace_role_definitions(data.pop("role_definitions"))
        if "min_active_seconds" in data:
            self.pim.min_active_seconds = float(data.pop("min_active_seconds"))
        if "default_role_settings" in data:
            self.pim.default_settings = RoleSettings.from_json(data.pop("default_role_settings"))
        if "role_settings" in data:
            self.pim.role_settings = {
                k.lower(): RoleSettings.from_json(v) for k, v in data.pop("role_settings").items()
            }
        if "write_rate_limit" in data or "write_burst" in data:
            self._configure_bucket(
                data.pop("write_rate_limit", self.write_rate_limit), data.pop("write_burst", self.write_burst)
            )
        if "enforce_roles" in data:
            self.enforce_roles = bool(data.pop("enforce_roles"))
        self.teamwork.apply(data, self.clock.now())
        try:
            self.audit_logs.apply(data)
        except ValueError as exc:
            raise StateError(str(exc)) from exc
        if "reporting_rate_limit" in data:
            self._configure_reporting(data.pop("reporting_rate_limit"))
        for key in ("sessions_valid_from", "revocations"):
            if key in data:
                raise StateError(f"'{key}' is derived state")
        if "assignments" in data:
            self.pim.assignments = []
            for row in data.pop("assignments"):
                self.add_assignment(
                    row["principalId"], row["roleDefinitionId"], scope=row.get("directoryScopeId", "/"),
                    kind=row.get("kind", "direct"),
                    start=_optional_datetime(row.get("startDateTime")),
                    end=_optional_datetime(row.get("endDateTime")),
                )
        for key in ("instances", "role_assignments", "schedule_requests", "history", "throttled_count",
                    "group_instances", "group_schedule_requests", "group_history"):
            if key in data:
                raise StateError(f"'{key}' is derived state; seed 'assignments' instead")
        super()._apply_state(data)

    # ----- Python API ------------------------------------------------------------------------------------
    def add_assignment(
        self, principal_id: str, role_definition_id: str, *, scope: str = "/", kind: str = "direct",
        start: datetime | None = None, end: datetime | None = None,
    ) -> dict[str, Any]:
        """Seed an assignment (permanent when ``end`` is None) bypassing PIM policy; returns its instance."""
        with self.lock:
            return self.pim.add_assignment(
                principal_id, role_definition_id, scope=scope, kind=kind, start=start, end=end
            ).instance_json()

    def set_role_settings(self, role_definition_id: str, settings: RoleSettings) -> None:
        with self.lock:
            self.pim.role_settings[role_definition_id.lower()] = settings

    def instances(self) -> list[dict[str, Any]]:
        with self.lock:
            return [a.instance_json() for a in self.pim.active()]

    def history(self) -> list[dict[str, Any]]:
        with self.lock:
            self.pim.expire_due()
            return list(self.pim.history)

    def mint_token(
        self, *, roles: list[str] | None = None, app_id: str = DEMO_GRAPH_CLIENT_ID, lifetime_s: int = 3599,
        tenant_id: str | None = None, secret: str | None = None, audience: str = "https://graph.microsoft.com",
    ) -> str:
        """A bearer token this emulator accepts (or, with overrides, one it must reject)."""
        return mint_access_token(
            secret=secret or self.signing_secret, tenant_id=tenant_id or self.tenant_id, app_id=app_id,
            roles=list(DEFAULT_APP_ROLES) if roles is None else roles, lifetime_s=lifetime_s, audience=audience,
        )

    # ----- pipeline hooks --------------------------------------------------------------------------------
    async def preflight(self, request: web.Request) -> web.StreamResponse | None:
        if not request.path.startswith("/v1.0/"):
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._unauthorized(request, "Access token is empty.")
        try:
            claims = verify_access_token(token.strip(), secret=self.signing_secret, tenant_id=self.tenant_id)
        except TokenProblem as problem:
            return self._unauthorized(request, problem.message)
        request[CLAIMS] = claims
        with self.lock:  # PIM group memberships end on time whatever is read next (members lists too)
            self.groups_pim.expire_due()
        if self.enforce_roles and not self._permitted(request, claims):
            return self.error(request, 403, "Authorization_RequestDenied",
                              "Insufficient privileges to complete the operation.")
        if self._bucket is not None and request.method != "GET" and not _NOT_WRITES.search(request.path):
            wait = self._bucket.take()
            if wait is not None:
                with self.lock:
                    self.throttled_count += 1
                return self._throttled(request, format_retry_after(wait))
        return None

    def fault_defaults(self, status: int, request: web.Request) -> tuple[dict[str, str], Any]:
        if status == 429:
            headers, body = self._throttle_parts(request, "2.128")
            return headers, body
        codes = {400: "BadRequest", 401: "InvalidAuthenticationToken", 403: "Authorization_RequestDenied",
                 404: "Request_ResourceNotFound", 500: "InternalServerError", 502: "BadGateway",
                 503: "serviceNotAvailable", 504: "GatewayTimeout"}
        body = self._error_body(request, codes.get(status, "UnknownError"), f"Injected HTTP {status}.")
        return self._ids(request), body

    def unknown_route(self, request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
        if exc.status == 405:
            return self.error(request, 405, "Request_BadRequest",
                              f"The HTTP method '{request.method}' is not allowed for this resource.")
        segment = request.path.rstrip("/").rsplit("/", 1)[-1]
        return self.error(request, 400, "BadRequest",
                          f"Resource not found for the segment '{segment}'. (not implemented by the emulator)")

    def _permitted(self, request: web.Request, claims: dict[str, Any]) -> bool:
        roles = set(claims.get("roles") or [])
        for methods, pattern, accepted in PERMISSIONS:
            if request.method in methods and pattern.search(request.path):
                return bool(roles & set(accepted))
        return True

    # ----- response helpers ------------------------------------------------------------------------------
    def _ids(self, request: web.Request) -> dict[str, str]:
        request_id = request.get(REQUEST_ID) or str(uuid.uuid4())
        request[REQUEST_ID] = request_id
        return {"request-id": request_id, "client-request-id": request.headers.get("client-request-id", request_id)}

    def _error_body(self, request: web.Request, code: str, message: str) -> dict[str, Any]:
        ids = self._ids(request)
        return {"error": {"code": code, "message": message, "innerError": {
            "date": graph_date_seconds(self.clock.now()),
            "request-id": ids["request-id"],
            "client-request-id": ids["client-request-id"],
        }}}

    def error(self, request: web.Request, status: int, code: str, message: str) -> web.Response:
        headers: dict[str, str | None] = dict(self._ids(request))
        if status == 401:
            headers["WWW-Authenticate"] = WWW_AUTHENTICATE
        return json_response(self._error_body(request, code, message), status=status, headers=headers)

    def _unauthorized(self, request: web.Request, message: str) -> web.Response:
        return self.error(request, 401, "InvalidAuthenticationToken", message)

    def _throttle_parts(self, request: web.Request, retry_after: str) -> tuple[dict[str, str], Any]:
        body = body_of("graph/error_429_too_many_requests_doc.http.json")
        ids = self._ids(request)
        inner = body["error"]["innerError"]
        inner["date"] = graph_date_seconds(self.clock.now())
        inner["request-id"] = ids["request-id"]
        return {**ids, "Retry-After": retry_after}, body

    def _throttled(self, request: web.Request, retry_after: str) -> web.Response:
        headers, body = self._throttle_parts(request, retry_after)
        return json_response(body, status=429, headers=headers)

    def ok(self, request: web.Request, body: Any, status: int = 200) -> web.Response:
        return json_response(body, status=status, headers=self._ids(request), content_type=SUCCESS_TYPE)

    def pim_error(self, request: web.Request, error: PimError) -> web.Response:
        return self.error(request, error.status, error.code, error.message)

    def not_found(self, request: web.Request, resource_id: str) -> web.Response:
        return self.error(request, 404, "Request_ResourceNotFound",
                          f"Resource '{resource_id}' does not exist or one of its queried reference-property "
                          "objects are not present.")

    # ----- routes ----------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v1.0/users/{user}", self._h_user)
        r.add_get("/v1.0/users/{user}/{rel:transitiveMemberOf|memberOf}", self._h_member_of)
        r.add_get("/v1.0/users/{user}/{rel:transitiveMemberOf|memberOf}/microsoft.graph.group", self._h_member_of)
        r.add_post("/v1.0/users/{user}/checkMemberGroups", self._h_check_member_groups)
        r.add_get("/v1.0/groups/{group}", self._h_group)
        r.add_post("/v1.0/groups/{group}/{rel:members|owners}/$ref", self._h_add_link)
        r.add_delete("/v1.0/groups/{group}/{rel:members|owners}/{member}/$ref", self._h_remove_link)
        r.add_get("/v1.0/groups/{group}/owners", self._h_owners)
        r.add_post(f"{PG}/assignmentScheduleRequests", self._h_group_request)
        r.add_get(f"{PG}/assignmentScheduleInstances", self._h_group_instances)
        r.add_get("/v1.0/policies/roleManagementPolicyAssignments", self._h_policy_assignments)
        r.add_get("/v1.0/groups/{group}/{rel:transitiveMembers|members}", self._h_members)
        r.add_get("/v1.0/groups/{group}/{rel:transitiveMembers|members}/microsoft.graph.user", self._h_members)
        r.add_get(f"{RM}/roleDefinitions", self._h_role_definitions)
        r.add_get(f"{RM}/roleDefinitions/{{role_id}}", self._h_role_definition)
        r.add_post(f"{RM}/roleAssignmentScheduleRequests", self._h_create_request)
        r.add_get(f"{RM}/roleAssignmentScheduleRequests", self._h_list_requests)
        r.add_get(f"{RM}/roleAssignmentScheduleRequests/{{request_id}}", self._h_get_request)
        r.add_get(f"{RM}/roleAssignmentScheduleInstances", self._h_instances)
        r.add_get(f"{RM}/roleAssignmentScheduleInstances/{{instance_id}}", self._h_instance)
        r.add_get(f"{RM}/roleAssignments", self._h_role_assignments)
        r.add_post(f"{RM}/roleAssignments", self._h_create_role_assignment)
        r.add_get(f"{RM}/roleAssignments/{{assignment_id}}", self._h_role_assignment)
        r.add_delete(f"{RM}/roleAssignments/{{assignment_id}}", self._h_delete_role_assignment)
        r.add_get("/v1.0/appCatalogs/teamsApps", self._h_catalog)
        r.add_get("/v1.0/users/{user}/teamwork/installedApps", self._h_installed_apps)
        r.add_post("/v1.0/users/{user}/teamwork/installedApps", self._h_install_app)
        r.add_get("/v1.0/users/{user}/teamwork/installedApps/{installation}/chat", self._h_installation_chat)
        r.add_delete("/v1.0/users/{user}/teamwork/installedApps/{installation}", self._h_uninstall_app)
        r.add_post("/v1.0/users/{user}/revokeSignInSessions", self._h_revoke_sessions)
        # nextLink spells the segment in lower case (signins); both reach the same log.
        r.add_get("/v1.0/auditLogs/{kind:signIns|signins}", self._h_sign_ins)
        r.add_get("/v1.0/auditLogs/{kind:directoryAudits|directoryaudits}", self._h_directory_audits)
        r.add_get("/v1.0/identityProtection/riskyUsers/{user}", self._h_risky_user)

    # sessions, audit logs and risk (auditlogs.py)
    async def _h_revoke_sessions(self, request: web.Request) -> web.Response:
        with self.lock:
            user_id = self._user_id(request)
            if user_id is None:
                return self.not_found(request, request.match_info["user"])
            self.audit_logs.revoke_sessions(user_id, self.clock.now())
        body = body_of("graph/user_revoke_signin_sessions.http.json")
        return self.ok(request, body)

    async def _h_sign_ins(self, request: web.Request) -> web.Response:
        return await self._audit_page(request, "signIns", ("id", "userId", "userPrincipalName", "createdDateTime",
                                                           "appId", "status/errorCode"), "signIn", "signins")

    async def _h_directory_audits(self, request: web.Request) -> web.Response:
        return await self._audit_page(request, "directoryAudits",
                                      ("id", "activityDateTime", "category", "initiatedBy/user/id",
                                       "initiatedBy/user/userPrincipalName", "initiatedBy/app/appId",
                                       "targetResources/id"), "directoryAudit", "directoryAudits")

    async def _audit_page(self, request: web.Request, kind: str, properties: tuple[str, ...], type_name: str,
                          link_segment: str) -> web.Response:
        if self._reporting is not None:
            wait = self._reporting.take()
            if wait is not None:
                with self.lock:
                    self.throttled_count += 1
                return self._throttled(request, format_retry_after(wait))
        query = request.query
        try:
            conditions = parse_filter(query.get("$filter"))
            check_properties(conditions, properties, type_name)
            top = int(query["$top"]) if "$top" in query else None
            skip = int(query.get("$skiptoken", "0_0").rsplit("_", 1)[-1])
            if (top is not None and top < 1) or skip < 0:
                raise ODataError("Invalid $top or $skiptoken")
        except (ODataError, ValueError) as exc:
            return self.error(request, 400, "BadRequest", str(exc))
        try:
            with self.lock:
                value, following = self.audit_logs.page(kind, conditions, top, skip, self.clock.now())
        except AuditLogError as exc:
            if exc.status == 403:
                # The fixture's body: a licence gate, not a missing permission (§8.2).
                body = body_of("graph/error_403_signins_non_premium_tenant.http.json")
                return json_response(body, status=403, headers=self._ids(request))
            return self.error(request, exc.status, exc.code, exc.message)
        out: dict[str, Any] = {"@odata.context": f"{CTX}auditLogs/{kind}"}
        if following is not None:
            params = {k: v for k, v in query.items() if k != "$skiptoken"}
            params["$skiptoken"] = f"{uuid.uuid4().hex}_{following}"
            out["@odata.nextLink"] = str(request.url.with_path(f"/v1.0/auditLogs/{link_segment}")
                                         .with_query(params))
        out["value"] = value
        return self.ok(request, out)

    async def _h_risky_user(self, request: web.Request) -> web.Response:
        user_key = request.match_info["user"]
        try:
            with self.lock:
                row = self.audit_logs.risky_user(user_key)
        except AuditLogError as exc:
            if exc.status == 404:
                # §8.5: the real body was never captured; clients must branch on the status only.
                body = body_of("graph/risky_user_get_404_never_risky.http.json")
                return json_response(body, status=404, headers=self._ids(request))
            body = body_of("graph/error_403_signins_non_premium_tenant.http.json")
            return json_response(body, status=exc.status, headers=self._ids(request))
        return self.ok(request, {"@odata.context": f"{CTX}identityProtection/riskyUsers/$entity", **row})

    # users and groups
    async def _h_user(self, request: web.Request) -> web.Response:
        user_key = request.match_info["user"]
        fields = parse_select(request.query.get("$select"))
        with self.lock:
            user = self.directory.find_user(user_key)
            if user is None:
                return self.not_found(request, user_key)
            body = {k: user.get(k) for k in (fields or USER_DEFAULT_PROPERTIES)}
        context = f"{CTX}users{context_select_suffix(fields)}/$entity"
        return self.ok(request, {"@odata.context": context, **body})

    async def _h_member_of(self, request: web.Request) -> web.Response:
        user_key = request.match_info["user"]
        cast = request.path.endswith("/microsoft.graph.group")
        fields = parse_select(request.query.get("$select"))
        with self.lock:
            user = self.directory.find_user(user_key)
            if user is None:
                return self.not_found(request, user_key)
            transitive = request.match_info["rel"] == "transitiveMemberOf"
            group_ids = self.directory.group_ids_of(user["id"], transitive=transitive)
            groups = [self.directory.groups[g] for g in group_ids]
        items = [apply_select(g if cast else {"@odata.type": "#microsoft.graph.group", **g}, fields) for g in groups]
        entity = "groups" if cast else "directoryObjects"
        return self.ok(request, {"@odata.context": f"{CTX}{entity}{context_select_suffix(fields)}", "value": items})

    async def _h_check_member_groups(self, request: web.Request) -> web.Response:
        user_key = request.match_info["user"]
        try:
            body = await read_json(request)
            requested = list(body["groupIds"])
        except (ValueError, KeyError, TypeError):
            return self.error(request, 400, "Request_BadRequest", "The request body must contain 'groupIds'.")
        with self.lock:
            user = self.directory.find_user(user_key)
            if user is None:
                return self.not_found(request, user_key)
            member_of = set(self.directory.group_ids_of(user["id"], transitive=True))
        hits = [g for g in requested if str(g).lower() in member_of]
        return self.ok(request, {"@odata.context": f"{CTX}Collection(Edm.String)", "value": hits})

    async def _h_group(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        fields = parse_select(request.query.get("$select"))
        with self.lock:
            group = self.directory.find_group(group_id)
            if group is None:
                return self.not_found(request, group_id)
            body = apply_select(group, fields)
        return self.ok(request, {"@odata.context": f"{CTX}groups{context_select_suffix(fields)}/$entity", **body})

    async def _h_members(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        cast = request.path.endswith("/microsoft.graph.user")
        fields = parse_select(request.query.get("$select"))
        with self.lock:
            if self.directory.find_group(group_id) is None:
                return self.not_found(request, group_id)
            transitive = request.match_info["rel"] == "transitiveMembers"
            members = [self.directory.principal(m) for m in
                       self.directory.member_ids_of(group_id, transitive=transitive)]
        items = [m for m in members if m is not None]
        if cast:
            items = [{k: v for k, v in m.items() if k != "@odata.type"} for m in items
                     if m["@odata.type"] == "#microsoft.graph.user"]
        entity = "users" if cast else "directoryObjects"
        value = [apply_select(m, fields) for m in items]
        return self.ok(request, {"@odata.context": f"{CTX}{entity}{context_select_suffix(fields)}", "value": value})

    # group membership and ownership: direct ($ref) and PIM for Groups (pim_groups.py)
    async def _h_add_link(self, request: web.Request) -> web.Response:
        try:
            body = await read_json(request)
            ref = str(body["@odata.id"]) if isinstance(body, dict) else ""
        except (ValueError, KeyError):
            ref = ""
        member = ref.rstrip("/").rsplit("/", 1)[-1].strip("'()") if "/directoryObjects/" in ref else ""
        if not member:
            return self.error(request, 400, "Request_BadRequest", "The request body must contain '@odata.id' "
                                                                  "naming a directoryObjects/{id}.")
        access = "member" if request.match_info["rel"] == "members" else "owner"
        with self.lock:
            group = self.directory.find_group(request.match_info["group"])
            if group is None:
                return self.not_found(request, request.match_info["group"])
            if not self.directory.principal_exists(member):
                return self.not_found(request, member)
            if not self.groups_pim.link(group["id"], member, access):
                rel = request.match_info["rel"]
                return self.error(request, 400, "Request_BadRequest", "One or more added object references "
                                  f"already exist for the following modified properties: '{rel}'.")
        return web.Response(status=204, headers=self._ids(request))

    async def _h_remove_link(self, request: web.Request) -> web.Response:
        access = "member" if request.match_info["rel"] == "members" else "owner"
        member = request.match_info["member"]
        with self.lock:
            group = self.directory.find_group(request.match_info["group"])
            if group is None or not self.groups_pim.unlink(group["id"], member, access):
                return self.not_found(request, member)
        return web.Response(status=204, headers=self._ids(request))

    async def _h_owners(self, request: web.Request) -> web.Response:
        fields = parse_select(request.query.get("$select"))
        with self.lock:
            group = self.directory.find_group(request.match_info["group"])
            if group is None:
                return self.not_found(request, request.match_info["group"])
            rows = [self.directory.principal(m) for m in self.groups_pim.links(group["id"], "owner")]
        value = [apply_select(m, fields) for m in rows if m is not None]
        return self.ok(request, {"@odata.context": f"{CTX}directoryObjects", "value": value})

    async def _json_object(self, request: web.Request) -> dict[str, Any] | web.Response:
        """The request's JSON object, or Graph's 400 for anything else."""
        try:
            body = await read_json(request)
        except ValueError:
            return self.error(request, 400, "BadRequest", "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return self.error(request, 400, "BadRequest", "The request body must be a JSON object.")
        return body

    async def _h_group_request(self, request: web.Request) -> web.Response:
        body = await self._json_object(request)
        if isinstance(body, web.Response):
            return body
        try:
            with self.lock:
                result = self.groups_pim.submit(body, request.get(CLAIMS, {}).get("appid"))
        except PimError as exc:
            return self.pim_error(request, exc)
        return self.ok(request, result, status=201)

    async def _h_group_instances(self, request: web.Request) -> web.Response:
        try:
            conditions = parse_filter(request.query.get("$filter"))
            check_properties(conditions, ("id", "groupId", "principalId", "accessId", "assignmentScheduleId"),
                             "privilegedAccessGroupAssignmentScheduleInstance")
        except ODataError as exc:
            return self.error(request, 400, "BadRequest", str(exc))
        # §8.4: the list requires a filter on groupId or principalId (the real error body was not captured).
        if not any(c.prop in ("groupId", "principalId") for c in conditions):
            return self.error(request, 400, "BadRequest", "A filter on groupId or principalId is required.")
        with self.lock:
            rows = [a.instance_json() for a in self.groups_pim.active()]
        return self.ok(request, {"@odata.context": f"{CTX}identityGovernance/privilegedAccess/group/"
                                                   "assignmentScheduleInstances",
                                 "value": apply_filter(rows, conditions)})

    async def _h_policy_assignments(self, request: web.Request) -> web.Response:
        try:
            conditions = parse_filter(request.query.get("$filter"))
            check_properties(conditions, ("scopeId", "scopeType", "roleDefinitionId"),
                             "unifiedRoleManagementPolicyAssignment")
        except ODataError as exc:
            return self.error(request, 400, "BadRequest", str(exc))
        scope = next((str(c.values[0]) for c in conditions if c.prop == "scopeId" and c.values), "")
        with self.lock:
            rows = self.groups_pim.policy_assignments(scope) if scope else []
        return self.ok(request, {"@odata.context": f"{CTX}policies/roleManagementPolicyAssignments",
                                 "value": apply_filter(rows, conditions)})

    # role definitions
    async def _h_role_definitions(self, request: web.Request) -> web.Response:
        try:
            conditions = parse_filter(request.query.get("$filter"))
            check_properties(conditions, ("id", "displayName", "templateId", "isBuiltIn", "isEnabled"),
                             "unifiedRoleDefinition")
        except ODataError as exc:
            return self.error(request, 400, "BadRequest", str(exc))
        with self.lock:
            value = apply_filter(self.directory.role_definitions.values(), conditions)
        return self.ok(request, {"@odata.context": f"{CTX}roleManagement/directory/roleDefinitions", "value": value})

    async def _h_role_definition(self, request: web.Request) -> web.Response:
        role_id = request.match_info["role_id"]
        with self.lock:
            role = self.directory.find_role(role_id)
        if role is None:
            return self.not_found(request, role_id)
        return self.ok(request, {"@odata.context": f"{CTX}roleManagement/directory/roleDefinitions/$entity", **role})

    # schedule requests and instances
    async def _h_create_request(self, request: web.Request) -> web.Response:
        body = await self._json_object(request)
        if isinstance(body, web.Response):
            return body
        app_id = request.get(CLAIMS, {}).get("appid")
        try:
            with self.lock:
                result = self.pim.submit(body, app_id)
        except PimError as exc:
            return self.pim_error(request, exc)
        return self.ok(request, result, status=201)

    async def _h_list_requests(self, request: web.Request) -> web.Response:
        try:
            conditions = parse_filter(request.query.get("$filter"))
            check_properties(conditions, ("id", "principalId", "roleDefinitionId", "directoryScopeId", "action",
                                          "status"), "unifiedRoleAssignmentScheduleRequest")
        except ODataError as exc:
            return self.error(request, 400, "BadRequest", str(exc))
        with self.lock:
            rows = [{k: v for k, v in r.items() if k != "@odata.context"} for r in self.pim.requests.values()]
        context = f"{CTX}roleManagement/directory/roleAssignmentScheduleRequests"
        return self.ok(request, {"@odata.context": context, "value": apply_filter(rows, conditions)})

    async def _h_get_request(self, request: web.Request) -> web.Response:
        request_id = request.match_info["request_id"]
        with self.lock:
            found = self.pim.requests.get(request_id)
        if found is None:
            return self.not_found(request, request_id)
        return self.ok(request, found)

    async def _h_instances(self, request: web.Request) -> web.Response:
        return self._list_assignments(request, "roleAssignmentScheduleInstances", instance=True)

    async def _h_instance(self, request: web.Request) -> web.Response:
        return self._get_assignment(request, "roleAssignmentScheduleInstances", "instance_id", instance=True)

    # direct role assignments
    async def _h_role_assignments(self, request: web.Request) -> web.Response:
        return self._list_assignments(request, "roleAssignments", instance=False)

    async def _h_role_assignment(self, request: web.Request) -> web.Response:
        return self._get_assignment(request, "roleAssignments", "assignment_id", instance=False)

    async def _h_create_role_assignment(self, request: web.Request) -> web.Response:
        try:
            body = await read_json(request)
        except ValueError:
            return self.error(request, 400, "BadRequest", "The request body is not valid JSON.")
        try:
            with self.lock:
                row = self.pim.create_direct(body if isinstance(body, dict) else {})
        except PimError as exc:
            return self.pim_error(request, exc)
        context = f"{CTX}roleManagement/directory/roleAssignments/$entity"
        return self.ok(request, {"@odata.context": context, **row.role_assignment_json()}, status=201)

    async def _h_delete_role_assignment(self, request: web.Request) -> web.Response:
        assignment_id = request.match_info["assignment_id"]
        with self.lock:
            deleted = self.pim.delete_direct(assignment_id)
        if not deleted:
            return self.not_found(request, assignment_id)
        return web.Response(status=204, headers=self._ids(request))

    def _list_assignments(self, request: web.Request, entity: str, *, instance: bool) -> web.Response:
        try:
            conditions = parse_filter(request.query.get("$filter"))
            type_name = "unifiedRoleAssignmentScheduleInstance" if instance else "unifiedRoleAssignment"
            check_properties(conditions, ASSIGNMENT_FILTER_PROPS, type_name)
            expand = _parse_expand(request.query.get("$expand"))
        except ODataError as exc:
            return self.error(request, 400, "BadRequest", str(exc))
        fields = parse_select(request.query.get("$select"))
        with self.lock:
            rows = [a.instance_json() if instance else a.role_assignment_json() for a in self.pim.active()]
            matched = apply_filter(rows, conditions)
            value = [apply_select(self._expand(row, expand), _with_expanded(fields, expand)) for row in matched]
        context = f"{CTX}roleManagement/directory/{entity}{context_select_suffix(fields)}"
        return self.ok(request, {"@odata.context": context, "value": value})

    def _get_assignment(self, request: web.Request, entity: str, key: str, *, instance: bool) -> web.Response:
        assignment_id = request.match_info[key]
        try:
            expand = _parse_expand(request.query.get("$expand"))
        except ODataError as exc:
            return self.error(request, 400, "BadRequest", str(exc))
        with self.lock:
            row = self.pim.find_active(assignment_id)
            if row is None:
                return self.not_found(request, assignment_id)
            body = self._expand(row.instance_json() if instance else row.role_assignment_json(), expand)
        context = f"{CTX}roleManagement/directory/{entity}/$entity"
        return self.ok(request, {"@odata.context": context, **body})

    def _expand(self, row: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        out = dict(row)
        if "roleDefinition" in expand:
            out["roleDefinition"] = self.directory.find_role(row["roleDefinitionId"])
        if "principal" in expand:
            out["principal"] = self.directory.principal(row["principalId"])
        return out


    # Teams proactive installation (teamwork.py)
    def _token(self, request: web.Request) -> tuple[str, set[str]]:
        claims = request.get(CLAIMS, {})
        return str(claims.get("appid") or claims.get("azp") or ""), set(claims.get("roles") or [])

    def teamwork_error(self, request: web.Request, error: TeamworkError) -> web.Response:
        if error.inner_code is None:
            return self.error(request, error.status, error.code, error.message)
        body = self._error_body(request, error.code, error.message)
        body["error"]["innerError"] = {"code": error.inner_code, "message": error.message,
                                       **body["error"]["innerError"]}
        return json_response(body, status=error.status, headers=self._ids(request))

    def _user_id(self, request: web.Request) -> str | None:
        user = self.directory.find_user(request.match_info["user"])
        return str(user["id"]) if user is not None else None

    async def _h_catalog(self, request: web.Request) -> web.Response:
        try:
            conditions = parse_filter(request.query.get("$filter"))
            check_properties(conditions, ("id", "externalId", "displayName", "distributionMethod"), "teamsApp")
        except ODataError as exc:
            return self.error(request, 400, "BadRequest", str(exc))
        with self.lock:
            value = apply_filter(self.teamwork.catalog(), conditions)
        return self.ok(request, {"@odata.context": f"{CTX}appCatalogs/teamsApps", "value": value})

    async def _h_installed_apps(self, request: web.Request) -> web.Response:
        try:
            conditions = parse_filter(request.query.get("$filter"))
            check_properties(conditions, ("id", "teamsApp/id", "teamsApp/externalId"),
                             "userScopeTeamsAppInstallation")
            expand = _teamwork_expand(request.query.get("$expand"))
        except ODataError as exc:
            return self.error(request, 400, "BadRequest", str(exc))
        app_id, roles = self._token(request)
        with self.lock:
            user_id = self._user_id(request)
            if user_id is None:
                return self.not_found(request, request.match_info["user"])
            rows = []
            for installation, app in self.teamwork.installations(user_id, app_id, roles):
                flat = {"id": installation, "teamsApp/id": app.id, "teamsApp/externalId": app.external_id}
                if not all(c.test(flat) for c in conditions):
                    continue
                row: dict[str, Any] = {"id": installation}
                if "teamsApp" in expand:
                    row["teamsApp"] = app.catalog_json()
                if "teamsAppDefinition" in expand:
                    row["teamsAppDefinition"] = app.definition_json(bot="bot" in expand)
                rows.append(row)
        return self.ok(request, {"value": rows})

    async def _h_install_app(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_json(request)
            bind = str(body["teamsApp@odata.bind"])
        except (ValueError, KeyError, TypeError):
            return self.error(request, 400, "BadRequest", "The request body must contain 'teamsApp@odata.bind'.")
        catalog_id = bind.rstrip("/").rsplit("/", 1)[-1].strip("'()")
        app_id, roles = self._token(request)
        with self.lock:
            user_id = self._user_id(request)
            if user_id is None:
                return self.not_found(request, request.match_info["user"])
            try:
                self.teamwork.install(user_id, catalog_id, self.clock.now(), token_app_id=app_id, roles=roles,
                                      tenant_id=self.tenant_id)
            except TeamworkError as exc:
                return self.teamwork_error(request, exc)
        return web.Response(status=201, headers=self._ids(request))

    async def _h_installation_chat(self, request: web.Request) -> web.Response:
        with self.lock:
            user_id = self._user_id(request)
            if user_id is None:
                return self.not_found(request, request.match_info["user"])
            try:
                chat = self.teamwork.chat(user_id, request.match_info["installation"], self.clock.now())
            except TeamworkError as exc:
                return self.teamwork_error(request, exc)
        return self.ok(request, {"@odata.context": f"{CTX}chats/$entity", "id": chat})

    async def _h_uninstall_app(self, request: web.Request) -> web.StreamResponse:
        with self.lock:
            user_id = self._user_id(request)
            if user_id is None or not self.teamwork.uninstall(user_id, request.match_info["installation"]):
                return self.not_found(request, request.match_info["installation"])
        return web.Response(status=204, headers=self._ids(request))


def _teamwork_expand(text: str | None) -> set[str]:
    """`teamsApp,teamsAppDefinition($expand=bot)` -> {"teamsApp", "teamsAppDefinition", "bot"}."""
    out: set[str] = set()
    for item in re.split(r",(?![^(]*\))", text or ""):
        item = item.strip()
        if not item:
            continue
        name, _, nested = item.partition("(")
        if name not in ("teamsApp", "teamsAppDefinition"):
            raise ODataError(f"Could not find a navigation property named '{name}'.")
        out.add(name)
        if nested:
            if name != "teamsAppDefinition" or nested.rstrip(")").replace(" ", "") != "$expand=bot":
                raise ODataError(f"Unsupported nested expand: {item!r}")
            out.add("bot")
    return out


def _parse_expand(text: str | None) -> list[str]:
    if not text:
        return []
    items = [e.strip() for e in text.split(",") if e.strip()]
    unknown = [e for e in items if e not in ("roleDefinition", "principal")]
    if unknown:
        raise ODataError(f"Could not find a navigation property named '{unknown[0]}'.")
    return items


def _with_expanded(fields: list[str] | None, expand: list[str]) -> list[str] | None:
    return None if fields is None else [*fields, *[e for e in expand if e not in fields]]


def _optional_datetime(value: str | None) -> datetime | None:
    return parse_datetime(value) if value else None

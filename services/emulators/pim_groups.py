"""PIM for Groups and direct group membership, the group half of the Graph emulator (PROTOCOL_NOTES §8.4).

Active PIM group assignments live here; the membership or ownership they give is written into the directory (so
`GET /groups/{id}/members` lists it, as real Graph does) and taken out again at the end, on `adminRemove`, or when
the row expires (lazily, on every request). Direct `members/$ref` / `owners/$ref` writes go to the directory only.

Assumptions where the fixtures are silent (noted in README "Assumptions"): a group is PIM-managed when seeded in
`pim_groups`; a request for any other group fails with a configurable error (default 400
`InvalidRoleAssignmentRequest`, the PIM for Groups code closest to it, since the real one was never captured); an
onboarded group lists one role-management policy assignment per access (member, owner) at its scope.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .clock import Clock
from .directory import Directory
from .isotime import graph_datetime, parse_datetime, parse_duration
from .pim import REQUEST_ACTIONS, PimError, _minutes_text

CONTEXT = "https://graph.microsoft.com/v1.0/$metadata#identityGovernance/privilegedAccess/group"
ACCESS = ("member", "owner")
UNMANAGED = {"status": 400, "code": "InvalidRoleAssignmentRequest",
             "message": "The group is not managed by Privileged Identity Management."}


@dataclass
class GroupAssignment:
    id: str
    principal_id: str
    group_id: str
    access: str
    start: datetime
    end: datetime | None
    request_id: str

    def instance_json(self) -> dict[str, Any]:
        # Casing copies the doc examples ("Assigned"/"Direct"); clients compare case-insensitively.
        return {"id": self.id, "principalId": self.principal_id, "startDateTime": graph_datetime(self.start),
                "endDateTime": graph_datetime(self.end), "assignmentType": "Assigned", "accessId": self.access,
                "groupId": self.group_id, "memberType": "Direct", "assignmentScheduleId": self.id}


@dataclass
class GroupPim:
    directory: Directory
    clock: Clock
    min_active_seconds: float = 300.0
    max_duration: timedelta = timedelta(hours=24)
    managed: set[str] = field(default_factory=set)
    unmanaged_error: dict[str, Any] = field(default_factory=lambda: dict(UNMANAGED))
    assignments: list[GroupAssignment] = field(default_factory=list)
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    # ----- directory links (direct membership and what PIM provisions) --------------------------------------
    def links(self, group_id: str, access: str) -> list[str]:
        table = self.directory.memberships if access == "member" else self.directory.owners
        return table.setdefault(group_id.lower(), [])

    def link(self, group_id: str, principal_id: str, access: str) -> bool:
        members = self.links(group_id, access)
        if principal_id.lower() in members:
            return False
        members.append(principal_id.lower())
        return True

    def unlink(self, group_id: str, principal_id: str, access: str) -> bool:
        members = self.links(group_id, access)
        if principal_id.lower() not in members:
            return False
        members.remove(principal_id.lower())
        return True

    # ----- time -------------------------------------------------------------------------------------------
    def expire_due(self) -> None:
        now = self.clock.now()
        for row in [a for a in self.assignments if a.end is not None and a.end <= now]:
            self.assignments.remove(row)
            self.unlink(row.group_id, row.principal_id, row.access)
            self._log("expired", row, row.end)

    def active(self) -> list[GroupAssignment]:
        self.expire_due()
        return list(self.assignments)

    # ----- schedule requests ------------------------------------------------------------------------------
    def submit(self, body: dict[str, Any], app_id: str | None) -> dict[str, Any]:
        self.expire_due()
        action = REQUEST_ACTIONS.get(str(body.get("action", "")).lower())
        if action is None:
            raise PimError("BadRequest", f"The request action '{body.get('action')}' is not supported.")
        principal_id = str(_required(body, "principalId")).lower()
        group_id = str(_required(body, "groupId")).lower()
        access = str(_required(body, "accessId")).lower()
        if access not in ACCESS:
            raise PimError("InvalidRoleAssignmentRequest", f"The accessId '{body.get('accessId')}' is not valid.")
        if self.directory.find_group(group_id) is None:
            raise PimError("Request_ResourceNotFound", f"Resource '{group_id}' does not exist.", 404)
        if group_id not in self.managed:
            err = self.unmanaged_error
            raise PimError(str(err["code"]), str(err.get("message") or ""), int(err.get("status", 400)))
        if not self.directory.principal_exists(principal_id):
            raise PimError("SubjectNotFound", f"The subject '{principal_id}' was not found.")
        now = self.clock.now()
        existing = next((a for a in self.assignments if (a.principal_id, a.group_id, a.access) ==
                         (principal_id, group_id, access)), None)
        if action == "adminAssign":
            if existing is not None or principal_id in self.links(group_id, access):
                raise PimError("RoleAssignmentExists", "The Role assignment already exists.")
            start, end, expiration = self._schedule(body.get("scheduleInfo"), now, clamp=True)
            request_id = str(uuid.uuid4())
            row = GroupAssignment(id=f"{group_id}_{access}_{request_id}", principal_id=principal_id,
                                  group_id=group_id, access=access, start=start, end=end, request_id=request_id)
            self.assignments.append(row)
            self.link(group_id, principal_id, access)
            self._log("created", row, now)
            return self._request(request_id, action, body, row, app_id, now, "Provisioned", row.id,
                                 (start, expiration))
        if existing is None:
            raise PimError("RoleAssignmentDoesNotExist", "The Role assignment does not exist.")
        if action == "adminRemove":
            if (now - existing.start).total_seconds() < self.min_active_seconds:
                raise PimError("ActiveDurationTooShort", "The Active duration is too short. Miniumum Required is "
                                                         f"{_minutes_text(self.min_active_seconds)}.")
            self.assignments.remove(existing)
            self.unlink(group_id, principal_id, access)
            self._log("removed", existing, now)
            return self._request(str(uuid.uuid4()), action, body, existing, app_id, now, "Revoked", None, None)
        start, end, expiration = self._schedule(body.get("scheduleInfo"), existing.start, clamp=False)
        existing.start, existing.end = start, end
        self._log("updated", existing, now)
        return self._request(str(uuid.uuid4()), action, body, existing, app_id, now, "Provisioned", existing.id,
                             (start, expiration))

    def _schedule(self, info: dict[str, Any] | None, default_start: datetime,
                  clamp: bool) -> tuple[datetime, datetime | None, dict[str, Any]]:
        info = info or {}
        try:
            requested = parse_datetime(info["startDateTime"]) if info.get("startDateTime") else default_start
            start = max(requested, self.clock.now()) if clamp else requested
            expiration = info.get("expiration") or {}
            kind = str(expiration.get("type") or "").lower()
            if kind == "afterduration":
                end = start + parse_duration(_required(expiration, "duration"))
                echoed = {"type": "afterDuration", "endDateTime": None, "duration": expiration["duration"]}
            elif kind == "afterdatetime":
                end = parse_datetime(_required(expiration, "endDateTime"))
                echoed = {"type": "afterDateTime", "endDateTime": graph_datetime(end), "duration": None}
            else:
                raise PimError("RoleAssignmentRequestPolicyValidationFailed",
                               'The following policy rules failed: ["ExpirationRule"]')
        except ValueError as exc:
            raise PimError("InvalidScheduleInfo", str(exc)) from exc
        if end <= start:
            raise PimError("InvalidScheduleInfo", "The expiration must be after the start.")
        if end - start > self.max_duration:
            raise PimError("RoleAssignmentRequestPolicyValidationFailed",
                           'The following policy rules failed: ["ExpirationRule"]')
        if end - start < timedelta(minutes=5):
            raise PimError("ActiveDurationTooShort", "The Active duration is too short. Miniumum Required is "
                                                     "5 minutes.")
        return start, end, echoed

    def _request(self, request_id: str, action: str, body: dict[str, Any], row: GroupAssignment,
                 app_id: str | None, now: datetime, status: str, target: str | None,
                 schedule: tuple[datetime, dict[str, Any]] | None) -> dict[str, Any]:
        ticket = body.get("ticketInfo") or {}
        out = {
            "@odata.context": f"{CONTEXT}/assignmentScheduleRequests/$entity", "id": request_id, "status": status,
            "completedDateTime": graph_datetime(now), "createdDateTime": graph_datetime(now), "approvalId": None,
            "customData": None,
            "createdBy": {"application": {"displayName": None, "id": app_id} if app_id else None, "device": None,
                          "user": None},
            "action": action, "isValidationOnly": False, "justification": body.get("justification"),
            "scheduleInfo": None if schedule is None else {
                "startDateTime": graph_datetime(schedule[0]), "recurrence": None, "expiration": schedule[1]},
            "ticketInfo": {"ticketNumber": ticket.get("ticketNumber"), "ticketSystem": ticket.get("ticketSystem")},
            "accessId": row.access, "principalId": row.principal_id, "groupId": row.group_id,
            "targetScheduleId": target,
        }
        self.requests[request_id] = out
        return out

    def policy_assignments(self, group_id: str) -> list[dict[str, Any]]:
        """What `policies/roleManagementPolicyAssignments` lists at a group's scope: one row per access once the
        group is onboarded, none before."""
        if group_id.lower() not in self.managed:
            return []
        return [{"id": f"Group_{group_id}_{access}", "policyId": f"Group_{group_id}_{access}", "scopeId": group_id,
                 "scopeType": "Group", "roleDefinitionId": access} for access in ACCESS]

    def _log(self, event: str, row: GroupAssignment, at: datetime | None) -> None:
        self.history.append({"event": event, "assignmentId": row.id, "principalId": row.principal_id,
                             "groupId": row.group_id, "accessId": row.access, "at": graph_datetime(at),
                             "endDateTime": graph_datetime(row.end)})

    def apply(self, data: dict[str, Any]) -> None:
        if "pim_groups" in data:
            self.managed = {str(g).lower() for g in data.pop("pim_groups")}
        if "pim_group_unmanaged_error" in data:
            self.unmanaged_error = {**UNMANAGED, **data.pop("pim_group_unmanaged_error")}
        if "group_assignments" in data:  # added to what is there (a test seeds someone else's assignment mid-run)
            for row in data.pop("group_assignments"):
                start = parse_datetime(row["startDateTime"]) if row.get("startDateTime") else self.clock.now()
                end = parse_datetime(row["endDateTime"]) if row.get("endDateTime") else None
                item = GroupAssignment(id=f"{row['groupId'].lower()}_{row.get('accessId', 'member')}_{uuid.uuid4()}",
                                       principal_id=row["principalId"].lower(), group_id=row["groupId"].lower(),
                                       access=row.get("accessId", "member"), start=start, end=end,
                                       request_id="seed")
                self.assignments.append(item)
                self.link(item.group_id, item.principal_id, item.access)

    def to_json(self) -> dict[str, Any]:
        self.expire_due()
        return {"pim_groups": sorted(self.managed), "pim_group_unmanaged_error": self.unmanaged_error,
                "group_instances": [a.instance_json() for a in self.assignments],
                "group_schedule_requests": list(self.requests.values()), "group_history": list(self.history)}


def _required(data: dict[str, Any], key: str) -> Any:
    value = data.get(key)
    if value in (None, ""):
        raise PimError("BadRequest", f"The property '{key}' is required.")
    return value

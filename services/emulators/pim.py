"""The PIM half of the Graph emulator: schedule requests, active assignments, direct assignments, history.

One store of ``Assignment`` rows backs three Graph views: ``roleAssignmentScheduleInstances`` (everything
active, PIM or permanent), ``roleAssignments`` (the same, as unifiedRoleAssignment) and the schedule requests.
Time comes from the injected clock; rows whose end has passed are expired lazily on every access and logged
in ``history`` at their scheduled end, so a benchmark can compute revocation lateness from the history alone.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .clock import Clock
from .directory import Directory
from .isotime import format_duration, graph_datetime, parse_datetime, parse_duration

EXPIRATION_TYPES = {t.lower(): t for t in ("notSpecified", "noExpiration", "afterDateTime", "afterDuration")}
REQUEST_ACTIONS = {a.lower(): a for a in ("adminAssign", "adminRemove", "adminUpdate", "adminExtend", "adminRenew")}
CONTEXT = "https://graph.microsoft.com/v1.0/$metadata#roleManagement/directory"


class PimError(Exception):
    """A Graph error for the PIM APIs: ``code`` is what clients branch on (never the message)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def instance_id(role_definition_id: str, principal_id: str, ordinal: int = 1) -> str:
    """base64url(roleDefId.bytes_le + principalId.bytes_le) + "-1" (PROTOCOL_NOTES §5, checked on doc data)."""
    try:
        raw = uuid.UUID(role_definition_id).bytes_le + uuid.UUID(principal_id).bytes_le
    except ValueError as exc:
        raise PimError("Request_BadRequest", f"Invalid GUID in '{role_definition_id}'/'{principal_id}'.") from exc
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + f"-{ordinal}"


@dataclass
class RoleSettings:
    """The parts of a PIM role policy that decide whether an admin assignment is accepted."""

    max_duration: timedelta | None = timedelta(hours=24)  # None: no limit
    allow_permanent: bool = False
    require_justification: bool = False
    require_ticket: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoleSettings:
        unknown = set(data) - {"max_duration", "allow_permanent", "require_justification", "require_ticket"}
        if unknown:
            raise ValueError(f"unknown role setting keys: {sorted(unknown)}")
        raw = data.get("max_duration", "PT24H")
        return cls(
            max_duration=None if raw is None else parse_duration(raw),
            allow_permanent=bool(data.get("allow_permanent", False)),
            require_justification=bool(data.get("require_justification", False)),
            require_ticket=bool(data.get("require_ticket", False)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "max_duration": None if self.max_duration is None else format_duration(self.max_duration),
            "allow_permanent": self.allow_permanent,
            "require_justification": self.require_justification,
            "require_ticket": self.require_ticket,
        }


@dataclass
class Assignment:
    id: str
    kind: str  # "pim" (created by a schedule request) or "direct" (roleAssignments / seeded permanent)
    principal_id: str
    role_definition_id: str
    directory_scope_id: str
    start: datetime | None
    end: datetime | None  # None: permanent
    schedule_id: str
    created_at: datetime
    request_id: str | None = None

    def started(self, now: datetime) -> bool:
        return self.start is None or self.start <= now

    def expired(self, now: datetime) -> bool:
        return self.end is not None and self.end <= now

    def same_target(self, principal_id: str, role_definition_id: str, scope: str) -> bool:
        return (
            self.principal_id.lower() == principal_id.lower()
            and self.role_definition_id.lower() == role_definition_id.lower()
            and self.directory_scope_id == scope
        )

    def instance_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "principalId": self.principal_id,
            "roleDefinitionId": self.role_definition_id,
            "directoryScopeId": self.directory_scope_id,
            "appScopeId": None,
            "startDateTime": graph_datetime(self.start),
            "endDateTime": graph_datetime(self.end),
            "assignmentType": "Assigned",
            "memberType": "Direct",
            "roleAssignmentOriginId": self.id,
            "roleAssignmentScheduleId": self.schedule_id,
        }

    def role_assignment_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "roleDefinitionId": self.role_definition_id,
            "principalId": self.principal_id,
            "directoryScopeId": self.directory_scope_id,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "principalId": self.principal_id,
            "roleDefinitionId": self.role_definition_id, "directoryScopeId": self.directory_scope_id,
            "startDateTime": graph_datetime(self.start), "endDateTime": graph_datetime(self.end),
            "scheduleId": self.schedule_id, "requestId": self.request_id,
        }


@dataclass
class _Schedule:
    start: datetime
    end: datetime | None
    expiration: dict[str, Any]  # echoed back in scheduleInfo.expiration


@dataclass
class PimEngine:
    directory: Directory
    clock: Clock
    min_active_seconds: float = 300.0
    default_settings: RoleSettings = field(default_factory=RoleSettings)
    role_settings: dict[str, RoleSettings] = field(default_factory=dict)
    assignments: list[Assignment] = field(default_factory=list)
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    # ----- time ------------------------------------------------------------------------------------------
    def expire_due(self) -> None:
        now = self.clock.now()
        due = [a for a in self.assignments if a.expired(now)]
        if not due:
            return
        # Chronological by end, so history reads in the order the windows actually closed.
        for row in sorted(due, key=lambda a: a.end or now):
            self._log("expired", row, at=row.end, scheduled_end=row.end)
        self.assignments = [a for a in self.assignments if not a.expired(now)]

    def settings_for(self, role_definition_id: str) -> RoleSettings:
        return self.role_settings.get(role_definition_id.lower(), self.default_settings)

    # ----- views -----------------------------------------------------------------------------------------
    def active(self) -> list[Assignment]:
        self.expire_due()
        now = self.clock.now()
        return [a for a in self.assignments if a.started(now)]

    def find_active(self, assignment_id: str) -> Assignment | None:
        return next((a for a in self.active() if a.id == assignment_id), None)

    # ----- schedule requests -----------------------------------------------------------------------------
    def submit(self, body: dict[str, Any], app_id: str | None) -> dict[str, Any]:
        self.expire_due()
        action = REQUEST_ACTIONS.get(str(body.get("action", "")).lower())
        if action is None:
            raise PimError("BadRequest", f"The request action '{body.get('action')}' is not supported.")
        principal_id = _required(body, "principalId")
        role_id = _required(body, "roleDefinitionId")
        scope = body.get("directoryScopeId") or "/"
        if not self.directory.principal_exists(principal_id):
            raise PimError("SubjectNotFound", f"The subject '{principal_id}' was not found.")
        if self.directory.find_role(role_id) is None:
            raise PimError("RoleNotFound", f"The role '{role_id}' was not found.")
        validation_only = bool(body.get("isValidationOnly", False))
        if action == "adminAssign":
            return self._assign(body, principal_id, role_id, scope, app_id, validation_only)
        if action == "adminRemove":
            return self._remove(body, principal_id, role_id, scope, app_id, validation_only)
        return self._change(body, action, principal_id, role_id, scope, app_id, validation_only)

    def _assign(
        self, body: dict[str, Any], principal_id: str, role_id: str, scope: str,
        app_id: str | None, validation_only: bool,
    ) -> dict[str, Any]:
        now = self.clock.now()
        schedule = self._schedule(body.get("scheduleInfo"), now, role_id, default_start=now, clamp_to_now=True)
        self._check_policy(body, role_id, schedule)
        if any(a.same_target(principal_id, role_id, scope) for a in self.assignments):
            raise PimError("RoleAssignmentExists", "The Role assignment already exists.")
        request_id = str(uuid.uuid4())
        request = self._request_json(request_id, "adminAssign", body, principal_id, role_id, scope, app_id, now,
                                     status="Granted" if validation_only else "Provisioned",
                                     target=None if validation_only else request_id, schedule=schedule)
        if not validation_only:
            row = Assignment(
                id=self._free_id(role_id, principal_id), kind="pim", principal_id=principal_id,
                role_definition_id=role_id, directory_scope_id=scope, start=schedule.start, end=schedule.end,
                schedule_id=request_id, created_at=now, request_id=request_id,
            )
            self.assignments.append(row)
            self.requests[request_id] = request
            self._log("created", row, at=now, request_id=request_id, action="adminAssign")
        return request

    def _remove(
        self, body: dict[str, Any], principal_id: str, role_id: str, scope: str,
        app_id: str | None, validation_only: bool,
    ) -> dict[str, Any]:
        now = self.clock.now()
        candidates = [a for a in self.assignments if a.same_target(principal_id, role_id, scope)]
        if not candidates:
            raise PimError("RoleAssignmentDoesNotExist", "The Role assignment does not exist.")
        row = next((a for a in candidates if a.kind == "pim"), candidates[0])
        if row.start is not None and row.started(now):
            active_for = (now - row.start).total_seconds()
            if active_for < self.min_active_seconds:
                raise PimError(
                    "ActiveDurationTooShort",
                    "The Active duration is too short. Miniumum Required is "
                    f"{_minutes_text(self.min_active_seconds)}.",
                )
        request_id = str(uuid.uuid4())
        request = self._request_json(request_id, "adminRemove", body, principal_id, role_id, scope, app_id, now,
                                     status="Revoked", target=None, schedule=None)
        if not validation_only:
            self.assignments.remove(row)
            self.requests[request_id] = request
            self._log("removed", row, at=now, scheduled_end=row.end, request_id=request_id,
                      action="adminRemove")
        return request

    def _change(
        self, body: dict[str, Any], action: str, principal_id: str, role_id: str, scope: str,
        app_id: str | None, validation_only: bool,
    ) -> dict[str, Any]:
        """adminUpdate / adminExtend / adminRenew: move the end of the existing assignment."""
        now = self.clock.now()
        row = next((a for a in self.assignments if a.same_target(principal_id, role_id, scope)), None)
        if row is None:
            raise PimError("RoleAssignmentDoesNotExist", "The Role assignment does not exist.")
        schedule = self._schedule(
            body.get("scheduleInfo"), now, role_id, default_start=row.start or now, clamp_to_now=False
        )
        self._check_policy(body, role_id, schedule)
        request_id = str(uuid.uuid4())
        request = self._request_json(request_id, action, body, principal_id, role_id, scope, app_id, now,
                                     status="Provisioned", target=row.schedule_id, schedule=schedule)
        if not validation_only:
            previous_end = row.end
            row.start, row.end = schedule.start, schedule.end
            self.requests[request_id] = request
            self._log("updated", row, at=now, scheduled_end=previous_end, request_id=request_id, action=action)
        return request

    # ----- direct role assignments -----------------------------------------------------------------------
    def create_direct(self, body: dict[str, Any]) -> Assignment:
        self.expire_due()
        principal_id = _required(body, "principalId")
        role_id = _required(body, "roleDefinitionId")
        scope = body.get("directoryScopeId") or "/"
        if not self.directory.principal_exists(principal_id):
            raise PimError("SubjectNotFound", f"The subject '{principal_id}' was not found.")
        if self.directory.find_role(role_id) is None:
            raise PimError("RoleNotFound", f"The role '{role_id}' was not found.")
        if any(a.kind == "direct" and a.same_target(principal_id, role_id, scope) for a in self.assignments):
            raise PimError("RoleAssignmentExists", "The Role assignment already exists.")
        return self.add_assignment(principal_id, role_id, scope=scope, kind="direct", action="roleAssignments.create")

    def delete_direct(self, assignment_id: str) -> bool:
        row = self.find_active(assignment_id)
        if row is None:
            return False
        self.assignments.remove(row)
        self._log("removed", row, at=self.clock.now(), scheduled_end=row.end, action="roleAssignments.delete")
        return True

    def add_assignment(
        self,
        principal_id: str,
        role_definition_id: str,
        *,
        scope: str = "/",
        kind: str = "direct",
        start: datetime | None = None,
        end: datetime | None = None,
        action: str = "seed",
    ) -> Assignment:
        """Insert an assignment without policy checks (seeding permanent "needs review" assignments)."""
        now = self.clock.now()
        assignment_id = self._free_id(role_definition_id, principal_id)
        row = Assignment(
            id=assignment_id, kind=kind, principal_id=principal_id, role_definition_id=role_definition_id,
            directory_scope_id=scope, start=start, end=end,
            schedule_id=assignment_id if kind == "direct" else str(uuid.uuid4()), created_at=now,
        )
        self.assignments.append(row)
        self._log("created", row, at=now, action=action)
        return row

    # ----- helpers ---------------------------------------------------------------------------------------
    def _free_id(self, role_id: str, principal_id: str) -> str:
        # A PIM row and a direct row for the same pair may coexist; real ids would collide, so number them.
        taken = {a.id for a in self.assignments}
        ordinal = 1
        while instance_id(role_id, principal_id, ordinal) in taken:
            ordinal += 1
        return instance_id(role_id, principal_id, ordinal)

    def _schedule(
        self, info: dict[str, Any] | None, now: datetime, role_id: str, *, default_start: datetime,
        clamp_to_now: bool,
    ) -> _Schedule:
        info = info or {}
        raw_start = info.get("startDateTime")
        try:
            requested = parse_datetime(raw_start) if raw_start else default_start
        except ValueError as exc:
            raise PimError("InvalidScheduleInfo", f"Invalid startDateTime '{raw_start}'.") from exc
        # A new assignment is provisioned "now" when the requested start is already past (the PT30M fixture
        # answers with the provisioning time, not the requested 10:05:30); a change keeps the original start.
        start = max(requested, now) if clamp_to_now else requested
        expiration = info.get("expiration") or {"type": "notSpecified"}
        kind = EXPIRATION_TYPES.get(str(expiration.get("type", "notSpecified")).lower())
        if kind is None:
            raise PimError("InvalidScheduleInfo", f"Unknown expiration type '{expiration.get('type')}'.")
        end: datetime | None = None
        echoed: dict[str, Any] = {"type": kind, "endDateTime": None, "duration": None}
        try:
            if kind == "afterDuration":
                duration_text = _required(expiration, "duration")
                end = start + parse_duration(duration_text)
                echoed["duration"] = duration_text
            elif kind == "afterDateTime":
                end = parse_datetime(_required(expiration, "endDateTime"))
                echoed["endDateTime"] = graph_datetime(end)
            elif kind == "notSpecified":
                limit = self.settings_for(role_id).max_duration
                end = None if limit is None or self.settings_for(role_id).allow_permanent else start + limit
        except ValueError as exc:
            raise PimError("InvalidScheduleInfo", str(exc)) from exc
        if end is not None and end <= start:
            raise PimError("InvalidScheduleInfo", "The expiration must be after the start.")
        return _Schedule(start=start, end=end, expiration=echoed)

    def _check_policy(self, body: dict[str, Any], role_id: str, schedule: _Schedule) -> None:
        settings = self.settings_for(role_id)
        failed: list[str] = []
        if schedule.end is None and not settings.allow_permanent:
            failed.append("ExpirationRule")
        elif (
            schedule.end is not None and settings.max_duration is not None
            and schedule.end - schedule.start > settings.max_duration
        ):
            failed.append("ExpirationRule")
        if settings.require_justification and not (body.get("justification") or "").strip():
            failed.append("JustificationRule")
        ticket = body.get("ticketInfo") or {}
        if settings.require_ticket and not (ticket.get("ticketNumber") and ticket.get("ticketSystem")):
            failed.append("TicketingRule")
        if failed:
            rules = ",".join(f'"{r}"' for r in failed)
            raise PimError("RoleAssignmentRequestPolicyValidationFailed",
                           f"The following policy rules failed: [{rules}]")

    def _request_json(
        self, request_id: str, action: str, body: dict[str, Any], principal_id: str, role_id: str, scope: str,
        app_id: str | None, now: datetime, *, status: str, target: str | None, schedule: _Schedule | None,
    ) -> dict[str, Any]:
        ticket = body.get("ticketInfo") or {}
        return {
            "@odata.context": f"{CONTEXT}/roleAssignmentScheduleRequests/$entity",
            "id": request_id,
            "status": status,
            "createdDateTime": graph_datetime(now),
            "completedDateTime": graph_datetime(now),
            "approvalId": None,
            "customData": None,
            "action": action,
            "principalId": principal_id,
            "roleDefinitionId": role_id,
            "directoryScopeId": scope,
            "appScopeId": None,
            "isValidationOnly": bool(body.get("isValidationOnly", False)),
            "targetScheduleId": target,
            "justification": body.get("justification"),
            "createdBy": {
                "application": {"displayName": None, "id": app_id} if app_id else None,
                "device": None,
                "user": None,
            },
            "scheduleInfo": None if schedule is None else {
                "startDateTime": graph_datetime(schedule.start),
                "recurrence": None,
                "expiration": schedule.expiration,
            },
            "ticketInfo": {
                "ticketNumber": ticket.get("ticketNumber"),
                "ticketSystem": ticket.get("ticketSystem"),
            },
        }

    def _log(
        self, event: str, row: Assignment, *, at: datetime | None, scheduled_end: datetime | None = None,
        request_id: str | None = None, action: str | None = None,
    ) -> None:
        self.history.append({
            "event": event,
            "kind": row.kind,
            "action": action,
            "assignmentId": row.id,
            "principalId": row.principal_id,
            "roleDefinitionId": row.role_definition_id,
            "directoryScopeId": row.directory_scope_id,
            "at": graph_datetime(at),
            "startDateTime": graph_datetime(row.start),
            "endDateTime": graph_datetime(row.end),
            "scheduledEndDateTime": graph_datetime(scheduled_end),
            "requestId": request_id,
            "wall_time": time.time(),
        })

    def to_json(self) -> dict[str, Any]:
        self.expire_due()
        now = self.clock.now()
        return {
            "min_active_seconds": self.min_active_seconds,
            "default_role_settings": self.default_settings.to_json(),
            "role_settings": {k: v.to_json() for k, v in self.role_settings.items()},
            "assignments": [a.to_json() for a in self.assignments],
            "instances": [a.instance_json() for a in self.assignments if a.started(now)],
            "role_assignments": [a.role_assignment_json() for a in self.assignments if a.started(now)],
            "schedule_requests": list(self.requests.values()),
            "history": list(self.history),
        }


def _required(data: dict[str, Any], key: str) -> Any:
    value = data.get(key)
    if value in (None, ""):
        raise PimError("BadRequest", f"The property '{key}' is required.")
    return value


def _minutes_text(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:g} minutes"

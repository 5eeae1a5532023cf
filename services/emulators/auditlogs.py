"""Graph's audit logs, sign-in sessions and Identity Protection (PROTOCOL_NOTES §8.1, 8.2, 8.3, 8.5).

- ``POST /users/{id}/revokeSignInSessions``: 200 ``{"value": true}`` (the fixture); records
  ``signInSessionsValidFromDateTime`` = now per user; an unknown user is 404.
- ``GET /auditLogs/signIns``: newest first; ``$filter`` on ``userId``/``userPrincipalName`` (eq) and
  ``createdDateTime`` (ge/le/gt/lt, unquoted); ``$top`` (default and maximum 1,000); ``@odata.nextLink`` with an opaque
  ``$skiptoken`` until the last page. Needs Entra ID P1/P2: with ``licence = "free"`` it answers the fixture's 403
  ``Authentication_RequestFromNonPremiumTenantOrB2CTenant``.
- ``GET /auditLogs/directoryAudits``: the same paging; ``$filter`` on ``activityDateTime`` and
  ``initiatedBy/user/id`` (a free tenant may read them, §8.3).
- Log latency (§8.2: about 2 min at p95, 5 min at p99): a record becomes visible ``lag_s`` after its own time, or at
  its ``_visibleAt`` when a test seeds one (records that arrive late); invisible records are never listed.
- The reporting APIs allow 5 requests per 10 s per app: with ``reporting_rate_limit`` set, more answer 429 with a
  ``Retry-After``.
- ``GET /identityProtection/riskyUsers/{id}``: the user's row, or 404 for a user never flagged (§8.5: "404 means never
  risky"); needs P2 (assumed to answer the same licence 403 as sign-ins: the real error was not captured).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .isotime import parse_datetime
from .odata import Condition, apply_filter

MAX_PAGE = 1000
LICENCES = ("free", "p1", "p2")


class AuditLogError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class AuditLogs:
    sign_ins: list[dict[str, Any]] = field(default_factory=list)
    directory_audits: list[dict[str, Any]] = field(default_factory=list)
    risky_users: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions_valid_from: dict[str, str] = field(default_factory=dict)
    revocations: list[dict[str, str]] = field(default_factory=list)
    licence: str = "p2"
    lag_s: float = 0.0
    page_size: int = MAX_PAGE  # tests force paging with a small one

    # --- seeding and state -----------------------------------------------------------------------------------

    def apply(self, data: dict[str, Any]) -> None:
        """Takes (and removes) the keys this model owns from a state update."""
        if "sign_ins" in data:
            self.sign_ins = [dict(r) for r in data.pop("sign_ins")]
        if "directory_audits" in data:
            self.directory_audits = [dict(r) for r in data.pop("directory_audits")]
        if "risky_users" in data:
            self.risky_users = {str(r["id"]).lower(): dict(r) for r in data.pop("risky_users")}
        if "audit_licence" in data:
            licence = str(data.pop("audit_licence"))
            if licence not in LICENCES:
                raise ValueError(f"audit_licence must be one of {LICENCES}")
            self.licence = licence
        if "audit_lag_s" in data:
            self.lag_s = float(data.pop("audit_lag_s"))
        if "audit_page_size" in data:
            self.page_size = max(1, min(MAX_PAGE, int(data.pop("audit_page_size"))))

    def to_json(self) -> dict[str, Any]:
        return {"sign_ins": copy.deepcopy(self.sign_ins), "directory_audits": copy.deepcopy(self.directory_audits),
                "risky_users": list(copy.deepcopy(self.risky_users).values()),
                "sessions_valid_from": dict(self.sessions_valid_from), "revocations": list(self.revocations),
                "audit_licence": self.licence, "audit_lag_s": self.lag_s, "audit_page_size": self.page_size}

    # --- sessions --------------------------------------------------------------------------------------------

    def revoke_sessions(self, user_id: str, now: datetime) -> None:
        stamp = now.isoformat().replace("+00:00", "Z")
        self.sessions_valid_from[user_id.lower()] = stamp
        self.revocations.append({"userId": user_id.lower(), "at": stamp})

    # --- reading the logs ------------------------------------------------------------------------------------

    def _visible(self, record: dict[str, Any], time_key: str, now: datetime) -> bool:
        explicit = record.get("_visibleAt")
        if explicit:
            return parse_datetime(explicit) <= now
        at = record.get(time_key)
        return at is None or parse_datetime(at) + timedelta(seconds=self.lag_s) <= now

    def page(self, kind: str, conditions: list[Condition], top: int | None, skip: int,
             now: datetime) -> tuple[list[dict[str, Any]], int | None]:
        """One page of `kind` ("signIns" or "directoryAudits"), newest first; the offset of the next, or None."""
        if kind == "signIns" and self.licence == "free":
            raise AuditLogError(403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                                "Neither tenant is B2C or tenant doesn't have premium license")
        records, time_key = ((self.sign_ins, "createdDateTime") if kind == "signIns"
                             else (self.directory_audits, "activityDateTime"))
        visible = [r for r in records if self._visible(r, time_key, now)]
        matching = apply_filter(visible, conditions)
        matching.sort(key=lambda r: parse_datetime(r[time_key]), reverse=True)
        size = min(top or self.page_size, self.page_size)
        chunk = matching[skip:skip + size]
        # A full page always has a next link, as Graph's cursor paging does: the last page may come back empty.
        following = skip + size if len(chunk) == size else None
        return [{k: v for k, v in r.items() if not k.startswith("_")} for r in chunk], following

    def risky_user(self, user_id: str) -> dict[str, Any]:
        if self.licence != "p2":
            raise AuditLogError(403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                                "Neither tenant is B2C or tenant doesn't have premium license")
        row = self.risky_users.get(user_id.lower())
        if row is None:
            raise AuditLogError(404, "ResourceNotFound", f"Resource '{user_id}' does not exist.")
        return copy.deepcopy(row)

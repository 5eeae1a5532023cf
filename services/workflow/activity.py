"""What a user did while elevated, from Graph's directory audits and sign-in logs (PROTOCOL_NOTES §8.2, 8.3).

`collect_activity(identity_logs, user_id, since, until)` is the one reusable read: both logs for the window, every
page (the Graph client follows `@odata.nextLink` and rides out 429s within the HTTP retry policy). What it cannot
read is said in words instead of raised: a tenant without Entra ID P1/P2 (403, or 400, with
`Authentication_RequestFromNonPremiumTenantOrB2CTenant`), a missing permission (403), throttling or an outage past
the retries (worth another pass). The logs arrive minutes late, so an empty answer means "nothing visible yet",
never "nothing happened": callers collect again later and compare (`new_since`, `digest`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import rfc8785

from services.ports import (
    GraphError,
    GraphForbiddenError,
    GraphThrottledError,
    GraphUnavailableError,
    IdentityLogs,
    LicenceRequiredError,
)
from services.workflow.markdown import md_inline, md_time

Status = Literal["ok", "licence", "forbidden", "throttled", "unavailable", "error"]
RETRY_LATER: frozenset[str] = frozenset({"throttled", "unavailable"})
LICENCE_NOTE = ("{what} could not be read: the tenant has no Entra ID P1 or P2 licence (Graph answered {status} "
                "{code}). Granting more permissions would not help.")
FORBIDDEN_NOTE = ("{what} could not be read: the Graph app lacks the permission (Graph answered 403 {code}); grant "
                  "AuditLog.Read.All and Directory.Read.All with admin consent.")
MAX_ROWS = 1000  # per log and grant: enough for an hour of a person's admin work, bounded for Redis and the ticket


@dataclass(frozen=True)
class LogRead:
    status: Status
    rows: tuple[dict[str, Any], ...] = ()
    note: str = ""

    def ids(self) -> set[str]:
        return {str(r.get("id")) for r in self.rows}

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "note": self.note, "count": len(self.rows),
                "rows": sorted(self.rows, key=_row_time)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LogRead:
        return cls(data["status"], tuple(data.get("rows") or ()), data.get("note") or "")


@dataclass(frozen=True)
class Activity:
    user_id: str
    since: datetime
    until: datetime
    directory: LogRead
    sign_ins: LogRead
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def incomplete(self) -> bool:
        """A log that another pass may still read (throttled, unavailable)."""
        return self.directory.status in RETRY_LATER or self.sign_ins.status in RETRY_LATER

    def new_since(self, previous: Activity | None) -> int:
        """Records this read has that `previous` did not: late arrivals."""
        if previous is None:
            return len(self.directory.rows) + len(self.sign_ins.rows)
        return (len(self.directory.ids() - previous.directory.ids())
                + len(self.sign_ins.ids() - previous.sign_ins.ids()))

    def to_json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "since": self.since.isoformat(), "until": self.until.isoformat(),
                "directory_audits": self.directory.to_json(), "sign_ins": self.sign_ins.to_json(), **self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Activity:
        known = {"user_id", "since", "until", "directory_audits", "sign_ins"}
        return cls(data["user_id"], datetime.fromisoformat(data["since"]), datetime.fromisoformat(data["until"]),
                   LogRead.from_json(data["directory_audits"]), LogRead.from_json(data["sign_ins"]),
                   {k: v for k, v in data.items() if k not in known})

    def digest(self) -> str:
        """SHA-256 over the canonical JSON (RFC 8785) of what was read, rows in a fixed order."""
        core = {k: v for k, v in self.to_json().items() if k in {"user_id", "since", "until", "directory_audits",
                                                                   "sign_ins"}}
        for log in ("directory_audits", "sign_ins"):
            core[log] = {**core[log], "rows": sorted(core[log]["rows"], key=lambda r: str(r.get("id")))}
        return hashlib.sha256(rfc8785.dumps(core)).hexdigest()


def collect_activity(identity_logs: IdentityLogs, user_id: str, since: datetime, until: datetime) -> Activity:
    """Both logs for what `user_id` did between `since` and `until`."""
    directory = _read("Directory audit logs", lambda: identity_logs.directory_audits(
        initiated_by=user_id, since=since, until=until))
    sign_ins = _read("Sign-in logs", lambda: identity_logs.sign_ins(user_id=user_id, since=since, until=until))
    return Activity(user_id, since, until, directory, sign_ins)


def _read(what: str, call: Any) -> LogRead:
    try:
        rows = call()
    except LicenceRequiredError as exc:
        return LogRead("licence", note=LICENCE_NOTE.format(what=what, status=exc.status, code=exc.code))
    except GraphForbiddenError as exc:
        return LogRead("forbidden", note=FORBIDDEN_NOTE.format(what=what, code=exc.code))
    except GraphThrottledError:
        return LogRead("throttled", note=f"{what}: Graph kept answering 429 (too many requests); read again later.")
    except GraphUnavailableError as exc:
        return LogRead("unavailable", note=f"{what}: Graph was unavailable ({exc.code}); read again later.")
    except GraphError as exc:
        text = f"{exc.code} {exc.message}".lower()
        if exc.status == 400 and ("premium" in text or "licen" in text or "sku" in text):
            return LogRead("licence", note=LICENCE_NOTE.format(what=what, status=exc.status, code=exc.code))
        return LogRead("error", note=f"{what} could not be read: Graph answered {exc.status} {exc.code}.")
    return LogRead("ok", tuple(dict(r) for r in rows[:MAX_ROWS]),
                   f"only the first {MAX_ROWS} records are kept" if len(rows) > MAX_ROWS else "")


def _row_time(row: dict[str, Any]) -> str:
    return str(row.get("activityDateTime") or row.get("createdDateTime") or "")


# --- the table people read: time, activity, target, result ------------------------------------------------------

def directory_rows(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    out = []
    for r in sorted(rows, key=_row_time):
        targets = [str(t.get("displayName") or t.get("userPrincipalName") or t.get("id") or "")
                   for t in r.get("targetResources") or [] if isinstance(t, dict)]
        result = str(r.get("result") or "")
        if r.get("resultReason"):
            result += f": {r['resultReason']}"
        out.append((_row_time(r), str(r.get("activityDisplayName") or r.get("operationType") or ""),
                    ", ".join(t for t in targets if t) or "-", result or "-"))
    return out


def sign_in_rows(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    out = []
    for r in sorted(rows, key=_row_time):
        status = r.get("status") if isinstance(r.get("status"), dict) else {}
        code = status.get("errorCode") if status else None
        result = "success" if code in (0, None) else f"failure {code}: {status.get('failureReason') or ''}".strip()
        out.append((_row_time(r), f"Sign-in to {r.get('appDisplayName') or r.get('appId') or 'an app'}",
                    str(r.get("resourceDisplayName") or "-"), result))
    return out


def activity_markdown(activity: Activity) -> str:
    return "\n".join(activity_lines(activity.to_json())) + "\n"


def activity_lines(activity: dict[str, Any] | None) -> list[str]:
    """The "what was done while elevated" section: one table per log (time, activity, target, result), or the
    plain reason a log could not be read."""
    lines = ["## What was done while elevated", ""]
    if not activity:
        lines.append("Not collected yet: Entra's logs arrive minutes late; later packs on this ticket carry them.")
        return lines
    final = "final" if activity.get("final") else f"pass {activity.get('pass', 0)}, not final yet"
    lines += [f"Window {md_inline(activity['since'])} to {md_inline(activity['until'])} ({final}; "
              f"digest `{activity.get('digest', '')}`). Entra's logs arrive minutes late, so an empty table means "
              "nothing visible yet.", ""]
    for key, title, rows_of in (("directory_audits", "Directory actions initiated by the holder", directory_rows),
                                ("sign_ins", "Sign-ins of the holder", sign_in_rows)):
        log = activity.get(key) or {}
        lines += [f"### {title}", ""]
        if log.get("status") != "ok":
            lines += [md_inline(log.get("note") or "could not be read"), ""]
            continue
        rows = rows_of(list(log.get("rows") or []))
        if not rows:
            lines += ["None visible.", ""]
            continue
        lines += ["| time | activity | target | result |", "|---|---|---|---|"]
        lines += [f"| {md_time(t)} | {md_inline(a)} | {md_inline(g)} | {md_inline(r)} |" for t, a, g, r in rows]
        if log.get("note"):
            lines.append(md_inline(log["note"]))
        lines.append("")
    return lines

"""Access reviews: who used what, why, for how long, read from the audit log (`breakglass report`, the `report` chat
command and the scheduled review).

One pass over the log, oldest first (the log is the record: a request's submission names the person and the role,
later events of the same request add the decision, the approvals, the grant, its extensions and its end). Per
person (the one who received access) and role: activations, total and median duration, the share approved outside
business hours, denials, approvals by rule and by people (and who), extensions, grants revoked before their end and
sign-in sessions revoked. Role creep is flagged: more activations in any 30 days than the policy allows, durations
always at the maximum, and eligible people who never activated in the period.

The pass keeps a few fields per request and nothing per event, so 100,000 events (a year of a busy tenant) take a
few seconds (bench row "usage report").
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from policies.document import PolicyDocument
from policies.durations import format_duration
from services.ports import Directory, DirectoryError
from services.state.audit import AuditEvent, AuditLog
from services.state.store import RequestStore

# Ending a grant may also end the holder's sessions (revokeSignInSessions); counted under whichever name logs it.
SESSION_EVENTS = frozenset({"grant.sessions_revoked", "session.revoked", "sessions.revoked"})
WINDOW = timedelta(days=30)
FLAG_WORDS = {
    "frequent": "more activations in 30 days than the policy's {limit}",
    "always_max": "always asked for the maximum duration",
}


@dataclass
class _Request:
    person: str
    requester: str
    role: str
    duration_s: int
    lane: str | None = None
    outcome: str = ""
    after_hours: bool = False
    starts: datetime | None = None
    ends: datetime | None = None
    members: tuple[str, ...] = ()  # a bundle's entitlements: the report counts each role, as each was activated


@dataclass
class Line:
    person: str
    role: str
    person_name: str = ""
    role_name: str = ""
    activations: int = 0
    durations_s: list[float] = field(default_factory=list)
    activated_at: list[datetime] = field(default_factory=list)
    after_hours: int = 0
    denials: int = 0
    auto_approvals: int = 0
    human_approvals: int = 0
    extensions: int = 0
    approvers: Counter[str] = field(default_factory=Counter)
    revoked_early: int = 0
    sessions_revoked: int = 0
    at_max: int = 0
    requesters: set[str] = field(default_factory=set)
    flags: list[str] = field(default_factory=list)
    last_request: str = ""  # whose stored record names the person

    @property
    def total_s(self) -> float:
        return sum(self.durations_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.durations_s) if self.durations_s else 0.0

    @property
    def after_hours_share(self) -> float:
        return self.after_hours / self.activations if self.activations else 0.0

    def busiest_30_days(self) -> int:
        times = sorted(self.activated_at)
        best, start = 0, 0
        for end, at in enumerate(times):
            while at - times[start] >= WINDOW:
                start += 1
            best = max(best, end - start + 1)
        return best

    def row(self, names: dict[str, str]) -> dict[str, Any]:
        return {"person": self.person, "person_name": names.get(self.person, self.person_name),
                "role": self.role, "role_name": self.role_name, "activations": self.activations,
                "total_minutes": round(self.total_s / 60, 1), "median_minutes": round(self.median_s / 60, 1),
                "after_hours_share": round(self.after_hours_share, 3), "denials": self.denials,
                "auto_approvals": self.auto_approvals, "human_approvals": self.human_approvals,
                "extensions": self.extensions,
                "approved_by": "; ".join(f"{names.get(a, a)} ({n})" for a, n in self.approvers.most_common()),
                "revoked_early": self.revoked_early, "sessions_revoked": self.sessions_revoked,
                "flags": "; ".join(self.flags)}


@dataclass
class UsageReport:
    since: datetime
    until: datetime
    events_read: int
    lines: list[Line]
    unused: list[dict[str, str]]  # eligible people who never activated a role in the period
    names: dict[str, str] = field(default_factory=dict)

    def only(self, object_id: str) -> UsageReport:
        """The report a requester sees: their own lines, nobody else's."""
        oid = object_id.lower()
        return UsageReport(self.since, self.until, self.events_read, [ln for ln in self.lines if ln.person == oid],
                           [u for u in self.unused if u["person"] == oid], self.names)

    def rows(self) -> list[dict[str, Any]]:
        return [ln.row(self.names) for ln in self.lines]

    def flagged(self) -> list[Line]:
        return [ln for ln in self.lines if ln.flags]

    # --- formats ---------------------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps({"since": self.since.isoformat(), "until": self.until.isoformat(),
                           "events_read": self.events_read, "lines": self.rows(), "never_activated": self.unused},
                          indent=2, ensure_ascii=False)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(Line("", "").row({})), lineterminator="\n")
        writer.writeheader()
        for row in self.rows():
            writer.writerow({k: _csv_safe(v) for k, v in row.items()})
        return out.getvalue()

    def to_markdown(self) -> str:
        lines = [f"# breakglass usage {self.since:%Y-%m-%d} – {self.until:%Y-%m-%d}", "",
                 f"{len(self.lines)} person/role line(s) from {self.events_read:,} audit events.", ""]
        if self.lines:
            lines += ["| Person | Role | Activations | Total | Median | After hours | Denials | By rule / by people "
                      "| Extensions | Approved by | Revoked early | Sessions revoked | Flags |",
                      "|---|---|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---|"]
            for row in self.rows():
                lines.append("| " + " | ".join(_md([
                    row["person_name"], row["role_name"] or row["role"], row["activations"],
                    format_duration(timedelta(minutes=row["total_minutes"])),
                    format_duration(timedelta(minutes=row["median_minutes"])),
                    f"{row['after_hours_share']:.0%}", row["denials"],
                    f"{row['auto_approvals']} / {row['human_approvals']}", row["extensions"], row["approved_by"],
                    row["revoked_early"], row["sessions_revoked"], row["flags"]])) + " |")
        else:
            lines.append("No activations or denials in the period.")
        if self.unused:
            lines += ["", "## Eligible, never activated (candidates to remove)", ""]
            lines += [f"- {_md([u['person_name'] or u['person']])[0]}: {_md([u['role_name']])[0]}" for u in self.unused]
        return "\n".join(lines) + "\n"


def _csv_safe(value: Any) -> Any:
    # A spreadsheet runs a cell that starts with = + - @ as a formula: names come from the directory.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _md(values: list[Any]) -> list[str]:
    out = []
    for value in values:
        text = " ".join(str(value).split())
        for ch in "\\`*_{}[]<>()#|!":
            text = text.replace(ch, "\\" + ch)
        out.append(text)
    return out


def _at(ev: AuditEvent) -> datetime:
    return datetime.fromisoformat(ev.at)


def build_report(events: Iterable[AuditEvent], policy: PolicyDocument, *, since: datetime, until: datetime,
                 eligible: Callable[[str], list[tuple[str, str]]] | None = None) -> UsageReport:
    """The report over `events` (the whole log, oldest first: submissions before the window matter for grants in
    it). `eligible(group_object_id)` lists (object id, name) of a group's members (Graph), for the "never
    activated" candidates; None skips them."""
    requests: dict[str, _Request] = {}
    lines: dict[tuple[str, str], Line] = {}
    read = 0

    def line_of(req: _Request, role: str | None = None) -> Line:
        role = role or req.role
        key = (req.person, role)
        found = lines.get(key)
        if found is None:
            ent = policy.entitlement(role)
            found = lines[key] = Line(req.person, role, role_name=ent.display_name if ent else role)
        return found

    def lines_of(req: _Request) -> list[Line]:
        return [line_of(req, role) for role in req.members or (req.role,)]

    for ev in events:
        read += 1
        name = ev.event
        rid = ev.request_id
        if name == "request.submitted" and rid:
            d = ev.data
            requests[rid] = _Request(person=str(d.get("target") or d.get("requester") or "").lower(),
                                     requester=str(d.get("requester") or "").lower(),
                                     role=str(d.get("entitlement") or ""), duration_s=int(d.get("duration") or 0))
            bundle = policy.bundle(requests[rid].role)
            if bundle is not None:
                requests[rid].members = tuple(bundle.entitlements)
            continue
        req = requests.get(rid) if rid else None
        if req is None:
            continue
        if name == "request.decided":
            req.outcome = str(ev.data.get("outcome") or "")
            req.lane = ev.data.get("lane")
            req.after_hours = "unusual_timing" in (ev.data.get("flags") or [])
            if req.outcome == "deny" and since <= _at(ev) < until:
                for line in lines_of(req):
                    line.denials += 1
            continue
        at = _at(ev)
        if not since <= at < until:
            if name == "grant.activated":  # a grant that began before the window still ends inside it
                req.starts = datetime.fromisoformat(ev.data["starts_at"]) if ev.data.get("starts_at") else at
            continue
        if name == "request.approved":
            for line in lines_of(req):
                line.approvers[ev.actor] += 1
        elif name == "request.denied":
            for line in lines_of(req):
                line.denials += 1
        elif name == "grant.activated":
            line = line_of(req, str(ev.data.get("member") or "") or None)  # a bundle logs each member
            req.starts = datetime.fromisoformat(ev.data["starts_at"]) if ev.data.get("starts_at") else at
            req.ends = datetime.fromisoformat(ev.data["ends_at"]) if ev.data.get("ends_at") else None
            line.activations += 1
            line.activated_at.append(at)
            line.requesters.add(req.requester)
            line.last_request = rid or ""
            line.after_hours += int(req.after_hours)
            if req.outcome == "auto_approve":
                line.auto_approvals += 1
            else:
                line.human_approvals += 1
            if req.ends is not None:
                line.durations_s.append((req.ends - req.starts).total_seconds())
            if _at_max(policy, req):
                line.at_max += 1
        elif name == "grant.extended":
            for line in lines_of(req):
                line.extensions += 1
                if ev.data.get("ends_at") and req.starts is not None and line.durations_s:
                    req.ends = datetime.fromisoformat(ev.data["ends_at"])
                    line.durations_s[-1] = (req.ends - req.starts).total_seconds()
        elif name in ("grant.expired", "grant.revoked"):
            if req.starts is not None and name == "grant.revoked":
                for line in lines_of(req):
                    line.revoked_early += 1
                    if line.durations_s:  # it lasted until now, not until its planned end
                        line.durations_s[-1] = min(line.durations_s[-1], (at - req.starts).total_seconds())
        elif name in SESSION_EVENTS:
            line_of(req, req.members[0] if req.members else None).sessions_revoked += 1
    limit = policy.reviews.max_activations_per_30d
    for line in lines.values():
        if line.busiest_30_days() > limit:
            line.flags.append(FLAG_WORDS["frequent"].format(limit=limit))
        if line.activations >= 2 and line.at_max == line.activations:
            line.flags.append(FLAG_WORDS["always_max"])
    ordered = sorted(lines.values(), key=lambda ln: (-ln.activations, ln.person, ln.role))
    unused = _never_activated(policy, lines, eligible) if eligible is not None else []
    return UsageReport(since=since, until=until, events_read=read, lines=ordered, unused=unused,
                       names=_policy_names(policy))


def _at_max(policy: PolicyDocument, req: _Request) -> bool:
    ent = policy.entitlement(req.role)
    if ent is None:
        return False
    lane = next((la for la in ent.lanes if la.id == req.lane), None)
    longest = (lane.max_duration if lane else ent.max_duration).total_seconds()
    return req.duration_s >= longest


def _never_activated(policy: PolicyDocument, lines: dict[tuple[str, str], Line],
                     eligible: Callable[[str], list[tuple[str, str]]]) -> list[dict[str, str]]:
    used = {key for key, line in lines.items() if line.activations}
    members: dict[str, list[tuple[str, str]]] = {}
    out = []
    for ent in policy.entitlements:
        keys = list(dict.fromkeys([*ent.eligible, *(k for lane in ent.lanes for k in lane.eligible)]))
        seen: set[str] = set()
        for key in keys:
            group = policy.groups.get(key)
            if group is None:
                continue
            if group.object_id not in members:
                members[group.object_id] = eligible(group.object_id)
            for oid, name in members[group.object_id]:
                if oid in seen or (oid, ent.id) in used or policy.emergency_accounts.matches(oid, ""):
                    continue
                seen.add(oid)
                out.append({"person": oid, "person_name": name, "role": ent.id, "role_name": ent.display_name,
                            "via": group.display_name})
    return out


def _policy_names(policy: PolicyDocument) -> dict[str, str]:
    names: dict[str, str] = {}
    people = [p for g in policy.approver_groups.values() for p in (*g.members, *g.backup)]
    people += [p for r in policy.rotations.values() for p in r.members]
    people += list(policy.emergency_accounts.notify)
    for p in people:
        if p.name:
            names.setdefault(p.object_id, p.name)
    return names


def usage_report(audit: AuditLog, store: RequestStore, policy: PolicyDocument, *, since: datetime, until: datetime,
                 directory: Directory | None = None) -> tuple[UsageReport, list[str]]:
    """The report over the whole stored log, with people's names from their request records; the eligible groups'
    members come from the directory when given. Returns the report and warnings (what could not be read)."""
    warnings: list[str] = []
    eligible = None
    if directory is not None:
        def eligible(group_id: str) -> list[tuple[str, str]]:
            try:
                return directory.group_members(group_id)
            except DirectoryError as exc:
                warnings.append(f"members of group {group_id} could not be read ({exc}); "
                                "never-activated candidates are incomplete")
                return []
    report = build_report(audit.events(), policy, since=since, until=until, eligible=eligible)
    samples = [ln.last_request for ln in report.lines if ln.last_request]
    for record in store.get_many(samples):
        if record.target_name:
            report.names.setdefault(record.request.target, record.target_name)
        if record.requester_name:
            report.names.setdefault(record.request.requester, record.requester_name)
    for unused in report.unused:
        report.names.setdefault(unused["person"], unused["person_name"])
    return report, warnings

"""The policy file: its schema (pydantic), cross-reference checks and error reporting with file/path/line.

Parsing takes text, not a path, so the core stays free of I/O; `services.policy_source` reads files.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from policies.assignable import Assignable
from policies.closing import OnEnd, RunbookAttachments, RunbookStep, WarnBefore, closing_risks, runbook_references
from policies.durations import DurationError, parse_duration
from policies.model import Person
from policies.text import one_line
from policies.tier0 import tier0_name

SCHEMA_VERSION = 1
MAX_GRANT = timedelta(hours=24)
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
KEY = r"^[a-z0-9][a-z0-9_.-]*$"


def _duration(value: object) -> timedelta:
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise ValueError(str(exc)) from exc


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def _not_bool(value: object) -> object:
    # YAML reads `true` as a bool, and True == 1 would pass `Literal[1]`.
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    return value


def _grant_duration(value: object) -> timedelta:
    d = _duration(value)
    if d <= timedelta(0):
        raise ValueError("must be positive")
    if d > MAX_GRANT:
        raise ValueError("must be ≤ 24h")
    return d


GrantDuration = Annotated[timedelta, BeforeValidator(_grant_duration)]


def _zone(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be an IANA timezone name such as Europe/Berlin")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {value!r} (use an IANA name such as Europe/Berlin)") from exc
    return value


TimeZoneName = Annotated[str, BeforeValidator(_zone)]


def _guid(value: object) -> str:
    if not isinstance(value, str) or not GUID.match(value):
        raise ValueError(f"must be an Entra object id (GUID), got {value!r}")
    return value.lower()


Guid = Annotated[str, BeforeValidator(_guid)]


def _display_name(value: object) -> str:
    # Display names end up on cards, tickets and the evidence pack: clean them once here, like people's text
    # (each sink still encodes them).
    if not isinstance(value, str):
        raise ValueError("must be text")
    cleaned = one_line(value, 200)
    if not cleaned:
        raise ValueError("must not be empty")
    return cleaned


class Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"

    @property
    def index(self) -> int:
        return list(Weekday).index(self)


class GroupRef(Doc):
    display_name: str
    object_id: Guid


class PersonEntry(Doc):
    object_id: Guid
    name: str = ""
    upn: str = ""

    def person(self) -> Person:
        return Person(object_id=self.object_id, name=self.name, upn=self.upn)


class RotationOverride(Doc):
    start: datetime  # local time in the rotation's timezone unless an offset is given
    end: datetime
    object_id: Guid


class Rotation(Doc):
    """An on-call schedule: members take turns, one shift each, starting at `starts` (local time)."""

    display_name: str
    timezone: TimeZoneName
    starts: datetime
    shift: Duration = timedelta(days=7)
    members: list[PersonEntry] = Field(min_length=1)
    overrides: list[RotationOverride] = []

    @field_validator("shift")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v < timedelta(hours=1):
            raise ValueError("must be at least 1h")
        return v

    def _local(self, when: datetime) -> datetime:
        """A naive wall-clock time in the rotation's zone, so handoffs stay at the same hour across DST."""
        zone = ZoneInfo(self.timezone)
        if when.tzinfo is None:
            return when
        return when.astimezone(zone).replace(tzinfo=None)

    def on_call(self, now: datetime) -> PersonEntry:
        local_now = self._local(now)
        for override in self.overrides:
            if self._local(override.start) <= local_now < self._local(override.end):
                for m in self.members:
                    if m.object_id == override.object_id:
                        return m
                return PersonEntry(object_id=override.object_id)
        index = int((local_now - self._local(self.starts)) // self.shift) % len(self.members)
        return self.members[index]


class ApproverGroup(Doc):
    """People who may approve. `page` names a rotation: its current member gets the card first. `backup` people
    get the card when the request escalates; by default they may decide it only from then on, so a backup cannot
    pre-empt the on-call approver (`backup_may_approve: always` lets them decide at once)."""

    display_name: str
    members: list[PersonEntry] = Field(min_length=1)
    page: str | None = None
    backup: list[PersonEntry] = []
    backup_may_approve: Literal["after_escalation", "always"] = "after_escalation"


class AutoApprove(Doc):
    """Conditions under which a lane approves by rule; all given conditions must hold."""

    max_priority: StrictInt | None = Field(default=None, ge=1, le=5)
    on_call: str | None = None  # rotation key: the person receiving access must be on shift now


class Lane(Doc):
    id: Annotated[str, Field(pattern=KEY)]
    display_name: str
    eligible: list[str] = Field(min_length=1)
    max_duration: GrantDuration
    requires_incident: StrictBool = False
    auto_approve_when: AutoApprove | None = None
    approvers: list[str] | None = None
    quorum: StrictInt | None = Field(default=None, ge=1, le=10)
    # Each replaces its entitlement's when given (policies.closing).
    on_end: list[OnEnd] | None = None
    runbooks: RunbookAttachments | None = None
    warn_before: WarnBefore | None = None


class Entitlement(Doc):
    """A directory role (`kind: role`, the default: `role_template_id` and `scope`) or a group's membership or
    ownership (`kind: group`: `group_id` and `access`), granted time-bound under the same rules."""

    id: Annotated[str, Field(pattern=KEY)]
    display_name: Annotated[str, BeforeValidator(_display_name)]
    kind: Literal["role", "group"] = "role"
    role_template_id: Guid | None = None
    scope: str = "/"
    group_id: Guid | None = None
    access: Literal["member", "owner"] = "member"
    privilege: StrictInt = Field(default=50, ge=0, le=100)
    max_duration: GrantDuration
    approval: Literal["required", "none"] = "required"
    approvers: list[str] = []
    quorum: StrictInt = Field(default=1, ge=1, le=10)
    eligible: list[str] = Field(min_length=1)
    request_for_others: list[str] = []
    # Whoever asks for someone else, the person receiving the role must be eligible for the path taken.
    target_must_be_eligible: StrictBool = True
    lanes: list[Lane] = []
    # What happens around the end of a grant (policies.closing): unset on_end revokes sessions for tier-0 roles.
    on_end: list[OnEnd] | None = None
    runbooks: RunbookAttachments | None = None
    warn_before: WarnBefore | None = None

    @model_validator(mode="after")
    def _target(self) -> Entitlement:
        if self.kind == "role":
            if self.role_template_id is None:
                raise ValueError("a role entitlement needs role_template_id")
            if self.group_id is not None:
                raise ValueError("group_id is for kind: group; this entitlement is a role")
        else:
            if self.group_id is None:
                raise ValueError("a group entitlement needs group_id (the group's object id)")
            if self.role_template_id is not None:
                raise ValueError("role_template_id is for kind: role; this entitlement is a group")
            if self.scope != "/":
                raise ValueError("scope is for directory roles; a group entitlement names access: member|owner")
        return self

    def assignable(self) -> Assignable:
        """What a grant of this entitlement puts in the directory."""
        if self.kind == "group":
            assert self.group_id is not None
            return Assignable.group(self.group_id, self.access, self.display_name)
        assert self.role_template_id is not None
        return Assignable.role(self.role_template_id, self.scope, self.display_name)


MAX_BUNDLE_MEMBERS = 10


def _bundle_shorthand(value: object) -> object:
    # `incident-responder: [security-admin, exchange-admin]` is the short form of a bundle.
    if isinstance(value, list):
        return {"entitlements": value}
    return value


class Bundle(Doc):
    """A named set of entitlements asked for, approved and granted together (all or nothing)."""

    display_name: str = ""
    entitlements: list[Annotated[str, Field(pattern=KEY)]] = Field(default=[], max_length=MAX_BUNDLE_MEMBERS)


BundleEntry = Annotated[Bundle, BeforeValidator(_bundle_shorthand)]


class JustificationRules(Doc):
    min_length: StrictInt = Field(default=20, ge=0, le=500)
    max_length: StrictInt = Field(default=2000, ge=50, le=10000)
    vague_phrases: list[str] = []
    # Words that say nothing about the task; a justification made only of these is vague.
    generic_words: list[str] = []
    similarity: StrictFloat = Field(default=0.85, gt=0.5, le=1.0)


class TicketRules(Doc):
    required: StrictBool = True
    patterns: dict[Literal["incident", "change", "request", "service_request"], str] = {
        "incident": r"INC\d{7}",
        "change": r"CHG\d{7}",
        "request": r"RITM\d{7}",
        "service_request": r"SR-?\d{3,10}",
    }
    verify: Literal["required", "when_available", "off"] = "required"
    must_be_open: StrictBool = True
    requester_must_be_involved: StrictBool = True

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, v: dict[str, str]) -> dict[str, str]:
        for kind, pattern in v.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{kind}: invalid regular expression: {exc}") from exc
        return v


class Denylist(Doc):
    object_ids: list[Guid] = []
    upn_patterns: list[str] = []

    def matches(self, object_id: str, upn: str) -> str | None:
        if object_id.lower() in self.object_ids:
            return f"object id {object_id}"
        for pattern in self.upn_patterns:
            if upn and fnmatch.fnmatchcase(upn.lower(), pattern.lower()):
                return f"UPN {upn} matches {pattern}"
        return None


class Weekly(Doc):
    days: list[Weekday] = Field(min_length=1)
    start: time
    end: time  # may be earlier than start: the window then runs past midnight


class Freeze(Doc):
    name: str
    action: Literal["deny", "require_approval"]
    timezone: TimeZoneName
    start: datetime | None = None
    end: datetime | None = None
    weekly: Weekly | None = None
    entitlements: list[str] = []  # empty: every entitlement
    exempt_lanes: list[str] = []

    def active(self, now: datetime) -> bool:
        zone = ZoneInfo(self.timezone)
        local = now.astimezone(zone)
        if self.start is not None and self.end is not None:
            start = self.start if self.start.tzinfo else self.start.replace(tzinfo=zone)
            end = self.end if self.end.tzinfo else self.end.replace(tzinfo=zone)
            return start <= now < end
        if self.weekly is not None:
            return _in_weekly(local, self.weekly.days, self.weekly.start, self.weekly.end)
        return False


def _in_weekly(local: datetime, days: list[Weekday], start: time, end: time) -> bool:
    t = local.time().replace(tzinfo=None)
    day = local.weekday()
    indexes = {d.index for d in days}
    if start == end:
        return day in indexes
    if start < end:
        return day in indexes and start <= t < end
    # Wraps midnight: the part after midnight belongs to the previous day's window.
    return (day in indexes and t >= start) or (((day - 1) % 7) in indexes and t < end)


class BusinessHours(Doc):
    timezone: TimeZoneName
    days: list[Weekday] = [Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI]
    start: time = time(8, 0)
    end: time = time(18, 0)

    def contains(self, now: datetime) -> bool:
        return _in_weekly(now.astimezone(ZoneInfo(self.timezone)), self.days, self.start, self.end)


class BusinessHoursPolicy(Doc):
    default: BusinessHours
    by_group: dict[str, BusinessHours] = {}


class Concurrency(Doc):
    max_active_per_principal: StrictInt = Field(default=2, ge=1, le=20)
    same_role: Literal["deny", "allow"] = "deny"


class TaskHint(Doc):
    task: str
    keywords: list[str] = Field(min_length=1)
    entitlement: str


class WebhookRules(Doc):
    """Whom a ticketing system's webhook may ask access for. `caller`: only the ticket's caller.
    `assignment_group`: also its assignee and the members of its assignment group (an explicit widening: anyone
    who can edit the ticket's group can then ask in a colleague's name)."""

    requested_for: Literal["caller", "assignment_group"] = "caller"


def _account(value: object) -> str:
    if isinstance(value, str) and GUID.match(value.strip()):
        return value.strip().lower()
    if isinstance(value, str) and re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value.strip()):
        return value.strip().lower()
    raise ValueError(f"must be an Entra object id (GUID) or a UPN (name@domain), got {value!r}")


AccountRef = Annotated[str, BeforeValidator(_account)]


class EmergencyAccounts(Doc):
    """Emergency access ("break-glass") accounts: never elevated by breakglass, and every sign-in of theirs opens a
    P1 incident, alerts security and starts a post-use checklist that only `reviewers` may tick."""

    accounts: list[AccountRef] = []
    alert_on_failed_sign_ins: StrictBool = True
    reviewers: str | None = None  # a `groups` key: who may tick the post-use checklist
    notify: list[PersonEntry] = []  # told personally on every sign-in (security on-call, CISO)
    burst_window: Duration = timedelta(minutes=30)  # sign-ins this close to an incident's first one join it

    def matches(self, object_id: str, upn: str) -> str | None:
        wanted = {v.lower() for v in (object_id, upn) if v}
        for account in self.accounts:
            if account in wanted:
                return account
        return None


class Reviews(Doc):
    """Periodic access reviews: the usage summary posted to a channel every `every`, and the role-creep
    thresholds the report flags."""

    every: Duration | None = None
    channel: Literal["approvals", "alerts"] = "approvals"
    max_activations_per_30d: StrictInt = Field(default=10, ge=1, le=1000)


class RiskRules(Doc):
    """Identity risk (Entra ID Protection) of the requester and the target as decision facts."""

    max_level: Literal["none", "low", "medium", "high"] = "low"
    on_exceeded: Literal["deny", "require_approval"] = "deny"
    # Risk that could not be read (no Entra ID P2, permission missing, Graph down).
    unknown: Literal["allow", "require_approval", "deny"] = "require_approval"
    applies_to: list[Literal["requester", "target"]] = ["requester", "target"]


class ApprovalTiming(Doc):
    escalate_after: Duration = timedelta(minutes=15)
    expire_after: Duration = timedelta(hours=1)


class PolicyDocument(Doc):
    schema_version: Annotated[Literal[1], BeforeValidator(_not_bool)]
    name: str = "breakglass policy"
    groups: dict[Annotated[str, Field(pattern=KEY)], GroupRef] = {}
    rotations: dict[Annotated[str, Field(pattern=KEY)], Rotation] = {}
    approver_groups: dict[Annotated[str, Field(pattern=KEY)], ApproverGroup] = {}
    entitlements: list[Entitlement] = Field(min_length=1)
    bundles: dict[Annotated[str, Field(pattern=KEY)], BundleEntry] = {}
    justification: JustificationRules = JustificationRules()
    tickets: TicketRules = TicketRules()
    denylist: Denylist = Denylist()
    freezes: list[Freeze] = []
    business_hours: BusinessHoursPolicy
    concurrency: Concurrency = Concurrency()
    least_privilege: list[TaskHint] = []
    approval: ApprovalTiming = ApprovalTiming()
    webhooks: WebhookRules = WebhookRules()
    runbooks: dict[Annotated[str, Field(pattern=KEY)], RunbookStep] = {}
    # Who approves when a rule (unusual timing, a freeze) sends a no-approval entitlement to a human.
    fallback_approvers: list[str] = []
    emergency_accounts: EmergencyAccounts = EmergencyAccounts()
    reviews: Reviews = Reviews()
    risk: RiskRules | None = None

    def entitlement(self, entitlement_id: str) -> Entitlement | None:
        for e in self.entitlements:
            if e.id == entitlement_id:
                return e
        return None

    def bundle(self, bundle_id: str) -> Bundle | None:
        return self.bundles.get(bundle_id)

    def bundle_name(self, bundle_id: str) -> str:
        bundle = self.bundles.get(bundle_id)
        if bundle is None:
            return bundle_id
        return bundle.display_name or bundle_id

    def entitlement_for_role(self, role_template_id: str | None) -> Entitlement | None:
        if not role_template_id:
            return None
        for e in self.entitlements:
            if e.role_template_id == role_template_id.lower():
                return e
        return None

    def group_ids(self, keys: list[str]) -> set[str]:
        return {self.groups[k].object_id for k in keys if k in self.groups}

    def digest(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Problem(BaseModel):
    path: str
    message: str
    line: int | None = None
    loc: tuple[Any, ...] = Field(default=(), exclude=True)

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyError(ValueError):
    """The policy file is invalid; carries every problem found, each with its field path."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.render(source) for p in problems))


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Walk the YAML node tree along a validation path to report the line an identity admin should edit."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, value in node.value:
                if getattr(key, "value", None) == str(part):
                    nxt = value
                    line = key.start_mark.line + 1
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
        if node is None:
            break
    return line


def _clean(msg: str) -> str:
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _ambiguous_keys(node: yaml.Node | None, loc: tuple[Any, ...] = (),
                    seen_nodes: set[int] | None = None) -> list[Problem]:
    """Keys YAML would resolve silently: a repeated key (the last one wins, so a second `approval: none` under
    `approval: required` turns approval off) and merge keys (`<<`, whose values explicit keys override)."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if node is None or id(node) in seen_nodes:
        return []
    seen_nodes.add(id(node))
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = str(getattr(key, "value", ""))
            line = key.start_mark.line + 1
            if key.tag == "tag:yaml.org,2002:merge":
                problems.append(Problem(path=_path((*loc, name)), line=line,
                                        message="merge keys (<<) are not allowed: keys next to them override "
                                                "them silently; write the values out"))
            elif name in first:
                problems.append(Problem(path=_path((*loc, name)), line=line,
                                        message=f"duplicate key {name!r} (first at line {first[name]}); "
                                                f"YAML would silently keep the last one"))
            else:
                first[name] = line
            problems += _ambiguous_keys(value, (*loc, name), seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _ambiguous_keys(item, (*loc, i), seen_nodes)
    return problems


def parse_policy(text: str, source: str = "<policy>") -> PolicyDocument:
    try:
        root = yaml.compose(text)
        ambiguous = _ambiguous_keys(root)
        if ambiguous:
            raise PolicyError(source, ambiguous)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise PolicyError(source, [Problem(path="", message=f"not valid YAML: {exc}", line=line)]) from exc
    if not isinstance(data, dict):
        raise PolicyError(source, [Problem(path="", message="the policy must be a YAML mapping")])
    try:
        doc = PolicyDocument.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            # pydantic reports keys of dicts with a "[key]" suffix; keep the readable path.
            problems.append(Problem(path=_path(loc), message=_clean(err["msg"]), line=_line_of(root, loc)))
        raise PolicyError(source, problems) from None
    problems = check_references(doc)
    if problems:
        for p in problems:
            p.line = _line_of(root, p.loc)
        raise PolicyError(source, problems)
    return doc


def _problem(loc: tuple[Any, ...], message: str) -> Problem:
    return Problem(path=_path(loc), message=message, loc=loc)


def check_references(doc: PolicyDocument) -> list[Problem]:
    """Checks pydantic cannot express: every key refers to something defined, ids are unique."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    roles: dict[tuple[str, str], int] = {}
    for i, ent in enumerate(doc.entitlements):
        if ent.id in seen:
            problems.append(_problem(("entitlements", i, "id"), f"duplicate id {ent.id!r}"))
        seen[ent.id] = i
        # One entitlement per role and per group access: the ledger and the foreign-assignment scan key on it.
        target = ent.assignable().ledger_key("")[1:]
        if target in roles:
            field = "group_id" if ent.kind == "group" else "role_template_id"
            what = f"group {ent.access}ship" if ent.kind == "group" else "role"
            problems.append(_problem(("entitlements", i, field),
                                     f"{what} already used by entitlements[{roles[target]}]"))
        roles[target] = i
        for j, g in enumerate(ent.eligible):
            if g not in doc.groups:
                problems.append(_problem(("entitlements", i, "eligible", j), f"unknown group {g!r}"))
        for j, g in enumerate(ent.request_for_others):
            if g not in doc.groups:
                problems.append(_problem(("entitlements", i, "request_for_others", j), f"unknown group {g!r}"))
        if ent.approval == "required" and not ent.approvers:
            problems.append(_problem(("entitlements", i, "approvers"), "approval is required but no approvers"))
        if not ent.approvers and not doc.fallback_approvers:
            problems.append(_problem(("entitlements", i, "approvers"),
                                     "no approvers and no fallback_approvers: a request flagged for unusual timing "
                                     "or a freeze would have nobody to approve it"))
        for j, a in enumerate(ent.approvers):
            if a not in doc.approver_groups:
                problems.append(_problem(("entitlements", i, "approvers", j), f"unknown approver group {a!r}"))
        lane_ids: set[str] = set()
        for k, lane in enumerate(ent.lanes):
            base = ("entitlements", i, "lanes", k)
            if lane.id in lane_ids:
                problems.append(_problem((*base, "id"), f"duplicate lane id {lane.id!r}"))
            lane_ids.add(lane.id)
            if lane.max_duration > ent.max_duration:
                problems.append(_problem((*base, "max_duration"),
                                         f"must be ≤ the entitlement's max_duration ({ent.max_duration})"))
            for j, g in enumerate(lane.eligible):
                if g not in doc.groups:
                    problems.append(_problem((*base, "eligible", j), f"unknown group {g!r}"))
            for j, a in enumerate(lane.approvers or []):
                if a not in doc.approver_groups:
                    problems.append(_problem((*base, "approvers", j), f"unknown approver group {a!r}"))
            if lane.auto_approve_when and lane.auto_approve_when.on_call:
                if lane.auto_approve_when.on_call not in doc.rotations:
                    problems.append(_problem((*base, "auto_approve_when", "on_call"),
                                             f"unknown rotation {lane.auto_approve_when.on_call!r}"))
            if not (lane.approvers or ent.approvers or doc.fallback_approvers):
                problems.append(_problem((*base, "approvers"), "lane has no approvers to fall back to"))
    for key, group in doc.approver_groups.items():
        if group.page and group.page not in doc.rotations:
            problems.append(_problem(("approver_groups", key, "page"), f"unknown rotation {group.page!r}"))
    for i, freeze in enumerate(doc.freezes):
        has_range = freeze.start is not None and freeze.end is not None
        if has_range == (freeze.weekly is not None):
            problems.append(_problem(("freezes", i), "give either start and end, or weekly"))
        if has_range and freeze.start is not None and freeze.end is not None and freeze.end <= freeze.start:
            problems.append(_problem(("freezes", i, "end"), "must be after start"))
        for j, e in enumerate(freeze.entitlements):
            if e not in seen:
                problems.append(_problem(("freezes", i, "entitlements", j), f"unknown entitlement {e!r}"))
    for j, a in enumerate(doc.fallback_approvers):
        if a not in doc.approver_groups:
            problems.append(_problem(("fallback_approvers", j), f"unknown approver group {a!r}"))
    for key in doc.business_hours.by_group:
        if key not in doc.groups:
            problems.append(_problem(("business_hours", "by_group", key), f"unknown group {key!r}"))
    for i, hint in enumerate(doc.least_privilege):
        if hint.entitlement not in seen:
            problems.append(_problem(("least_privilege", i, "entitlement"),
                                     f"unknown entitlement {hint.entitlement!r}"))
    for kind, pattern in doc.tickets.patterns.items():
        if re.fullmatch(pattern, ""):
            problems.append(_problem(("tickets", "patterns", kind), "pattern matches an empty string"))
    problems += _check_emergency(doc)
    problems += _check_bundles(doc, seen)
    problems += [_problem(loc, message) for loc, message in runbook_references(doc)]
    return problems


def _check_bundles(doc: PolicyDocument, entitlement_ids: dict[str, int]) -> list[Problem]:
    """A bundle names at least two distinct, defined entitlements, and its key is not an entitlement's id: a
    request names either, and one name must never mean two things."""
    problems: list[Problem] = []
    for key, bundle in doc.bundles.items():
        if key in entitlement_ids:
            problems.append(_problem(("bundles", key), f"{key!r} is already an entitlement's id: give the bundle "
                                                       "another name"))
        seen: set[str] = set()
        for j, member in enumerate(bundle.entitlements):
            if member in doc.bundles:
                problems.append(_problem(("bundles", key, "entitlements", j),
                                         f"{member!r} is a bundle: a bundle lists entitlements, not bundles"))
            elif member not in entitlement_ids:
                problems.append(_problem(("bundles", key, "entitlements", j), f"unknown entitlement {member!r}"))
            if member in seen:
                problems.append(_problem(("bundles", key, "entitlements", j), f"{member!r} is listed twice"))
            seen.add(member)
        if len(seen) < 2:
            problems.append(_problem(("bundles", key, "entitlements"),
                                     "a bundle needs at least two different entitlements (ask for one on its own)"))
    return problems


def _check_emergency(doc: PolicyDocument) -> list[Problem]:
    ea = doc.emergency_accounts
    if ea.reviewers is not None and ea.reviewers not in doc.groups:
        return [_problem(("emergency_accounts", "reviewers"), f"unknown group {ea.reviewers!r}")]
    if ea.accounts and ea.reviewers is None:
        return [_problem(("emergency_accounts", "reviewers"),
                         "emergency accounts are listed but nobody may tick their post-use checklist: name a group "
                         "in emergency_accounts.reviewers")]
    return []


def policy_risks(doc: PolicyDocument) -> list[Problem]:
    """Valid but risky choices `policy check` warns about (and fails on with --strict)."""
    problems: list[Problem] = []
    for i, ent in enumerate(doc.entitlements):
        name = tier0_name(ent.role_template_id)
        if name is None:
            continue
        if ent.approval == "none":
            problems.append(_problem(("entitlements", i, "approval"),
                                     f"{name} is a tier-0 role and needs no approval: anyone eligible gets it by "
                                     f"rule"))
        for k, lane in enumerate(ent.lanes):
            cond = lane.auto_approve_when
            if cond is not None and cond.max_priority is None and cond.on_call is None:
                problems.append(_problem(("entitlements", i, "lanes", k, "auto_approve_when"),
                                         f"lane {lane.id!r} approves {name}, a tier-0 role, by rule with no "
                                         f"condition"))
    problems += [_problem(loc, message) for loc, message in closing_risks(doc)]
    problems += _bundle_risks(doc)
    if not doc.denylist.object_ids and not doc.denylist.upn_patterns:
        problems.append(_problem(("denylist",), "the denylist is empty: emergency-access and service accounts can "
                                                "be elevated like anyone else"))
    return problems


def _approver_keys(doc: PolicyDocument, ent: Entitlement) -> set[str]:
    keys = set(ent.approvers or doc.fallback_approvers)
    for lane in ent.lanes:
        keys |= set(lane.approvers or [])
    return keys


def bundle_widenings(doc: PolicyDocument) -> list[tuple[str, str]]:
    """(bundle key, sentence) for each tier-0 member a bundle lets another approver group approve. A bundle is
    approved by the union of its members' approvers: someone who may approve one member then approves a tier-0
    member they could not approve alone. Valid (bundles are specified that way), but worth a warning."""
    out: list[tuple[str, str]] = []
    for key, bundle in doc.bundles.items():
        members = [e for e in (doc.entitlement(m) for m in bundle.entitlements) if e is not None]
        union = set().union(*(_approver_keys(doc, e) for e in members))
        for ent in members:
            name = tier0_name(ent.role_template_id)
            extra = sorted(union - _approver_keys(doc, ent))
            if name is not None and extra:
                out.append((key, f"approver group(s) {', '.join(extra)} may approve this bundle, and with it {name}, "
                                 "a tier-0 role they cannot approve on its own"))
    return out


def _bundle_risks(doc: PolicyDocument) -> list[Problem]:
    return [_problem(("bundles", key), message) for key, message in bundle_widenings(doc)]


def review_policy(text: str, source: str = "<policy>") -> tuple[PolicyDocument, list[Problem]]:
    """Parse (raising PolicyError when invalid) and list the risky choices, each with its line."""
    doc = parse_policy(text, source)
    root = yaml.compose(text)
    risks = policy_risks(doc)
    for risk in risks:
        risk.line = _line_of(root, risk.loc)
    return doc, risks


def policy_json_schema() -> dict[str, Any]:
    schema = PolicyDocument.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "breakglass policy file"
    return schema

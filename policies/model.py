"""Domain vocabulary shared by every layer: requests, facts, decisions, approvals and grants.

Everything here is plain immutable data. Nothing in `policies/` performs I/O; the adapters in `services/`
gather the facts and the engine turns them into a Decision.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator

from policies.assignable import Assignable
from policies.durations import format_duration


def _aware(value: datetime) -> datetime:
    # Naive datetimes are the classic source of off-by-an-offset expiry bugs; refuse them at the boundary.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Outcome(StrEnum):
    DENY = "deny"
    NEEDS_APPROVAL = "needs_approval"
    AUTO_APPROVE = "auto_approve"


class Effect(StrEnum):
    """What a failing rule does to the outcome."""

    DENY = "deny"  # the request cannot proceed
    APPROVAL = "approval"  # the request may proceed, but only with human approval
    INFO = "info"  # advisory only


class Principal(Frozen):
    """A directory user as seen at decision time (facts gathered from Entra by the adapters)."""

    object_id: str
    upn: str = ""
    mail: str = ""
    display_name: str = ""
    groups: frozenset[str] = frozenset()  # Entra group object ids, transitive
    enabled: bool = True

    @field_validator("object_id")
    @classmethod
    def _lower_id(cls, v: str) -> str:
        return v.lower()

    @field_validator("groups")
    @classmethod
    def _lower_groups(cls, v: frozenset[str]) -> frozenset[str]:
        return frozenset(g.lower() for g in v)

    def identifiers(self) -> frozenset[str]:
        """Lower-cased names this principal is known by in other systems (ITSM callers, assignees)."""
        return frozenset(v.lower() for v in (self.upn, self.mail, self.object_id) if v)


class TicketFacts(Frozen):
    """A ticket as the ITSM adapter found it; `exists=False` when the lookup found nothing."""

    number: str
    system: str = "servicenow"
    exists: bool = True
    open: bool = True
    kind: Literal["incident", "change", "request", "service_request", "other"] = "incident"
    priority: int | None = None  # 1 is the most urgent (P1)
    state: str = ""
    caller: str | None = None  # lower-cased UPN / e-mail
    assignee: str | None = None
    assignment_group: str | None = None
    assignment_group_members: frozenset[str] = frozenset()
    short_description: str = ""
    url: str | None = None
    sys_id: str | None = None
    affected: str | None = None  # the incident's affected account (UPN / e-mail), from a configured ticket field


class ActiveGrantFact(Frozen):
    """A request of the target principal that currently holds or is about to hold access."""

    request_id: str
    entitlement: str
    state: str
    ends_at: AwareDatetime | None = None


class GrantRequest(Frozen):
    """What a human asked for. Built from a submitted form, never from an AI suggestion alone."""

    id: str
    requester: str  # object id
    target: str  # object id of who receives the access (the requester unless requesting for someone else)
    entitlement: str
    duration: timedelta
    justification: str
    ticket: str | None = None
    lane: str | None = None  # explicit lane; None lets the engine pick the first lane that applies
    created_at: AwareDatetime
    source: Literal["teams", "itsm", "cli", "api"] = "teams"
    extends: str | None = None  # request id of the grant this extension lengthens

    @field_validator("requester", "target")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower()

    @property
    def for_someone_else(self) -> bool:
        return self.requester != self.target


RiskLevel = Literal["none", "low", "medium", "high", "unknown"]
RISK_ORDER: dict[str, int] = {"none": 0, "low": 1, "medium": 2, "high": 3}
# Identity Protection keeps a row after remediation or dismissal: only these states mean "risky now" (§8.5).
RISKY_STATES = frozenset({"atRisk", "confirmedCompromised"})


class RiskFact(Frozen):
    """A person's identity risk (Entra ID Protection) at decision time. `unknown` when it could not be read (no P2
    licence, a permission missing, Graph down); `none` when Graph has no row (never flagged) or the row is no longer
    at risk."""

    level: RiskLevel = "unknown"
    state: str = ""  # Graph's riskState (atRisk, confirmedCompromised, remediated, dismissed, none)
    detail: str = ""  # why unknown, or "never flagged"

    @staticmethod
    def from_row(row: dict[str, object] | None) -> RiskFact:
        """From `GET /identityProtection/riskyUsers/{id}`: None is Graph's 404 (never flagged)."""
        if row is None:
            return RiskFact(level="none", state="none", detail="never flagged")
        state = str(row.get("riskState") or "")
        level = str(row.get("riskLevel") or "")
        if level == "hidden":
            return RiskFact(level="unknown", state=state, detail="hidden: the tenant has no Entra ID P2")
        if state == "confirmedCompromised":
            return RiskFact(level="high", state=state)
        if state not in RISKY_STATES or level not in RISK_ORDER:
            return RiskFact(level="none", state=state or "none")
        return RiskFact(level=level, state=state)  # type: ignore[arg-type]

    def describe(self) -> str:
        extra = self.state if self.state and self.state != "none" else ""
        extra = ", ".join(p for p in (extra, self.detail) if p)
        return f"{self.level} ({extra})" if extra else self.level


class Facts(Frozen):
    """Everything the engine may look at besides the request, the policy and the clock."""

    requester: Principal
    target: Principal
    ticket: TicketFacts | None = None
    active_grants: tuple[ActiveGrantFact, ...] = ()
    # For an extension: how long the grant being extended has already been granted for in total.
    already_granted: timedelta = timedelta(0)
    # Identity risk, read only when the policy has a `risk:` section; None is "not read", which counts as unknown.
    requester_risk: RiskFact | None = None
    target_risk: RiskFact | None = None


class RuleResult(Frozen):
    rule: str
    passed: bool
    effect: Effect
    reason: str

    @property
    def blocks(self) -> bool:
        return not self.passed and self.effect is Effect.DENY

    @property
    def needs_human(self) -> bool:
        return not self.passed and self.effect is Effect.APPROVAL


class Person(Frozen):
    object_id: str
    name: str = ""
    upn: str = ""


class Approver(Frozen):
    """Someone who may decide the request, and why (which approver group / rotation put them there)."""

    object_id: str
    name: str = ""
    source: str = ""  # e.g. "identity-leads", "identity-leads:on-call", "identity-leads:backup"
    notify_first: bool = False  # the current on-call approver(s) get the personal card immediately
    backup: bool = False  # notified when the approval window escalates
    # Listed only as a backup of groups whose backups may decide after escalation: refused until `escalated_at`.
    after_escalation: bool = False


class Decision(Frozen):
    outcome: Outcome
    entitlement: str
    entitlement_name: str = ""
    role_definition_id: str = ""
    # What the grant puts in the directory (a role at a scope, or a group's membership or ownership). Decisions
    # recorded before groups existed have none: `assignable()` rebuilds their role from role_definition_id.
    target: Assignable | None = None
    lane: str | None = None
    rules: tuple[RuleResult, ...]
    max_duration: timedelta
    granted_duration: timedelta | None = None
    approvers: tuple[Approver, ...] = ()
    quorum: int = 0
    escalate_after: timedelta | None = None
    expire_after: timedelta | None = None
    flags: tuple[str, ...] = ()
    hints: tuple[str, ...] = ()
    policy_digest: str = ""
    evaluated_at: AwareDatetime
    # A bundle's decision is the strictest of its members' (policies.bundles); each member's own decision is kept
    # here, in the bundle's order, so it can be explained and re-authorised member by member.
    members: tuple[Decision, ...] = ()

    @property
    def is_bundle(self) -> bool:
        return bool(self.members)

    def assignable(self, scope: str = "/") -> Assignable:
        if self.target is not None:
            return self.target
        return Assignable.role(self.role_definition_id, scope, self.entitlement_name)

    @property
    def kind_label(self) -> str:
        """"Role", "Group membership" or "Group ownership": the label before the name on cards and receipts."""
        return self.target.kind_label() if self.target is not None else "Role"

    @property
    def reasons(self) -> list[str]:
        """Why the outcome is not a plain auto-approve, in words, most serious first."""
        failing = [r for r in self.rules if not r.passed and r.effect is not Effect.INFO]
        failing.sort(key=lambda r: 0 if r.effect is Effect.DENY else 1)
        return [r.reason for r in failing]

    def summary(self) -> str:
        if self.outcome is Outcome.AUTO_APPROVE:
            return f"Auto-approved for {format_duration(self.granted_duration or self.max_duration)}."
        if self.outcome is Outcome.NEEDS_APPROVAL:
            names = ", ".join(a.name or a.object_id for a in self.approvers if a.notify_first) or "an approver"
            return f"Waiting for approval by {names} ({self.quorum} needed)."
        return "Denied: " + join_reasons(self.reasons)


Decision.model_rebuild()


def join_reasons(reasons: list[str]) -> str:
    """Reasons as one sentence: each once, joined by semicolons, one full stop at the end (not "..;")."""
    parts = []
    for reason in reasons:
        part = reason.strip().rstrip(".").strip()
        if part and part not in parts:
            parts.append(part)
    return "; ".join(parts) + "." if parts else ""


class Verdict(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


class Approval(Frozen):
    """One approver's click, bound to the request version it was made against."""

    request_id: str
    approver: str  # object id
    approver_name: str = ""
    verdict: Verdict
    reason: str = ""
    at: AwareDatetime
    request_version: int


class GrantMode(StrEnum):
    PIM = "pim"
    DIRECT = "direct"


class Grant(Frozen):
    """A role assignment breakglass made (or adopted) for a request."""

    request_id: str
    principal_id: str
    role_definition_id: str = ""  # a role's; empty for a group (see target)
    scope: str = "/"
    # Set for every grant made since groups exist; None on older records, which were all roles.
    target: Assignable | None = None
    mode: GrantMode = GrantMode.PIM
    generation: int = 0
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    assignment_id: str | None = None
    schedule_request_id: str | None = None
    adopted: bool = False
    # PIM provisions at the moment it processes a request, so its read-back end is a fraction of a second after
    # the whole-second end that was asked; `ends_at` stays the asked end (revoked on that tick), this keeps Entra's.
    entra_ends_at: AwareDatetime | None = None

    @property
    def assignable(self) -> Assignable:
        return self.target if self.target is not None else Assignable.role(self.role_definition_id, self.scope)

    def ledger_key(self) -> tuple[str, str, str]:
        return self.assignable.ledger_key(self.principal_id)


class Transition(Frozen):
    seq: int
    from_state: str
    to_state: str
    event: str
    actor: str
    at: AwareDatetime
    reason: str = ""


class CardRef(Frozen):
    """Where a copy of a request's card was posted, so every copy can be updated after a decision."""

    service_url: str
    conversation_id: str
    activity_id: str
    audience: Literal["requester", "approver", "channel"] = "approver"
    user_id: str | None = None  # Teams MRI (29:...) of the person in a 1:1


class Actor(Frozen):
    object_id: str
    name: str = ""
    teams_id: str | None = None  # 29:... MRI, when known

    @staticmethod
    def system(name: str) -> Actor:
        return Actor(object_id=f"system:{name}", name=name)


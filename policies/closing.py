"""Closing the loop around a grant, as policy data: what happens when it ends (`on_end`), the runbook steps attached
to it (`runbooks`), and when its holder is warned that it is about to end (`warn_before`).

The policy file's own models for these live here; `policies.document` puts them on entitlements, lanes and the
document. `closing_for` answers, for one entitlement and lane, what applies: a lane's setting replaces its
entitlement's, and an entitlement that says nothing about `on_end` revokes sessions exactly when its role is
tier-0 (an attacker who held Global Administrator for an hour keeps its refresh tokens otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, model_validator

from policies.durations import DurationError, parse_duration
from policies.model import AwareDatetime
from policies.tier0 import tier0_name

KEY = r"^[a-z0-9][a-z0-9_.-]*$"
OnEnd = Literal["revoke_sessions"]
Phase = Literal["after_grant", "before_revoke", "after_revoke"]
PHASES: tuple[Phase, ...] = ("after_grant", "before_revoke", "after_revoke")
WARN_BEFORE = timedelta(minutes=10)
STEP_TIMEOUT = timedelta(seconds=10)


class PolicyDocument(Protocol):
    """What these functions read of `policies.document.PolicyDocument` (which imports this module)."""

    @property
    def runbooks(self) -> Mapping[str, RunbookStep]: ...

    @property
    def entitlements(self) -> Sequence[Any]: ...

    def entitlement(self, entitlement_id: str) -> Any: ...


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _step_timeout(value: object) -> timedelta:
    try:
        d = parse_duration(value)
    except DurationError as exc:
        raise ValueError(str(exc)) from exc
    if not timedelta(seconds=1) <= d <= timedelta(seconds=60):
        raise ValueError("must be between 1s and 60s")
    return d


def _not_negative(value: object) -> timedelta:
    try:
        d = parse_duration(value)
    except DurationError as exc:
        raise ValueError(str(exc)) from exc
    if d < timedelta(0):
        raise ValueError("must not be negative")
    return d


StepTimeout = Annotated[timedelta, BeforeValidator(_step_timeout)]
WarnBefore = Annotated[timedelta, BeforeValidator(_not_negative)]


class RunbookStep(_Doc):
    """One named step. `revoke_sessions` ends the sign-in sessions of a subject: the person who received the role
    (`grantee`) or the account the incident is about (`affected_account`, from the ticket or the intake form).
    `webhook` POSTs the grant's facts, HMAC-signed, to an endpoint configured outside the policy file
    (BREAKGLASS_RUNBOOK_WEBHOOKS: its URL carries the receiver's token, so it is a secret, never policy)."""

    kind: Literal["revoke_sessions", "webhook"]
    display_name: str = ""
    subject: Literal["grantee", "affected_account"] | None = None
    endpoint: Annotated[str, Field(pattern=KEY)] | None = None
    timeout: StepTimeout = STEP_TIMEOUT
    attempts: StrictInt = Field(default=3, ge=1, le=10)

    @model_validator(mode="after")
    def _fields_of_the_kind(self) -> RunbookStep:
        if self.kind == "webhook":
            if self.endpoint is None:
                raise ValueError("a webhook step needs an endpoint (a name in BREAKGLASS_RUNBOOK_WEBHOOKS)")
            if self.subject is not None:
                raise ValueError("only a revoke_sessions step has a subject")
        else:
            if self.subject is None:
                raise ValueError("a revoke_sessions step needs a subject: grantee or affected_account")
            if self.endpoint is not None:
                raise ValueError("only a webhook step has an endpoint")
        return self

    def label(self, name: str) -> str:
        if self.display_name:
            return self.display_name
        if self.kind == "webhook":
            return f"Runbook {name} (webhook {self.endpoint})"
        whose = "the grantee's" if self.subject == "grantee" else "the affected account's"
        return f"Runbook {name}: revoke {whose} sessions"


class RunbookAttachments(_Doc):
    after_grant: list[str] = []
    before_revoke: list[str] = []
    after_revoke: list[str] = []

    def names(self, phase: Phase) -> list[str]:
        return list(getattr(self, phase))


@dataclass(frozen=True)
class AttachedStep:
    name: str
    step: RunbookStep


@dataclass(frozen=True)
class Closing:
    """What applies to one grant: its end actions, its runbook steps per phase and its expiry warning."""

    on_end: frozenset[str]
    runbooks: dict[str, tuple[AttachedStep, ...]]
    warn_before: timedelta

    def steps(self, phase: Phase) -> list[AttachedStep]:
        return list(self.runbooks.get(phase, ()))

    def warns(self, duration: timedelta) -> bool:
        """A warning makes sense only when the grant lasts at least twice as long as the warning's lead."""
        return self.warn_before > timedelta(0) and duration >= 2 * self.warn_before


def closing_for(doc: PolicyDocument, entitlement_id: str, lane_id: str | None) -> Closing:
    ent = doc.entitlement(entitlement_id)
    if ent is None:
        return Closing(frozenset(), {}, WARN_BEFORE)
    lane = next((la for la in ent.lanes if la.id == lane_id), None) if lane_id else None
    on_end = lane.on_end if lane is not None and lane.on_end is not None else ent.on_end
    if on_end is None:
        on_end = ["revoke_sessions"] if tier0_name(ent.role_template_id) else []
    attachments = lane.runbooks if lane is not None and lane.runbooks is not None else ent.runbooks
    runbooks: dict[str, tuple[AttachedStep, ...]] = {}
    if attachments is not None:
        for phase in PHASES:
            runbooks[phase] = tuple(AttachedStep(name, doc.runbooks[name]) for name in attachments.names(phase)
                                    if name in doc.runbooks)
    warn = lane.warn_before if lane is not None and lane.warn_before is not None else ent.warn_before
    return Closing(frozenset(on_end), runbooks, WARN_BEFORE if warn is None else warn)


def closing_for_members(doc: PolicyDocument, members: Sequence[tuple[str, str | None]]) -> Closing:
    """A bundle's closing: every member's end actions and runbook steps (each step once, in member order), and the
    earliest of their warnings (the members end together, so the holder hears once, in time for every member)."""
    parts = [closing_for(doc, entitlement_id, lane_id) for entitlement_id, lane_id in members]
    runbooks: dict[str, tuple[AttachedStep, ...]] = {}
    for phase in PHASES:
        steps: dict[str, AttachedStep] = {}
        for part in parts:
            for attached in part.steps(phase):
                steps.setdefault(attached.name, attached)
        if steps:
            runbooks[phase] = tuple(steps.values())
    warn = max((p.warn_before for p in parts), default=WARN_BEFORE)
    return Closing(frozenset().union(*(p.on_end for p in parts)), runbooks, warn)


def asks_affected_account(doc: PolicyDocument, entitlement_ids: Sequence[str]) -> bool:
    """Whether any of these entitlements (or their lanes) runs a step on the incident's affected account: only then
    does the intake form ask for one."""
    for entitlement_id in entitlement_ids:
        ent = doc.entitlement(entitlement_id)
        if ent is None:
            continue
        for attachments in [ent.runbooks, *(lane.runbooks for lane in ent.lanes)]:
            if attachments is None:
                continue
            for phase in PHASES:
                for name in attachments.names(phase):
                    step = doc.runbooks.get(name)
                    if step is not None and step.subject == "affected_account":
                        return True
    return False


def runbook_references(doc: PolicyDocument) -> list[tuple[tuple[object, ...], str]]:
    """(location, message) for every runbook name an entitlement or lane attaches that the document lacks."""
    problems: list[tuple[tuple[object, ...], str]] = []
    for i, ent in enumerate(doc.entitlements):
        places: list[tuple[tuple[object, ...], RunbookAttachments | None]] = [(("entitlements", i), ent.runbooks)]
        places += [(("entitlements", i, "lanes", k), lane.runbooks) for k, lane in enumerate(ent.lanes)]
        for base, attachments in places:
            if attachments is None:
                continue
            for phase in PHASES:
                for j, name in enumerate(attachments.names(phase)):
                    if name not in doc.runbooks:
                        problems.append(((*base, "runbooks", phase, j), f"unknown runbook step {name!r}"))
    return problems


def closing_risks(doc: PolicyDocument) -> list[tuple[tuple[object, ...], str]]:
    """A tier-0 role (or one of its lanes) whose sessions outlive it: valid, but worth a warning."""
    risks: list[tuple[tuple[object, ...], str]] = []
    for i, ent in enumerate(doc.entitlements):
        name = tier0_name(ent.role_template_id)
        if name is None:
            continue
        if ent.on_end is not None and "revoke_sessions" not in ent.on_end:
            risks.append((("entitlements", i, "on_end"), f"{name} is a tier-0 role and its holder's sign-in sessions "
                                                         "are not revoked when it ends"))
        for k, lane in enumerate(ent.lanes):
            if lane.on_end is not None and "revoke_sessions" not in lane.on_end:
                risks.append((("entitlements", i, "lanes", k, "on_end"),
                              f"lane {lane.id!r} of {name}, a tier-0 role, does not revoke the holder's sign-in "
                              "sessions when it ends"))
    return risks


# --- what the record keeps: the account an incident is about, and each follow-up step's progress ------------------

StepKind = Literal["plan", "sessions", "runbook", "activity", "warn", "ended_notice"]
StepState = Literal["scheduled", "queued", "done", "failed", "refused", "skipped"]
PENDING_STEPS: frozenset[str] = frozenset({"scheduled", "queued"})


class AffectedAccount(BaseModel):
    """The account a security incident is about (the compromised one), named on the intake form or on the ticket;
    resolved in the directory at submit time."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    object_id: str
    name: str = ""
    upn: str = ""
    source: Literal["form", "ticket"] = "form"


class StepStatus(BaseModel):
    """One follow-up step of a grant (its session revocation, a runbook step, an activity pass, the expiry warning,
    the end notice) and where it stands. `scheduled`: waiting for `due_at`, the reconciler starts it; `queued`: a
    job carries it, and past `deadline` with no job in hand the reconciler re-drives it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    key: str
    kind: StepKind
    label: str = ""
    status: StepState
    due_at: AwareDatetime
    deadline: AwareDatetime
    attempt: int = 1
    detail: str = ""
    finished_at: AwareDatetime | None = None

    @property
    def pending(self) -> bool:
        return self.status in PENDING_STEPS

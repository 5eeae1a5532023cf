"""The decision engine: evaluate(request, facts, now, policy) -> Decision.

A pure, deterministic function: no I/O, no hidden clock, no randomness. Each rule is a small function that
returns RuleResults; the outcome is derived from them (any failing deny-rule denies, any failing
approval-rule needs a human, otherwise the request is approved by rule).
"""

from __future__ import annotations

import difflib
import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from policies.bundles import combine
from policies.document import Entitlement, Lane, PolicyDocument
from policies.durations import format_duration
from policies.model import (
    RISK_ORDER,
    Approver,
    Decision,
    Effect,
    Facts,
    GrantRequest,
    Outcome,
    Principal,
    RiskFact,
    RuleResult,
)

HOLDING_STATES = frozenset({"approved", "activating", "active", "revoking"})
OPEN_STATES = HOLDING_STATES | {"pending_approval"}


@dataclass(frozen=True)
class Context:
    request: GrantRequest
    facts: Facts
    now: datetime
    policy: PolicyDocument
    entitlement: Entitlement
    lane: Lane | None

    @property
    def max_duration(self) -> timedelta:
        return self.lane.max_duration if self.lane else self.entitlement.max_duration

    @property
    def where(self) -> str:
        return f"{self.entitlement.display_name}" + (f" ({self.lane.display_name} lane)" if self.lane else "")


def _ok(rule: str, effect: Effect, reason: str) -> RuleResult:
    return RuleResult(rule=rule, passed=True, effect=effect, reason=reason)


def _fail(rule: str, effect: Effect, reason: str) -> RuleResult:
    return RuleResult(rule=rule, passed=False, effect=effect, reason=reason)


def _in_groups(principal: Principal, policy: PolicyDocument, keys: Iterable[str]) -> list[str]:
    return [k for k in keys if k in policy.groups and policy.groups[k].object_id in principal.groups]


def _names(policy: PolicyDocument, keys: Iterable[str]) -> str:
    return ", ".join(f'"{policy.groups[k].display_name}"' if k in policy.groups else k for k in keys)


# --- ticket reference ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def ticket_pattern(pattern: str, *, search: bool = False) -> re.Pattern[str]:
    """A policy's ticket pattern with ASCII semantics: `\\d` is 0-9 only (Arabic-Indic or full-width digits are
    no ticket number an ITSM knows) and case folding is ASCII-only (no Kelvin sign for K, no dotless i)."""
    return re.compile(rf"\b({pattern})\b" if search else pattern, flags=re.ASCII | re.IGNORECASE)


def ticket_kind(policy: PolicyDocument, ticket: str | None) -> str | None:
    if not ticket:
        return None
    for kind, pattern in policy.tickets.patterns.items():
        if ticket_pattern(pattern).fullmatch(ticket.strip()):
            return kind
    return None


def find_ticket_reference(policy: PolicyDocument, text: str) -> str | None:
    for pattern in policy.tickets.patterns.values():
        m = ticket_pattern(pattern, search=True).search(text)
        if m:
            return m.group(1).upper()
    return None


def find_ticket_references(policy: PolicyDocument, text: str) -> list[str]:
    """Every ticket number in the text as a whole token (same patterns as `find_ticket_reference`), upper-cased."""
    found: list[str] = []
    for pattern in policy.tickets.patterns.values():
        for m in re.finditer(rf"\b({pattern})\b", text, flags=re.IGNORECASE):
            if m.group(1).upper() not in found:
                found.append(m.group(1).upper())
    return found


# --- lane selection -------------------------------------------------------------------------------------------

def _lane_applies(lane: Lane, request: GrantRequest, facts: Facts, policy: PolicyDocument) -> bool:
    if not _in_groups(facts.requester, policy, lane.eligible):
        return False
    return not (lane.requires_incident and ticket_kind(policy, request.ticket) != "incident")


def select_lane(request: GrantRequest, facts: Facts, policy: PolicyDocument,
                entitlement: Entitlement) -> tuple[Lane | None, str]:
    if request.lane:
        for lane in entitlement.lanes:
            if lane.id == request.lane:
                return lane, f'lane "{lane.display_name}" requested explicitly'
        return None, f"unknown lane {request.lane!r}"
    eligible = [lane for lane in entitlement.lanes if _in_groups(facts.requester, policy, lane.eligible)]
    applicable = [lane for lane in eligible if _lane_applies(lane, request, facts, policy)]
    standard_ok = bool(_in_groups(facts.requester, policy, entitlement.eligible))
    # Prefer a lane that can hold the requested duration; fall back to the standard path before a lane that can't.
    for lane in applicable:
        if request.duration <= lane.max_duration:
            return lane, f'lane "{lane.display_name}" applies'
    if standard_ok:
        return None, "standard path"
    if applicable:
        return applicable[0], f'lane "{applicable[0].display_name}" applies'
    if eligible:
        # Eligible only through a lane whose condition is not met yet (e.g. no incident number): choose it, so
        # its own rule tells the requester what is missing instead of "not eligible".
        return eligible[0], f'lane "{eligible[0].display_name}" (condition not met)'
    return None, "standard path"


# --- rules ------------------------------------------------------------------------------------------------------

def rule_eligible(c: Context) -> Iterable[RuleResult]:
    if c.request.lane and c.lane is None:
        yield _fail("lane.known", Effect.DENY, f"There is no lane {c.request.lane!r} for {c.entitlement.display_name}.")
        return
    keys = c.lane.eligible if c.lane else c.entitlement.eligible
    member_of = _in_groups(c.facts.requester, c.policy, keys)
    if member_of:
        yield _ok("requester.eligible", Effect.DENY, f"Requester is in {_names(c.policy, member_of)}.")
    else:
        yield _fail("requester.eligible", Effect.DENY,
                    f"Requester is not in a group eligible for {c.where}: needs {_names(c.policy, keys)}.")


def rule_target(c: Context) -> Iterable[RuleResult]:
    target = c.facts.target
    hit = c.policy.denylist.matches(target.object_id, target.upn)
    if hit:
        yield _fail("target.denylist", Effect.DENY,
                    f"{target.display_name or target.object_id} can never be elevated (denylisted: {hit}).")
    else:
        yield _ok("target.denylist", Effect.DENY, "Target is not on the denylist.")
    if not target.enabled:
        yield _fail("target.enabled", Effect.DENY, "Target account is disabled.")
    if c.request.for_someone_else:
        allowed = _in_groups(c.facts.requester, c.policy, c.entitlement.request_for_others)
        if allowed:
            yield _ok("target.for_others", Effect.DENY,
                      f"Requester may request {c.entitlement.display_name} for others "
                      f"({_names(c.policy, allowed)}).")
        else:
            yield _fail("target.for_others", Effect.DENY,
                        f"Requesting {c.entitlement.display_name} for someone else is not allowed for this requester.")
        if c.entitlement.target_must_be_eligible:
            # Asking for someone must not reach further than that person could reach by asking themselves.
            keys = c.lane.eligible if c.lane else c.entitlement.eligible
            member_of = _in_groups(target, c.policy, keys)
            who = target.display_name or target.object_id
            if member_of:
                yield _ok("target.eligible", Effect.DENY, f"{who} is in {_names(c.policy, member_of)}.")
            else:
                yield _fail("target.eligible", Effect.DENY,
                            f"{who} is not in a group eligible for {c.where}: needs {_names(c.policy, keys)}.")


def rule_emergency_account(c: Context) -> Iterable[RuleResult]:
    """Emergency access accounts are watched, never elevated: listing one denies it like the denylist does, even
    when nobody copied it there."""
    target = c.facts.target
    hit = c.policy.emergency_accounts.matches(target.object_id, target.upn)
    if hit:
        yield _fail("target.emergency_account", Effect.DENY,
                    f"{target.display_name or target.object_id} is an emergency access account ({hit}) and can "
                    "never be elevated through breakglass.")
    else:
        yield _ok("target.emergency_account", Effect.DENY, "Target is not an emergency access account.")


def rule_risk(c: Context) -> Iterable[RuleResult]:
    """Identity risk of the requester and the target, when the policy has a `risk:` section."""
    rules = c.policy.risk
    if rules is None:
        return
    people = {"requester": (c.facts.requester, c.facts.requester_risk), "target": (c.facts.target,
                                                                                  c.facts.target_risk)}
    for role in rules.applies_to:
        if role == "target" and not c.request.for_someone_else:
            continue
        person, fact = people[role]
        fact = fact or RiskFact(level="unknown", detail="not read")
        who = f"{role.capitalize()} {person.display_name or person.object_id}"
        name = f"risk.{role}"
        if fact.level == "unknown":
            if rules.unknown == "allow":
                yield _ok(name, Effect.INFO, f"{who}'s identity risk is {fact.describe()}; the policy allows it.")
            else:
                effect = Effect.DENY if rules.unknown == "deny" else Effect.APPROVAL
                then = "denied" if rules.unknown == "deny" else "an approver must decide"
                yield _fail(name, effect, f"{who}'s identity risk is {fact.describe()}: {then} (risk.unknown).")
            continue
        if RISK_ORDER[fact.level] > RISK_ORDER[rules.max_level]:
            effect = Effect.DENY if rules.on_exceeded == "deny" else Effect.APPROVAL
            then = "denied" if rules.on_exceeded == "deny" else "an approver must decide"
            yield _fail(name, effect, f"{who}'s identity risk is {fact.describe()}, above the policy's maximum "
                                      f"{rules.max_level}: {then}.")
        else:
            yield _ok(name, Effect.DENY, f"{who}'s identity risk is {fact.describe()} (maximum "
                                         f"{rules.max_level}).")


def rule_duration(c: Context) -> Iterable[RuleResult]:
    d = c.request.duration
    if d <= timedelta(0):
        yield _fail("duration.positive", Effect.DENY, "Duration must be positive.")
        return
    total = d + c.facts.already_granted
    label = "Total duration" if c.facts.already_granted else "Duration"
    if total > c.max_duration:
        yield _fail("duration.max", Effect.DENY,
                    f"{label} {format_duration(total)} exceeds the {format_duration(c.max_duration)} maximum "
                    f"for {c.where}.")
    else:
        yield _ok("duration.max", Effect.DENY,
                  f"{label} {format_duration(total)} is within the {format_duration(c.max_duration)} maximum.")


_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def normalise_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in {"Cf", "Cc"})
    return " ".join(w.lower() for w in _WORD.findall(text))


def vague_reason(policy: PolicyDocument, text: str) -> str | None:
    rules = policy.justification
    # Ticket numbers do not explain anything by themselves.
    for pattern in policy.tickets.patterns.values():
        text = ticket_pattern(pattern, search=True).sub(" ", text)
    normal = normalise_text(text)
    words = [w for w in normal.split() if w]
    stripped = " ".join(words)
    if not words:
        return "The justification says nothing about the task."
    for phrase in rules.vague_phrases:
        p = normalise_text(phrase)
        if stripped == p or difflib.SequenceMatcher(None, stripped, p).ratio() >= rules.similarity:
            return f'The justification is too vague ("{phrase}"): say what you will fix and why.'
    generic = {normalise_text(w) for w in rules.generic_words}
    if generic and all(w in generic or len(w) <= 2 for w in words):
        return "The justification only uses generic words: say what you will fix and why."
    return None


def rule_justification(c: Context) -> Iterable[RuleResult]:
    rules = c.policy.justification
    text = c.request.justification.strip()
    if len(text) < rules.min_length:
        yield _fail("justification.length", Effect.DENY,
                    f"Justification is {len(text)} characters; at least {rules.min_length} are required.")
    elif len(text) > rules.max_length:
        yield _fail("justification.length", Effect.DENY,
                    f"Justification is {len(text)} characters; at most {rules.max_length} are allowed.")
    else:
        yield _ok("justification.length", Effect.DENY, "Justification length is fine.")
    vague = vague_reason(c.policy, text)
    if vague:
        yield _fail("justification.specific", Effect.DENY, vague)
    else:
        yield _ok("justification.specific", Effect.DENY, "Justification describes a task.")


def rule_ticket(c: Context) -> Iterable[RuleResult]:
    rules = c.policy.tickets
    ref = c.request.ticket
    kind = ticket_kind(c.policy, ref)
    if not ref:
        if rules.required:
            yield _fail("ticket.reference", Effect.DENY,
                        "A ticket reference is required (INC, CHG, RITM or SR number).")
        return
    if kind is None:
        yield _fail("ticket.reference", Effect.DENY, f"{ref!r} is not a recognised ticket number.")
        return
    yield _ok("ticket.reference", Effect.DENY, f"Ticket reference {ref} ({kind}).")
    if rules.verify == "off":
        return
    t = c.facts.ticket
    if t is None:
        if rules.verify == "required":
            yield _fail("ticket.exists", Effect.DENY, f"Ticket {ref} could not be verified in the ticketing system.")
        else:
            yield _fail("ticket.exists", Effect.APPROVAL,
                        f"Ticket {ref} could not be verified; an approver must check it.")
        return
    if not t.exists:
        yield _fail("ticket.exists", Effect.DENY, f"Ticket {ref} does not exist in {t.system}.")
        return
    yield _ok("ticket.exists", Effect.DENY, f"Ticket {ref} exists in {t.system}.")
    if rules.must_be_open:
        if t.open:
            yield _ok("ticket.open", Effect.DENY, f"Ticket {ref} is open ({t.state or 'open'}).")
        else:
            yield _fail("ticket.open", Effect.DENY, f"Ticket {ref} is not open ({t.state or 'closed'}).")
    if rules.requester_must_be_involved:
        ids = c.facts.requester.identifiers()
        roles = []
        if t.caller and t.caller.lower() in ids:
            roles.append("caller")
        if t.assignee and t.assignee.lower() in ids:
            roles.append("assignee")
        if ids & {m.lower() for m in t.assignment_group_members}:
            roles.append(f"member of assignment group {t.assignment_group or ''}".strip())
        if roles:
            yield _ok("ticket.involved", Effect.DENY, f"Requester is the ticket's {' and '.join(roles)}.")
        else:
            yield _fail("ticket.involved", Effect.DENY,
                        f"Requester is not the caller, the assignee or in the assignment group of {ref}.")


def rule_lane(c: Context) -> Iterable[RuleResult]:
    if c.lane and c.lane.requires_incident:
        if ticket_kind(c.policy, c.request.ticket) == "incident":
            yield _ok("lane.incident", Effect.DENY, f"{c.lane.display_name} has an incident reference.")
        else:
            yield _fail("lane.incident", Effect.DENY, f"{c.lane.display_name} requires an incident reference (INC).")


def rule_freeze(c: Context) -> Iterable[RuleResult]:
    for freeze in c.policy.freezes:
        if freeze.entitlements and c.entitlement.id not in freeze.entitlements:
            continue
        if c.lane and c.lane.id in freeze.exempt_lanes:
            continue
        if freeze.active(c.now):
            effect = Effect.DENY if freeze.action == "deny" else Effect.APPROVAL
            verb = "denied" if freeze.action == "deny" else "need approval"
            yield _fail("freeze", effect, f'Change freeze "{freeze.name}" is in effect: requests {verb}.')


def is_unusual_timing(policy: PolicyDocument, requester: Principal, now: datetime) -> tuple[bool, str]:
    hours = policy.business_hours.default
    for key, override in policy.business_hours.by_group.items():
        if key in policy.groups and policy.groups[key].object_id in requester.groups:
            hours = override
            break
    inside = hours.contains(now)
    local = now.astimezone(ZoneInfo(hours.timezone))
    stamp = f"{local:%a %H:%M} {hours.timezone}"
    return (not inside), stamp


def rule_timing(c: Context) -> Iterable[RuleResult]:
    unusual, stamp = is_unusual_timing(c.policy, c.facts.requester, c.now)
    if unusual:
        yield _fail("timing.business_hours", Effect.APPROVAL,
                    f"Unusual timing: {stamp} is outside business hours, so it cannot be approved by rule.")
    else:
        yield _ok("timing.business_hours", Effect.APPROVAL, f"Within business hours ({stamp}).")


def rule_concurrency(c: Context) -> Iterable[RuleResult]:
    if c.request.extends:
        return
    holding = {g.request_id for g in c.facts.active_grants
               if g.state in HOLDING_STATES and g.request_id != c.request.id}  # a bundle's members count once
    limit = c.policy.concurrency.max_active_per_principal
    if len(holding) >= limit:
        yield _fail("concurrency.max_active", Effect.DENY,
                    f"Target already holds {len(holding)} active grant(s); the limit is {limit}.")
    same = [g for g in c.facts.active_grants
            if g.entitlement == c.entitlement.id and g.state in OPEN_STATES and g.request_id != c.request.id]
    if same and c.policy.concurrency.same_role == "deny":
        g = same[0]
        until = f" until {g.ends_at:%Y-%m-%d %H:%M} UTC" if g.ends_at else ""
        yield _fail("concurrency.same_role", Effect.DENY,
                    f"Request {g.request_id} for {c.entitlement.display_name} is already {g.state}{until}; "
                    f"extend it instead.")


def least_privilege_hint(c: Context) -> str | None:
    text = normalise_text(c.request.justification)
    for hint in c.policy.least_privilege:
        suggested = c.policy.entitlement(hint.entitlement)
        if suggested is None or suggested.id == c.entitlement.id or suggested.privilege >= c.entitlement.privilege:
            continue
        if any(normalise_text(k) in text for k in hint.keywords):
            return (f"{suggested.display_name} would be enough for {hint.task}; "
                    f"{c.entitlement.display_name} is more than this task needs.")
    return None


def rule_least_privilege(c: Context) -> Iterable[RuleResult]:
    hint = least_privilege_hint(c)
    if hint:
        yield _fail("least_privilege", Effect.INFO, hint)


def auto_approve_check(c: Context) -> RuleResult:
    ent, lane = c.entitlement, c.lane
    if lane is None:
        if ent.approval == "none":
            return _ok("approval.required", Effect.APPROVAL, f"{ent.display_name} needs no approval.")
        return _fail("approval.required", Effect.APPROVAL, f"{ent.display_name} always requires approval.")
    cond = lane.auto_approve_when
    if cond is None:
        return _fail("approval.required", Effect.APPROVAL, f"{lane.display_name} requires approval.")
    missing = []
    met = []
    if cond.max_priority is not None:
        t = c.facts.ticket
        if t is not None and t.exists and t.priority is not None and t.priority <= cond.max_priority:
            met.append(f"incident is P{t.priority}")
        else:
            got = f"P{t.priority}" if t is not None and t.priority is not None else "unknown priority"
            missing.append(f"the incident is P{cond.max_priority} or more urgent (it is {got})")
    if cond.on_call:
        rotation = c.policy.rotations[cond.on_call]
        on_shift = rotation.on_call(c.now)
        who = c.facts.target.display_name or c.facts.target.object_id
        if on_shift.object_id == c.facts.target.object_id.lower():
            met.append(f"{who} is on call ({rotation.display_name})")
        else:
            missing.append(f"{who} is on shift for {rotation.display_name} "
                           f"(on shift now: {on_shift.name or on_shift.object_id})")
    if missing:
        return _fail("approval.required", Effect.APPROVAL,
                     f"{lane.display_name} is approved by rule only when " + " and ".join(missing) + ".")
    return _ok("approval.required", Effect.APPROVAL, "Approved by rule: " + " and ".join(met) + ".")


def resolve_approvers(policy: PolicyDocument, entitlement: Entitlement, lane: Lane | None, now: datetime,
                      exclude: Iterable[str]) -> list[Approver]:
    """Who may approve right now, excluding the requester and the target. Pure: policy data only."""
    excluded = {e.lower() for e in exclude}
    keys = (lane.approvers if lane and lane.approvers else entitlement.approvers) or policy.fallback_approvers
    out: dict[str, Approver] = {}
    for key in keys:
        group = policy.approver_groups.get(key)
        if group is None:
            continue
        paged: str | None = None
        if group.page:
            on_shift = policy.rotations[group.page].on_call(now)
            if on_shift.object_id not in excluded and any(m.object_id == on_shift.object_id for m in group.members):
                paged = on_shift.object_id
        backups = {b.object_id for b in group.backup}
        waits = group.backup_may_approve == "after_escalation"
        for m in group.members:
            if m.object_id in excluded:
                continue
            if m.object_id in out:
                # A backup of an earlier group who is a member here decides at once.
                out[m.object_id] = out[m.object_id].model_copy(update={"after_escalation": False})
                continue
            first = (m.object_id == paged) if paged else (m.object_id not in backups)
            source = f"{key}:on-call" if m.object_id == paged else key
            out[m.object_id] = Approver(object_id=m.object_id, name=m.name, source=source, notify_first=first,
                                        backup=m.object_id in backups)
        for b in group.backup:
            if b.object_id in excluded:
                continue
            if b.object_id in out:
                if not waits:
                    out[b.object_id] = out[b.object_id].model_copy(update={"after_escalation": False})
                continue
            out[b.object_id] = Approver(object_id=b.object_id, name=b.name, source=f"{key}:backup",
                                        notify_first=False, backup=True, after_escalation=waits)
    return list(out.values())


RULES: tuple[Callable[[Context], Iterable[RuleResult]], ...] = (
    rule_eligible,
    rule_target,
    rule_emergency_account,
    rule_duration,
    rule_justification,
    rule_ticket,
    rule_lane,
    rule_freeze,
    rule_timing,
    rule_concurrency,
    rule_risk,
    rule_least_privilege,
)


def evaluate(request: GrantRequest, facts: Facts, now: datetime, policy: PolicyDocument) -> Decision:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    digest = policy.digest()
    entitlement = policy.entitlement(request.entitlement)
    if entitlement is None and policy.bundle(request.entitlement) is not None:
        return evaluate_bundle(request, facts, now, policy, digest)
    if entitlement is None:
        return Decision(outcome=Outcome.DENY, entitlement=request.entitlement, rules=(
            _fail("entitlement.known", Effect.DENY, f"There is no entitlement {request.entitlement!r}."),),
            max_duration=timedelta(0), policy_digest=digest, evaluated_at=now)
    lane, _why = select_lane(request, facts, policy, entitlement)
    c = Context(request=request, facts=facts, now=now, policy=policy, entitlement=entitlement, lane=lane)
    results: list[RuleResult] = [_ok("entitlement.known", Effect.DENY, f"Entitlement {entitlement.display_name}.")]
    for rule in RULES:
        results.extend(rule(c))
    approval = auto_approve_check(c)
    results.append(approval)
    quorum = (lane.quorum if lane and lane.quorum else entitlement.quorum)
    approvers = resolve_approvers(policy, entitlement, lane, now, exclude={request.requester, request.target})
    needs_human = any(r.needs_human for r in results)
    if needs_human:
        if len(approvers) < quorum:
            results.append(_fail("approvers.available", Effect.DENY,
                                 f"{quorum} approver(s) needed but only {len(approvers)} eligible "
                                 f"(requester and target cannot approve)."))
        else:
            results.append(_ok("approvers.available", Effect.DENY,
                               f"{len(approvers)} eligible approver(s) for a quorum of {quorum}."))
    if any(r.blocks for r in results):
        outcome = Outcome.DENY
    elif any(r.needs_human for r in results):
        outcome = Outcome.NEEDS_APPROVAL
    else:
        outcome = Outcome.AUTO_APPROVE
    flags = []
    if any(r.rule == "timing.business_hours" and not r.passed for r in results):
        flags.append("unusual_timing")
    if any(r.rule == "freeze" for r in results):
        flags.append("change_freeze")
    if request.for_someone_else:
        flags.append("for_someone_else")
    if any(r.rule.startswith("risk.") and not r.passed and r.effect is not Effect.INFO for r in results):
        flags.append("identity_risk")
    hints = tuple(r.reason for r in results if r.effect is Effect.INFO and not r.passed)
    if hints:
        flags.append("over_privileged")
    granted = None if outcome is Outcome.DENY else request.duration
    return Decision(
        outcome=outcome,
        entitlement=entitlement.id,
        entitlement_name=entitlement.assignable().describe(),
        role_definition_id=entitlement.role_template_id or "",
        target=entitlement.assignable(),
        lane=lane.id if lane else None,
        rules=tuple(results),
        max_duration=c.max_duration,
        granted_duration=granted,
        approvers=tuple(approvers) if outcome is Outcome.NEEDS_APPROVAL else (),
        quorum=quorum if outcome is Outcome.NEEDS_APPROVAL else 0,
        escalate_after=policy.approval.escalate_after if outcome is Outcome.NEEDS_APPROVAL else None,
        expire_after=policy.approval.expire_after if outcome is Outcome.NEEDS_APPROVAL else None,
        flags=tuple(flags),
        hints=hints,
        policy_digest=digest,
        evaluated_at=now,
    )


def evaluate_bundle(request: GrantRequest, facts: Facts, now: datetime, policy: PolicyDocument,
                    digest: str) -> Decision:
    """Each member decided as if asked for alone (its own lane, approvers and limits), then the strictest of them
    (policies.bundles)."""
    bundle = policy.bundles[request.entitlement]
    members = [evaluate(request.model_copy(update={"entitlement": member}), facts, now, policy)
               for member in bundle.entitlements]
    return combine(request.entitlement, policy.bundle_name(request.entitlement), members, request.duration,
                   now=now, policy_digest=digest, escalate_after=policy.approval.escalate_after,
                   expire_after=policy.approval.expire_after)


def eligible_bundles(policy: PolicyDocument, requester: Principal) -> list[str]:
    """The bundles whose every member this requester may ask for (the intake form offers only those)."""
    mine = {e.id for e in eligible_entitlements(policy, requester)}
    return [key for key, bundle in policy.bundles.items() if set(bundle.entitlements) <= mine]


def longest_for(policy: PolicyDocument, requester: Principal, entitlement: Entitlement) -> timedelta | None:
    """The longest grant this requester can get for the entitlement: the standard path if they are eligible for
    it, else the longest lane they are in (a break-glass-only member gets the lane's limit, not the role's)."""
    paths = [entitlement.max_duration] if _in_groups(requester, policy, entitlement.eligible) else []
    paths += [lane.max_duration for lane in entitlement.lanes if _in_groups(requester, policy, lane.eligible)]
    return max(paths) if paths else None


def eligible_entitlements(policy: PolicyDocument, requester: Principal) -> list[Entitlement]:
    """What this requester may ask for at all (standard path or any lane); used to fill the intake form."""
    out = []
    for ent in policy.entitlements:
        keys = list(ent.eligible) + [k for lane in ent.lanes for k in lane.eligible]
        if _in_groups(requester, policy, keys):
            out.append(ent)
    return out

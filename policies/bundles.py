"""A bundle's decision: the strictest of its members' decisions.

Each member is decided by the engine exactly as if it were asked for alone; this module only folds those decisions
into one, so a bundle can never be easier to get than its hardest member:
- deny if any member is denied;
- an approval if any member needs one, from the union of the approvers of the members that need one, with the
  largest quorum among them (one approval card and one click then cover every member);
- the smallest maximum duration.
Pure: decisions in, a decision out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from policies.model import Approver, Decision, Effect, Outcome, RuleResult


def merge_approvers(groups: Sequence[Sequence[Approver]]) -> tuple[Approver, ...]:
    """Everyone who may approve any member, each once. A person who may decide one member at once decides the
    bundle at once (as resolve_approvers does for someone who is a backup in one group and a member of another)."""
    out: dict[str, Approver] = {}
    for approvers in groups:
        for a in approvers:
            seen = out.get(a.object_id)
            if seen is None:
                out[a.object_id] = a
                continue
            out[a.object_id] = seen.model_copy(update={
                "notify_first": seen.notify_first or a.notify_first,
                "backup": seen.backup and a.backup,
                "after_escalation": seen.after_escalation and a.after_escalation,
                "name": seen.name or a.name,
            })
    return tuple(out.values())


def _unique(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def combine(bundle_id: str, bundle_name: str, members: Sequence[Decision], duration: timedelta, *,
            now: datetime, policy_digest: str, escalate_after: timedelta | None,
            expire_after: timedelta | None) -> Decision:
    """The bundle's decision from its members' (in the bundle's order)."""
    if not members:
        raise ValueError("a bundle has at least one member")
    rules: list[RuleResult] = [RuleResult(rule="bundle.known", passed=True, effect=Effect.DENY,
                                          reason=f"Bundle {bundle_name}: " + ", ".join(
                                              m.entitlement_name or m.entitlement for m in members) + ".")]
    for member in members:
        for rule in member.rules:
            if rule not in rules:  # the same sentence once (justification, ticket and timing apply to every member)
                rules.append(rule)
    asking = [m for m in members if m.outcome is Outcome.NEEDS_APPROVAL]
    approvers = merge_approvers([m.approvers for m in asking])
    quorum = max((m.quorum for m in asking), default=0)
    if asking:
        if len(approvers) < quorum:
            rules.append(RuleResult(rule="approvers.available", passed=False, effect=Effect.DENY,
                                    reason=f"{quorum} approver(s) needed for the bundle but only {len(approvers)} "
                                           f"eligible (requester and target cannot approve)."))
        else:
            rules.append(RuleResult(rule="approvers.available", passed=True, effect=Effect.DENY,
                                    reason=f"{len(approvers)} eligible approver(s) for the bundle's quorum of "
                                           f"{quorum}."))
    if any(m.outcome is Outcome.DENY for m in members) or any(r.blocks for r in rules):
        outcome = Outcome.DENY
    elif asking:
        outcome = Outcome.NEEDS_APPROVAL
    else:
        outcome = Outcome.AUTO_APPROVE
    pending = outcome is Outcome.NEEDS_APPROVAL
    return Decision(
        outcome=outcome,
        entitlement=bundle_id,
        entitlement_name=bundle_name,
        rules=tuple(rules),
        max_duration=min(m.max_duration for m in members),
        granted_duration=None if outcome is Outcome.DENY else duration,
        approvers=approvers if pending else (),
        quorum=quorum if pending else 0,
        escalate_after=escalate_after if pending else None,
        expire_after=expire_after if pending else None,
        flags=_unique([f for m in members for f in m.flags]),
        hints=_unique([h for m in members for h in m.hints]),
        policy_digest=policy_digest,
        evaluated_at=now,
        members=tuple(members),
    )

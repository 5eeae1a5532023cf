"""What a new version of the policy loosens for tier-0 roles, compared with the version it replaces.

Counted as weakening, for every entitlement of a tier-0 role template (`policies/tier0.py`), its lanes included:
a tier-0 entitlement or lane added; approval required → none; quorum lowered; max_duration raised; more people
eligible, allowed to request for others or allowed to approve (groups added, a group key pointed at another Entra
group, approver-group members or backups added, backups allowed to decide before escalation);
target_must_be_eligible switched off; a lane no longer requiring an incident, or approving by rule under looser
conditions (a condition dropped, a less urgent priority accepted, or rule approval added); a bundle newly letting an
approver group approve a tier-0 member it cannot approve on its own. And for everyone: the denylist shrunk. Not
counted: removals and tightenings, and changes to non-tier-0 roles, freezes, business hours and justification rules
(they are audited as a change all the same).
"""

from __future__ import annotations

from collections.abc import Iterable

from policies.document import Entitlement, Lane, PolicyDocument, bundle_widenings
from policies.durations import format_duration
from policies.tier0 import tier0_name


def _groups(policy: PolicyDocument, keys: Iterable[str]) -> dict[str, str]:
    """Entra object id -> display name of the groups the keys name."""
    return {policy.groups[k].object_id: policy.groups[k].display_name for k in keys if k in policy.groups}


def _approvers(policy: PolicyDocument, keys: Iterable[str]) -> dict[str, str]:
    """Object id -> name of everyone who may decide, with "(backup, at once)" for backups who need no escalation."""
    out: dict[str, str] = {}
    for key in keys:
        group = policy.approver_groups.get(key)
        if group is None:
            continue
        for m in group.members:
            out[m.object_id] = m.name or m.object_id
        for b in group.backup:
            out.setdefault(b.object_id, b.name or b.object_id)
            if group.backup_may_approve == "always":
                out[f"{b.object_id}:now"] = f"{b.name or b.object_id} (backup, at once)"
    return out


def _widened(what: str, before: dict[str, str], after: dict[str, str]) -> list[str]:
    added = sorted(name for oid, name in after.items() if oid not in before)
    return [f"{what} widened (+{', '.join(added)})"] if added else []


def _approver_keys(policy: PolicyDocument, ent: Entitlement, lane: Lane | None = None) -> list[str]:
    return (lane.approvers if lane and lane.approvers else ent.approvers) or policy.fallback_approvers


def _lane(old: PolicyDocument, new: PolicyDocument, was_ent: Entitlement, ent: Entitlement, was: Lane,
          lane: Lane) -> list[str]:
    out: list[str] = []
    if lane.max_duration > was.max_duration:
        out.append(f"max_duration {format_duration(was.max_duration)} → {format_duration(lane.max_duration)}")
    if was.requires_incident and not lane.requires_incident:
        out.append("no longer requires an incident")
    before, after = was.auto_approve_when, lane.auto_approve_when
    if after is not None and before is None:
        out.append("now approves by rule")
    elif after is not None and before is not None:
        if before.max_priority is not None and (after.max_priority is None or after.max_priority > before.max_priority):
            looser = f"up to P{after.max_priority}" if after.max_priority is not None else "at any priority"
            out.append(f"approves by rule {looser} (was P{before.max_priority})")
        if before.on_call and not after.on_call:
            out.append("approves by rule without an on-call check")
    was_quorum, quorum = was.quorum or was_ent.quorum, lane.quorum or ent.quorum
    if quorum < was_quorum:
        out.append(f"quorum {was_quorum} → {quorum}")
    out += _widened("eligible groups", _groups(old, was.eligible), _groups(new, lane.eligible))
    out += _widened("approvers", _approvers(old, _approver_keys(old, was_ent, was)),
                    _approvers(new, _approver_keys(new, ent, lane)))
    return [f"lane {lane.id!r} {change}" for change in out]


def _entitlement(old: PolicyDocument, new: PolicyDocument, was: Entitlement, ent: Entitlement) -> list[str]:
    out: list[str] = []
    if was.approval == "required" and ent.approval == "none":
        out.append("approval required → none")
    if ent.quorum < was.quorum:
        out.append(f"quorum {was.quorum} → {ent.quorum}")
    if ent.max_duration > was.max_duration:
        out.append(f"max_duration {format_duration(was.max_duration)} → {format_duration(ent.max_duration)}")
    out += _widened("eligible groups", _groups(old, was.eligible), _groups(new, ent.eligible))
    out += _widened("request_for_others groups", _groups(old, was.request_for_others),
                    _groups(new, ent.request_for_others))
    if was.target_must_be_eligible and not ent.target_must_be_eligible and ent.request_for_others:
        out.append("target_must_be_eligible true → false")
    out += _widened("approvers", _approvers(old, _approver_keys(old, was)), _approvers(new, _approver_keys(new, ent)))
    lanes = {lane.id: lane for lane in was.lanes}
    for lane in ent.lanes:
        if lane.id not in lanes:
            out.append(f"lane {lane.id!r} added")
        else:
            out += _lane(old, new, was, ent, lanes[lane.id], lane)
    return out


def tier0_weakenings(old: PolicyDocument, new: PolicyDocument) -> list[str]:
    """Each way `new` is looser than `old` for a tier-0 role, in words; empty when nothing tier-0 got weaker."""
    out: list[str] = []
    for ent in new.entitlements:
        name = tier0_name(ent.role_template_id)
        if name is None:
            continue
        was = old.entitlement_for_role(ent.role_template_id)
        if was is None:
            out.append(f"{name}: now requestable (entitlement {ent.id!r} added)")
            continue
        out += [f"{name}: {change}" for change in _entitlement(old, new, was, ent)]
    before = set(bundle_widenings(old))
    out += [f"bundle {key!r}: {message}" for key, message in bundle_widenings(new) if (key, message) not in before]
    dropped = sorted(set(old.denylist.object_ids) - set(new.denylist.object_ids)) + sorted(
        set(old.denylist.upn_patterns) - set(new.denylist.upn_patterns))
    if dropped:
        out.append(f"denylist shrunk (-{', -'.join(dropped)})")
    return out

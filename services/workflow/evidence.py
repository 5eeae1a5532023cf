"""The evidence pack attached to the ticket: what was asked, why it was allowed, who approved, what Graph did,
and the audit events (with their hashes, so the pack can be checked against the log later)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from policies.durations import format_duration
from policies.record import RequestRecord
from services.state.audit import AuditEvent
from services.workflow.activity import activity_lines
from services.workflow.markdown import md_fence, md_inline


def evidence(record: RequestRecord, events: list[AuditEvent], generated_at: datetime,
             checkpoint: dict[str, Any] | None = None, activity: dict[str, Any] | None = None) -> dict[str, Any]:
    """`checkpoint`: the audit log's head, signed, when the pack was made. Kept on the ticket, outside Redis, it is
    an anchor `audit verify --anchor <pack.json>` checks: the log must still reach it. `activity`: what the holder
    did while elevated (services.workflow.activity), once a pass collected it."""
    r, d, g = record.request, record.decision, record.grant
    return {
        "schema": "breakglass.evidence/1",
        "generated_at": generated_at.isoformat(),
        "request": {"id": record.id, "state": record.state.value, "requester": r.requester,
                    "requester_name": record.requester_name, "target": r.target, "target_name": record.target_name,
                    "target_upn": record.target_upn, "entitlement": r.entitlement, "role": d.entitlement_name,
                    "role_definition_id": d.role_definition_id, "lane": d.lane,
                    **({"group_id": d.target.object_id, "access": d.target.scope}
                       if d.target is not None and d.target.is_group else {}),
                    "duration_seconds": int(r.duration.total_seconds()), "justification": r.justification,
                    "ticket": r.ticket, "source": r.source, "created_at": r.created_at.isoformat()},
        "decision": {"outcome": d.outcome.value, "reasons": d.reasons, "flags": list(d.flags), "hints": list(d.hints),
                     "policy_digest": d.policy_digest, "quorum": d.quorum,
                     "rules": [{"rule": x.rule, "passed": x.passed, "effect": x.effect.value, "reason": x.reason}
                               for x in d.rules]},
        "approvals": [{"approver": a.approver, "name": a.approver_name, "verdict": a.verdict.value,
                       "reason": a.reason, "at": a.at.isoformat(), "request_version": a.request_version}
                      for a in record.approvals],
        "grant": None if g is None else {
            "mode": g.mode.value, "principal_id": g.principal_id, "role_definition_id": g.role_definition_id,
            **({"group_id": g.assignable.object_id, "access": g.assignable.scope} if g.assignable.is_group else {}),
            "scope": g.scope, "generation": g.generation, "starts_at": g.starts_at.isoformat(),
            "ends_at": g.ends_at.isoformat(), "assignment_id": g.assignment_id,
            "schedule_request_id": g.schedule_request_id, "adopted": g.adopted,
            "entra_ends_at": g.entra_ends_at.isoformat() if g.entra_ends_at else None},
        **({"members": _members(record)} if d.is_bundle else {}),
        "transitions": [t.model_dump(mode="json") for t in record.history],
        "end_reason": record.end_reason,
        "affected_account": record.affected.model_dump(mode="json") if record.affected else None,
        "follow_up": [{"step": s.key, "label": s.label, "status": s.status, "detail": s.detail,
                       "due_at": s.due_at.isoformat(), "attempt": s.attempt,
                       "finished_at": s.finished_at.isoformat() if s.finished_at else None}
                      for s in record.steps if s.kind != "plan"],
        "activity": activity,
        "audit": [{"seq": e.seq, "at": e.at, "event": e.event, "actor": e.actor, "hash": e.hash} for e in events],
        "checkpoint": checkpoint,
    }


def _members(record: RequestRecord) -> list[dict[str, Any]]:
    """A bundle's members: each one's own decision and, once granted, its own assignment."""
    # Matched on what each member puts in the directory: a group member has no role id, and two groups (or one
    # group's membership and ownership) in one bundle must not take each other's assignment.
    grants = {(g.assignable.ledger_role, g.assignable.access): g for g in record.grants}
    out = []
    for member in record.decision.members:
        target = member.assignable()
        g = grants.get((target.ledger_role, target.access))
        out.append({"entitlement": member.entitlement, "role": member.entitlement_name,
                    "role_definition_id": member.role_definition_id, "lane": member.lane,
                    **({"group_id": target.object_id, "access": target.access} if target.is_group else {}),
                    "outcome": member.outcome.value, "reasons": member.reasons,
                    "assignment_id": g.assignment_id if g else None, "generation": g.generation if g else None,
                    "adopted": g.adopted if g else None})
    return out


def evidence_json(pack: dict[str, Any]) -> bytes:
    return json.dumps(pack, indent=2, ensure_ascii=False).encode()


def evidence_markdown(pack: dict[str, Any]) -> bytes:
    req, dec, grant = pack["request"], pack["decision"], pack["grant"]
    m = md_inline
    lines = [
        f"# breakglass evidence — {req['id']}",
        "",
        (f"- **Group:** {m(req['role'])} (`{req['group_id']}`, {req['access']})" if req.get("group_id") else
         f"- **Role:** {m(req['role'])} (`{req['role_definition_id']}`)")
        + (f", lane `{req['lane']}`" if req["lane"] else ""),
        f"- **Requested by:** {m(req['requester_name'])} (`{req['requester']}`)",
        f"- **For:** {m(req['target_name'])} (`{req['target']}`)",
        f"- **Duration asked:** {format_duration_seconds(req['duration_seconds'])}",
        f"- **Ticket:** {m(req['ticket'] or '-')}",
        "- **Justification** (as typed, verbatim):",
        "",
        *md_fence(req["justification"] or ""),
        "",
        f"- **Decision:** {dec['outcome']} (policy {dec['policy_digest']})",
    ]
    for reason in dec["reasons"]:
        lines.append(f"  - {m(reason)}")
    lines.append("")
    lines.append("## Approvals")
    lines.extend([f"- {a['verdict']} by {m(a['name'] or a['approver'])} at {a['at']}" + (
                  (f", comment: {m(a['reason'])}" if a["verdict"] == "approve" else f": {m(a['reason'])}")
                  if a["reason"] else "")
                  for a in pack["approvals"]] or ["- approved by rule"])
    lines += ["", "## Grant"]
    if grant:
        lines += [f"- **Mode:** {grant['mode']}", f"- **Start:** {grant['starts_at']}",
                  f"- **End:** {grant['ends_at']}", f"- **Assignment:** `{grant['assignment_id']}`"]
        if grant.get("entra_ends_at"):
            lines.append(f"- **End in Entra (read back):** {grant['entra_ends_at']}")
    else:
        lines.append("- none")
    for member in pack.get("members") or []:  # a bundle: every member, with its own assignment
        what = (f"`{member['group_id']}`, {member['access']}" if member.get("group_id") else
                f"`{member['role_definition_id']}`")
        lines.append(f"- **Member:** {m(member['role'])} ({what}): {member['outcome']}"
                     + (f", assignment `{member['assignment_id']}`" if member["assignment_id"] else ""))
    if pack.get("affected_account"):
        a = pack["affected_account"]
        lines += ["", f"- **Affected account:** {md_inline(a.get('name') or a.get('upn'))} (`{a['object_id']}`, "
                      f"from the {a.get('source')})"]
    if pack.get("follow_up"):
        lines += ["", "## Follow-up steps", "", "| step | status | detail |", "|---|---|---|"]
        lines += [f"| {md_inline(s['label'])} | {s['status']} | {md_inline(s['detail'] or '-')} |"
                  for s in pack["follow_up"]]
    if pack.get("activity") or req["state"] in {"expired", "revoked"}:
        lines += ["", *activity_lines(pack.get("activity"))]
    lines += ["", "## Audit trail", "", "| seq | time | event | actor | hash |", "|---|---|---|---|---|"]
    lines += [f"| {e['seq']} | {e['at']} | {e['event']} | {m(e['actor'])} | `{e['hash'][:16]}…` |"
              for e in pack["audit"]]
    cp = pack.get("checkpoint")
    if cp:
        lines += ["", "## Audit checkpoint", "",
                  f"The audit log reached seq {cp['seq']} (head `{cp['hash']}`) at {cp['at']}; signature "
                  f"`{cp['mac']}`. `breakglass audit verify --anchor PACK.json` (this pack's .json file) fails "
                  "if the log no longer reaches it."]
    return ("\n".join(lines) + "\n").encode()


def format_duration_seconds(seconds: int) -> str:
    from datetime import timedelta
    return format_duration(timedelta(seconds=seconds))

"""The evidence pack attached to the ticket: what was asked, why it was allowed, who approved, what Graph did,
and the audit events (with their hashes, so the pack can be checked against the log later)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from cards.text import plain_line
from policies.durations import format_duration
from policies.record import RequestRecord
from services.state.audit import AuditEvent


def evidence(record: RequestRecord, events: list[AuditEvent], generated_at: datetime,
             checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    """`checkpoint`: the audit log's head, signed, when the pack was made. Kept on the ticket, outside Redis, it is
    an anchor `audit verify --anchor <pack.json>` checks: the log must still reach it."""
    r, d, g = record.request, record.decision, record.grant
    return {
        "schema": "breakglass.evidence/1",
        "generated_at": generated_at.isoformat(),
        "request": {"id": record.id, "state": record.state.value, "requester": r.requester,
                    "requester_name": record.requester_name, "target": r.target, "target_name": record.target_name,
                    "target_upn": record.target_upn, "entitlement": r.entitlement, "role": d.entitlement_name,
                    "role_definition_id": d.role_definition_id, "lane": d.lane,
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
            "scope": g.scope, "generation": g.generation, "starts_at": g.starts_at.isoformat(),
            "ends_at": g.ends_at.isoformat(), "assignment_id": g.assignment_id,
            "schedule_request_id": g.schedule_request_id, "adopted": g.adopted,
            "entra_ends_at": g.entra_ends_at.isoformat() if g.entra_ends_at else None},
        "transitions": [t.model_dump(mode="json") for t in record.history],
        "end_reason": record.end_reason,
        "audit": [{"seq": e.seq, "at": e.at, "event": e.event, "actor": e.actor, "hash": e.hash} for e in events],
        "checkpoint": checkpoint,
    }


def evidence_json(pack: dict[str, Any]) -> bytes:
    return json.dumps(pack, indent=2, ensure_ascii=False).encode()


_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character


def md_inline(value: object) -> str:
    """A value inside a Markdown line: one line, links defanged, every ASCII punctuation character backslash-escaped
    (CommonMark lets any of them be escaped), so no heading, list, link, image, table cell or HTML can form."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", plain_line(str(value or ""), 2000))


def md_fence(text: str) -> list[str]:
    """Text kept verbatim in a fenced block whose fence is longer than any run of backticks inside it, so nothing
    in it renders and nothing in it can close the block early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}text", *text.split("\n"), fence]


def evidence_markdown(pack: dict[str, Any]) -> bytes:
    req, dec, grant = pack["request"], pack["decision"], pack["grant"]
    m = md_inline
    lines = [
        f"# breakglass evidence — {req['id']}",
        "",
        f"- **Role:** {m(req['role'])} (`{req['role_definition_id']}`)"
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
    lines.extend([f"- {a['verdict']} by {m(a['name'] or a['approver'])} at {a['at']}" + (f": {m(a['reason'])}"
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


def md_time(value: str) -> str:
    """A log record's time as "2026-11-23 09:02:00 UTC" (Graph sends seven fractional digits)."""
    try:
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00")).strftime(
            "%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return md_inline(value)


def activity_lines(activity: dict[str, Any] | None) -> list[str]:
    """The "what was done while elevated" section: one table per log (time, activity, target, result), or the
    plain reason a log could not be read."""
    from services.workflow.activity import directory_rows, sign_in_rows

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


def format_duration_seconds(seconds: int) -> str:
    from datetime import timedelta
    return format_duration(timedelta(seconds=seconds))

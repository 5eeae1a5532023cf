"""The emergency-account cards: the post-use checklist posted to the alerts channel (one row per item; a Done
button until someone allowed ticks it, then who did it and when) and the alert's facts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cards import layout as lay
from cards.builder import Element, action_set, columns, container, execute, fact, fact_set, render, text
from cards.verbs import Verb, checklist_data
from policies.emergency import CHECKLIST, EmergencyIncident

SHOWN_SIGN_INS = 5
SHOWN_ACTIONS = 8


def checklist_card(incident: EmergencyIncident, now: datetime, reviewers: str = "") -> dict[str, Any]:
    complete = incident.complete
    latest = incident.sign_ins[-1]
    body: list[Element] = [
        lay.header(f"Emergency account sign-in: {incident.account_label}",
                   kicker=f"breakglass incident {incident.id}", badge="reviewed" if complete else "open",
                   badge_color="good" if complete else "attention"),
        text(f"{len(incident.sign_ins)} sign-in(s) since {lay.stamp(incident.first_at)}. The latest:",
             spacing="small"),
        fact_set([fact(k, v) for k, v in latest.facts()]),
    ]
    if len(incident.sign_ins) > 1:
        body.append(text("Earlier sign-ins in this burst", bold=True, separator=True))
        body += lay.bullets([f"{s.at:%H:%M:%S} UTC {s.result} from {s.ip or 'unknown IP'} ({s.app or 'unknown app'})"
                             for s in incident.sign_ins[-SHOWN_SIGN_INS - 1:-1]])
    ticket = incident.ticket
    body.append(fact_set([
        fact("Incident", f"{ticket.number} ({ticket.system}, P{ticket.priority or 1})" if ticket
             else "not opened yet (retrying)"),
        fact("Account", f"{incident.account_name or incident.account_upn} ({incident.account})"),
    ], spacing="medium"))
    body.append(text("Actions by the account since the sign-in (directory audit log)", bold=True, separator=True))
    if incident.actions_checked_at is None:
        body.append(text("Not read yet: the audit log arrives a few minutes late.", subtle=True))
    elif not incident.actions_total:
        body.append(text(f"None logged as of {lay.clock(incident.actions_checked_at, now)}.", subtle=True))
    else:
        body.append(text(f"{incident.actions_total} as of {lay.clock(incident.actions_checked_at, now)}; each is "
                         f"listed in {ticket.number if ticket else 'the incident'}.", subtle=True))
        body += lay.bullets([a.line() for a in incident.actions[-SHOWN_ACTIONS:]])
    body.append(text("Post-use checklist" + (f" (ticked by members of {reviewers})" if reviewers else ""),
                     bold=True, separator=True))
    for item, title in CHECKLIST:
        body.append(_row(incident, item, title, now))
    if complete and incident.completed_at is not None:
        body.append(text(f"Checklist complete {lay.stamp(incident.completed_at)}; the incident got its closing note.",
                         color="good", separator=True))
    return render([container(body)], fallback_text=f"Emergency account sign-in: {incident.account_label}")


def _row(incident: EmergencyIncident, item: str, title: str, now: datetime) -> Element:
    tick = incident.ticked(item)
    if tick is not None:
        done = f"✔ {title}: {tick.by_name or tick.by}, {lay.stamp(tick.at)}"
        return columns(([text(done, color="good")], "stretch"), spacing="small")
    return columns(([text(f"☐ {title}")], "stretch"),
                   ([action_set([execute("Done", Verb.EMERGENCY_TICK, checklist_data(incident.id, item))])], "auto"),
                   spacing="small")


def alert_facts(incident: EmergencyIncident) -> list[tuple[str, str]]:
    latest = incident.sign_ins[-1]
    ticket = incident.ticket
    return [("Account", f"{incident.account_label} ({incident.account})"), *latest.facts()[:-1],
            ("Incident", f"{ticket.number} ({ticket.system})" if ticket else "could not be opened yet; retrying"),
            ("breakglass incident", incident.id),
            ("Do", "check who used the account and why; work the post-use checklist in the alerts channel")]

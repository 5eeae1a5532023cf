"""`breakglass demo`: the three seed scenarios, played headlessly through the real HTTP endpoint exactly as Teams
would send them, against an ephemeral dev stack whose clock runs 60x faster by default (30 minutes pass in 30 seconds).

1. Conditional Access misfire: an Identity On-Call member who is not on shift asks for Global Administrator for
   30 minutes on the P1 incident; the on-call identity lead approves in Teams; the grant, the receipt on the
   ticket and the revocation at expiry follow.
2. Security incident: the SecOps lead asks Security Administrator for the on-call responder during a P1 and names
   the compromised account; it is approved by rule and granted, a runbook step revokes the compromised account's
   sessions right after the grant, and at expiry the role is removed, the responder's own sessions are revoked and
   what the responder did while elevated is collected from Entra's audit log.
3. An approver who never opened the bot: an IT administrator asks Security Administrator; Priya Natarajan, a
   security lead in no team with the bot, gets the card anyway (breakglass installs its Teams app for her through
   Graph and writes to the new chat), approves from there, and the grant ends at expiry.
4. The emergency account is used: breakglass01 signs in (a record appears in Entra's sign-in log); the watch opens
   a P1 in ServiceNow, posts the critical alert and the post-use checklist to the alerts channel and tells security;
   Morgan Ellis and Jordan Reyes (Security Operations) tick the four items; the incident gets its closing note.

`breakglass demo --bundle` plays one bundle request instead: Riley Chen asks for the Incident responder bundle
(Conditional Access, User and Helpdesk Administrator) in her own words; the intake card comes back with the bundle
chosen, one approval card and one click by Dana Whitfield cover every member, each member's activation is logged on
its own, one receipt names them all, and they end together at expiry.
"""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from cards.inspect import execute_data
from cards.inspect import inputs as card_inputs
from policies.record import RequestRecord
from services.composition import Runtime
from services.errors import ServiceError
from services.ops.devstack import APPROVALS_CHANNEL, DEMO_TENANT, DevConfig, DevStack, free_port, next_monday_10_berlin
from services.settings import Settings
from services.state.audit import AuditEvent
from services.state.policy_source import read_policy

BOT = {"id": "28:bbbbbbbb-0000-0000-0000-000000000001", "name": "breakglass"}
PEOPLE = {
    "riley": ("cccccccc-0000-0000-0000-000000000001", "Riley Chen"),
    "dana": ("cccccccc-0000-0000-0000-000000000002", "Dana Whitfield"),
    "sam": ("cccccccc-0000-0000-0000-000000000003", "Sam Okafor"),
    "bo": ("cccccccc-0000-0000-0000-000000000004", "Bo Achterberg"),
    "jordan": ("cccccccc-0000-0000-0000-000000000005", "Jordan Reyes"),
    "morgan": ("cccccccc-0000-0000-0000-000000000006", "Morgan Ellis"),
    "kai": ("cccccccc-0000-0000-0000-000000000007", "Kai Lindqvist"),
    "priya": ("cccccccc-0000-0000-0000-000000000011", "Priya Natarajan"),
    "breakglass01": ("cccccccc-0000-0000-0000-000000000009", "Break Glass 01"),
    "alex": ("cccccccc-0000-0000-0000-000000000008", "Alex Novak"),
}
SPEED = 60.0
_ids = itertools.count(int(time.time() * 1000))

STEPS = {
    "request.submitted": "requested",
    "request.decided": "decided",
    "teams.app_installed": "app installed for",
    "approval.requested": "sent for approval",
    "request.approved": "approved",
    "grant.requested": "grant requested in Graph",
    "grant.activated": "granted",
    "receipt.posted": "receipt",
    "grant.revoke_requested": "revocation requested",
    "grant.expired": "revoked at expiry",
    "grant.revoked": "revoked",
    "runbook.step_completed": "runbook step",
    "runbook.step_refused": "runbook step refused",
    "runbook.step_failed": "runbook step failed",
    "grant.sessions_revoked": "sessions revoked",
    "grant.sessions_revoke_failed": "sessions NOT revoked",
    "grant.activity_collected": "activity collected",
}
EMERGENCY_STEPS = {
    "emergency.sign_in_detected": "sign-in detected",
    "emergency.incident_opened": "P1 incident opened",
    "alert.raised": "alert posted",
    "emergency.person_told": "told personally",
    "emergency.checklist_ticked": "checklist ticked",
    "emergency.incident_closed": "incident closed",
}


class DemoError(ServiceError):
    pass


@dataclass
class Teams:
    """Sends activities to the bot as Teams would, and reads what the bot sent back from the Bot Connector
    emulator's control API."""

    bot_url: str
    connector_url: str

    def _activity(self, alias: str, kind: str, conversation: str | None = None, **fields: Any) -> dict[str, Any]:
        oid, name = PEOPLE[alias]
        return {"type": kind, "id": str(next(_ids)), "channelId": "msteams", "serviceUrl": self.connector_url + "/",
                "from": {"id": f"29:{alias}", "name": name, "aadObjectId": oid}, "recipient": BOT,
                "conversation": {"conversationType": "personal", "tenantId": DEMO_TENANT,
                                 "id": conversation or f"a:demo-{alias}"},
                "channelData": {"tenant": {"id": DEMO_TENANT}}, "locale": "en-US", **fields}

    def post(self, activity: dict[str, Any]) -> Any:
        response = requests.post(self.bot_url + "/api/messages", json=activity, timeout=30)
        if response.status_code >= 400:
            raise DemoError(f"the bot answered {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    def install(self) -> None:
        activity = self._activity("dana", "conversationUpdate", membersAdded=[BOT])
        activity["conversation"] = {"conversationType": "channel", "tenantId": DEMO_TENANT, "id": APPROVALS_CHANNEL}
        activity["channelData"] = {"tenant": {"id": DEMO_TENANT}, "eventType": "teamMemberAdded",
                                   "team": {"id": APPROVALS_CHANNEL, "name": "Identity Ops"},
                                   "settings": {"selectedChannel": {"id": APPROVALS_CHANNEL}}}
        self.post(activity)

    def say(self, alias: str, text: str) -> dict[str, Any]:
        self.post(self._activity(alias, "message", text=text, textFormat="plain"))
        return self.wait_card(lambda a, c: a["conversationId"] == f"a:demo-{alias}" and "draftId" in json.dumps(c))

    def click(self, alias: str, verb: str, data: dict[str, Any], reply_to: str,
              conversation: str | None = None, *, channel: bool = False) -> dict[str, Any]:
        value = {"action": {"type": "Action.Execute", "verb": verb, "data": data}, "trigger": "manual"}
        activity = self._activity(alias, "invoke", conversation, name="adaptiveCard/action", value=value,
                                  replyToId=reply_to)
        if channel:  # a card in a channel thread, not the person's own chat
            activity["conversation"]["conversationType"] = "channel"
        body = self.post(activity)
        return body["value"] if isinstance(body, dict) and body.get("statusCode") == 200 else {}

    def activities(self) -> list[dict[str, Any]]:
        state = requests.get(self.connector_url + "/_emulator/state", timeout=10).json()
        out = []
        for conversation in state["conversations"]:
            for record in conversation["activities"]:
                out.append({"conversationId": conversation["id"], "members": conversation.get("members", []),
                            **record})
        return out

    def wait_card(self, match: Callable[[dict[str, Any], dict[str, Any]], bool],
                  timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in reversed(self.activities()):
                for attachment in record["current"].get("attachments") or []:
                    card = attachment.get("content") or {}
                    if match(record, card):
                        return {"activity": record, "card": card}
            time.sleep(0.2)
        raise DemoError("the bot did not send the expected card in time")


def button(card: dict[str, Any], verb: str) -> dict[str, Any]:
    try:
        return execute_data(card, verb)
    except KeyError:
        raise DemoError(f"the card has no {verb} button") from None


class Demo:
    def __init__(self, stack: DevStack, out: Any = sys.stdout, speed: float = SPEED):
        self.stack = stack
        self.out = out
        self.speed = speed
        settings = Settings(_env_file=None, **{  # type: ignore[arg-type]
            "env": "development", "redis_url": stack.env["REDIS_URL"], "data_dir": stack.data,
            "audit_hmac_key": stack.env["BREAKGLASS_AUDIT_HMAC_KEY"],
            "clock_offset_s": float(stack.env["BREAKGLASS_CLOCK_OFFSET"]), "clock_scale": speed,
            "clock_anchor": float(stack.env["BREAKGLASS_CLOCK_ANCHOR"])})
        self.runtime = Runtime(settings)
        self.teams = Teams(stack.bot_url, stack.urls["botconnector"])

    def _real(self, product_seconds: float) -> str:
        return f"{product_seconds / self.speed:g} s"

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def progress(self, text: str) -> None:
        print(f"  … {text}", file=self.out, flush=True)

    def wait_state(self, request_id: str, states: set[str], timeout: float = 90) -> RequestRecord:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.runtime.store.get(request_id)
            if record is not None and record.state.value in states:
                return record
            time.sleep(0.2)
        raise DemoError(f"{request_id} did not reach {sorted(states)} in time")

    def dana_approves(self, request_id: str, what: str) -> None:
        approval = self.teams.wait_card(lambda a, c: "29:dana" in a["members"] and request_id in json.dumps(c)
                                        and "request.approve" in json.dumps(c))
        self.progress(what)
        data = button(approval["card"], "request.approve")
        # Teams sends the click from the conversation the card is in, replying to that card (it is bound to it).
        self.teams.click("dana", "request.approve", data, approval["activity"]["id"],
                         conversation=approval["activity"]["conversationId"])

    def submit(self, alias: str, text: str, **changes: Any) -> RequestRecord:
        sent = self.teams.say(alias, text)
        card = sent["card"]
        values = {k: v for k, v in card_inputs(card).items() if v is not None}
        data = {**button(card, "request.submit"), **values, **changes}
        before = {r.id for r in self.runtime.store.by_requester(PEOPLE[alias][0], 50)}
        result = self.teams.click(alias, "request.submit", data, sent["activity"]["id"])
        created = [r for r in self.runtime.store.by_requester(PEOPLE[alias][0], 50) if r.id not in before]
        if not created:
            raise DemoError("the request was not accepted: " + json.dumps(result)[:400])
        return self.wait_state(created[0].id, {"pending_approval", "approved", "activating", "active"})

    def timeline(self, request_id: str) -> list[str]:
        events: list[AuditEvent] = self.runtime.audit.for_request(request_id)
        lines = []
        for ev in events:
            if ev.event not in STEPS:
                continue
            label = STEPS[ev.event]
            detail = self._detail(ev)
            lines.append(f"    {datetime.fromisoformat(ev.at):%H:%M:%S}  {label:<26} {detail}")
        return lines

    def _detail(self, ev: AuditEvent) -> str:
        d = ev.data
        if ev.event == "request.decided":
            reasons = "; ".join(d.get("reasons") or []) or "all rules passed"
            return f"{d.get('outcome')}: {reasons}"[:200]
        if ev.event == "request.approved":
            return f"by {PEOPLE_BY_ID.get(ev.actor, ev.actor)}"
        if ev.event == "grant.activated":
            member = f"{d['member']}: " if d.get("member") else ""  # a bundle's members are logged one by one
            return f"{member}{d.get('mode')} assignment until {d.get('ends_at', '')[11:19]}"
        if ev.event == "grant.requested" and d.get("member"):
            return str(d["member"])
        if ev.event == "receipt.posted":
            return f"{d.get('kind')}: {d.get('part')}"
        if ev.event in {"grant.expired", "grant.revoked"}:
            late = float(d.get("late_seconds") or 0)
            return (f"removed in Graph: {d.get('removed_in_graph')}, {late:.0f} s after expiry in demo time "
                    f"({late / self.speed:.2f} s real)")
        if ev.event == "approval.requested":
            return f"notified {', '.join(PEOPLE_BY_ID.get(n, n) for n in d.get('notified', []))}"
        if ev.event == "teams.app_installed":
            return (f"{PEOPLE_BY_ID.get(d.get('user', ''), d.get('user'))} ({d.get('outcome')}; "
                    f"1:1 chat {str(d.get('chat_id') or '')[:24]}…)")
        if ev.event.startswith("runbook.step_"):
            who = PEOPLE_BY_ID.get(d.get("user", ""), d.get("user") or d.get("endpoint", ""))
            return f"{d.get('step')}: {d.get('outcome') or d.get('reason') or d.get('error')} ({who})"[:200]
        if ev.event == "grant.sessions_revoked":
            who = PEOPLE_BY_ID.get(d.get("user", ""), d.get("user"))
            return f"{who}: refresh tokens and sessions ended after the role was removed (access tokens live on ≤ ~1 h)"
        if ev.event == "grant.sessions_revoke_failed":
            return f"{d.get('code')}: on-call alerted"
        if ev.event == "grant.activity_collected":
            return (f"pass {d.get('pass')}: {d.get('directory_actions')} directory actions, {d.get('sign_ins')} "
                    f"sign-ins{' (final)' if d.get('final') else ' so far'}")
        if ev.event == "request.submitted":
            return f"{d.get('entitlement')} for {d.get('duration', 0) // 60} min, ticket {d.get('ticket')}"
        return ""

    def scenario_one(self) -> str:
        policy = read_policy(self.runtime.settings.policy_file)
        now = self.runtime.clock.now()
        on_shift = policy.rotations["identity-oncall"].on_call(now).object_id
        requester = "kai" if on_shift == PEOPLE["sam"][0] else "sam"
        self.say("Scenario 1 — Conditional Access misfire locked out admins (P1 INC0012345 in ServiceNow)")
        self.say(f"  {PEOPLE[requester][1]} is in Identity On-Call but not on shift; asks in Teams:")
        text = "Need Global Admin for 30 minutes to fix the Conditional Access lockout, INC0012345"
        self.say(f'    "{text}"')
        record = self.submit(requester, text)
        self.progress(f"{record.id}: {record.decision.summary()}")
        self.dana_approves(record.id, "Dana Whitfield (on-call identity lead) clicks Approve on the card in Teams")
        self.wait_state(record.id, {"active"})
        self.progress(f"granted; waiting for the 30 minutes to pass ({self._real(1800)} at {self.speed:g}x)")
        self.wait_state(record.id, {"expired", "revoked"}, timeout=120)
        return record.id

    def scenario_two(self) -> str:
        self.say("Scenario 2 — security incident (P1 INC0012346): SecOps asks elevation for the on-call responder")
        text = "Security Admin for 30 minutes for the on-call responder to contain the token theft, INC0012346"
        self.say(f'    Morgan Ellis: "{text}"')
        self.say("    The compromised account: Alex Novak (alex@contoso.example), named on the form")
        record = self.submit("morgan", text, entitlement="security-admin", target="jordan@contoso.example",
                             duration="30", affected="alex@contoso.example")
        self.progress(f"{record.id}: {record.decision.summary()}")
        self.wait_state(record.id, {"active"})
        self._responder_works(record.id)
        self.progress("granted to Jordan Reyes; the runbook revokes Alex Novak's sessions now")
        self.wait_step(record.id, "rb-after_grant-contain-affected-account")
        self.progress(f"waiting for expiry ({self._real(1800)} at {self.speed:g}x); then Jordan's own sessions end "
                      "and what he did is collected")
        self.wait_state(record.id, {"expired", "revoked"}, timeout=120)
        self.wait_step(record.id, "sessions")
        self.wait_step(record.id, "activity-0")
        return record.id

    def wait_step(self, request_id: str, key: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.runtime.store.get(request_id)
            step = record.step(key) if record is not None else None
            if step is not None and not step.pending:
                return
            time.sleep(0.2)
        raise DemoError(f"{request_id}: the follow-up step {key} did not finish in time")

    def _responder_works(self, request_id: str) -> None:
        """What Jordan does while elevated lands in Entra's directory audit log (the Graph emulator's), for the
        collection at the end to find."""
        from services.emulators.fixture_files import response_of

        record = self.runtime.store.require(request_id)
        assert record.grant is not None
        row = response_of("graph/directory_audits_filter_user_window.http.json")[2]["value"][0]
        jordan = PEOPLE["jordan"][0]
        rows = []
        for n, (minutes, activity) in enumerate([(2, "Update conditional access policy"), (5, "Reset user password")]):
            at = (record.grant.starts_at + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
            rows.append({**row, "id": f"Directory_demo_{request_id}_{n}", "activityDateTime": at,
                         "activityDisplayName": activity,
                         "initiatedBy": {"app": None, "user": {**row["initiatedBy"]["user"], "id": jordan,
                                                               "userPrincipalName": "jordan@contoso.example"}}})
        requests.post(self.stack.urls["graph"] + "/_emulator/state", json={"directory_audits": rows}, timeout=10)

    def scenario_three(self) -> str:
        self.say("Scenario 3 — an approver who never opened the bot (INC0012347)")
        text = "Security Admin for 15 minutes to review the Defender alert policy changes behind INC0012347"
        self.say(f'    Riley Chen: "{text}"')
        record = self.submit("riley", text, entitlement="security-admin", duration="15")
        self.progress(f"{record.id}: {record.decision.summary()}")
        self.progress("Priya Natarajan (security lead, joined this week) is in no team with the bot and never wrote "
                      "to it; breakglass installs its Teams app for her through Graph")
        priya = PEOPLE["priya"][0]
        approval = self.teams.wait_card(lambda a, c: a["conversationId"].endswith(f"_{priya}@unq.gbl.spaces")
                                        and record.id in json.dumps(c) and "request.approve" in json.dumps(c))
        chat = approval["activity"]["conversationId"]
        self.progress(f"the card arrived in her new 1:1 chat ({chat[:30]}…); she clicks Approve there")
        data = button(approval["card"], "request.approve")
        self.teams.click("priya", "request.approve", data, approval["activity"]["id"], conversation=chat)
        self.wait_state(record.id, {"active"})
        self.progress(f"granted to Riley Chen; waiting for expiry ({self._real(900)} at {self.speed:g}x)")
        self.wait_state(record.id, {"expired", "revoked"}, timeout=120)
        return record.id

    def scenario_four(self) -> str:
        from policies.emergency import CHECKLIST
        from services.emulators.fixture_files import response_of
        from services.state.emergency import EmergencyStore

        self.say("Scenario 4 — the emergency account breakglass01 is used")
        oid, _ = PEOPLE["breakglass01"]
        now = self.runtime.clock.now()
        row = {**response_of("graph/signins_list_filter_user_page1.http.json")[2]["value"][0],
               "id": f"demo-{next(_ids)}", "userId": oid, "userPrincipalName": "breakglass01@contoso.example",
               "userDisplayName": "Break Glass 01", "appDisplayName": "Azure Portal",
               "createdDateTime": f"{now:%Y-%m-%dT%H:%M:%S}.0000000Z"}
        requests.post(self.stack.urls["graph"] + "/_emulator/state", json={"sign_ins": [row]},
                      timeout=10).raise_for_status()
        self.progress(f"Entra logs a sign-in of Break Glass 01 from {row['ipAddress']} to the Azure Portal; the watch "
                      "reads the sign-in log every few seconds")
        store = EmergencyStore(self.runtime.redis, self.runtime.settings.key_prefix)
        incident = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = [store.get(i) for i in store.unfinished()]
            incident = next((i for i in found if i is not None and i.card is not None and i.ticket is not None
                             and "notify:" + PEOPLE["jordan"][0] in i.done), None)
            if incident is not None:
                break
            time.sleep(0.2)
        if incident is None or incident.card is None or incident.ticket is None:
            raise DemoError("the watch did not open the emergency incident in time")
        self.progress(f"{incident.id}: P1 {incident.ticket.number} opened in ServiceNow, critical alert and "
                      "checklist posted to the alerts channel, Morgan Ellis and Jordan Reyes told in their chats")
        for n, (item, title) in enumerate(CHECKLIST):
            who = "morgan" if n % 2 == 0 else "jordan"
            self.teams.click(who, "emergency.tick", {"incidentId": incident.id, "item": item},
                             incident.card.activity_id, conversation=incident.card.conversation_id, channel=True)
            self.progress(f"{PEOPLE[who][1]} ticks “{title}”")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and incident.id in store.unfinished():
            time.sleep(0.2)
        if incident.id in store.unfinished():
            raise DemoError("the emergency incident was not closed in time")
        self.progress(f"checklist complete; {incident.ticket.number} has a note for every tick and a closing note")
        return incident.id

    def emergency_timeline(self, incident_id: str) -> list[str]:
        lines = []
        for ev in self.runtime.audit.events():
            if ev.event not in EMERGENCY_STEPS:
                continue
            d = ev.data
            if d.get("incident") != incident_id and not (ev.event == "alert.raised" and "Emergency" in str(
                    d.get("title")) and incident_id in json.dumps(d)):
                continue
            detail = {"emergency.sign_in_detected": f"{d.get('result')} from {d.get('ip')} ({d.get('app')})",
                      "emergency.incident_opened": f"{d.get('system')} {d.get('number')}, P{d.get('priority')}",
                      "alert.raised": str(d.get("severity")),
                      "emergency.person_told": PEOPLE_BY_ID.get(d.get("person", ""), d.get("person", "")),
                      "emergency.checklist_ticked": f"{d.get('title')} by {PEOPLE_BY_ID.get(ev.actor, ev.actor)}",
                      "emergency.incident_closed": f"closing note on {d.get('number')}"}[ev.event]
            lines.append(f"    {datetime.fromisoformat(ev.at):%H:%M:%S}  {EMERGENCY_STEPS[ev.event]:<26} {detail}")
        return lines

    def scenario_bundle(self) -> str:
        self.say("Bundle — several roles in one request (INC0012347): Riley Chen needs three roles at once")
        text = ("Need the incident responder bundle for 30 minutes to contain the token theft on the finance "
                "tenant, INC0012347")
        self.say(f'    Riley Chen: "{text}"')
        record = self.submit("riley", text)
        if not record.decision.is_bundle:
            raise DemoError(f"{record.id} is not a bundle request: {record.decision.entitlement}")
        for member in record.decision.members:
            self.progress(f"{member.entitlement_name}: {member.summary()}")
        self.progress(f"{record.id} ({record.access_name}): {record.decision.summary()}")
        self.dana_approves(record.id, "Dana Whitfield clicks Approve once, on the one card for the whole bundle")
        active = self.wait_state(record.id, {"active"})
        self.progress(f"{len(active.grants)} roles granted together; one receipt lists them all; waiting for the "
                      f"30 minutes to pass ({self._real(1800)} at {self.speed:g}x)")
        self.wait_state(record.id, {"expired", "revoked"}, timeout=120)
        return record.id

    def run_bundle(self) -> int:
        self.teams.install()
        rid = self.scenario_bundle()
        self.say("")
        self.say(f"Timeline (product time; the demo clock runs {self.speed:g}x faster than real time):")
        record = self.runtime.store.require(rid)
        self.say(f"  {rid}  {record.access_name} for {record.target_name} — {record.state.value}")
        for line in self.timeline(rid):
            self.say(line)
        return self._verify()

    def _verify(self) -> int:
        self.say("")
        from services.state.anchors import AnchorFile, verify_everything
        anchors = AnchorFile(self.stack.data / "audit-anchors.jsonl").checkpoints()
        result = verify_everything(self.runtime.store, self.runtime.audit, anchors)
        self.say(f"audit verify: {result.render()}")
        return 0 if result.ok else 1

    def run(self) -> int:
        self.teams.install()
        ids = [self.scenario_one()]
        self.say("")
        ids.append(self.scenario_two())
        self.say("")
        ids.append(self.scenario_three())
        self.say("")
        incident = self.scenario_four()
        self.say("")
        self.say(f"Timelines (product time; the demo clock runs {self.speed:g}x faster than real time):")
        for rid in ids:
            record = self.runtime.store.require(rid)
            self.say(f"  {rid}  {record.decision.entitlement_name} for {record.target_name} — {record.state.value}")
            for line in self.timeline(rid):
                self.say(line)
        self.say(f"  {incident}  emergency account Break Glass 01 — checklist complete")
        for line in self.emergency_timeline(incident):
            self.say(line)
        return self._verify()


PEOPLE_BY_ID = {oid: name for oid, name in PEOPLE.values()}


def run_demo(keep: Path | None = None, speed: float = SPEED, ports: dict[str, int] | None = None,
             bundle: bool = False) -> int:
    data = keep or Path(tempfile.mkdtemp(prefix="breakglass-demo-"))
    # Free ports unless the flags chose some (the same flags as `breakglass dev`).
    ports = {"entra": 0, "graph": 0, "servicenow": 0, "botconnector": 0, "openai": 0, **(ports or {})}
    ports["bot"] = ports.get("bot") or free_port()
    config = DevConfig(data_dir=data, ports=ports, at=next_monday_10_berlin(), scale=speed,
                       approvals_channel=APPROVALS_CHANNEL,
                       extra_env={"BREAKGLASS_RECONCILE_INTERVAL": "5", "BREAKGLASS_RECEIPT_BACKOFF": "1",
                                  "BREAKGLASS_WATCH_INTERVAL": "2"})
    print(f"breakglass demo: starting an ephemeral stack in {data} (embedded Redis, emulators, bot, worker, "
          f"scheduler).", flush=True)
    print(f"The demo clock starts at {config.at:%a %Y-%m-%d %H:%M} UTC (business hours in Berlin) and runs "
          f"{speed:g}x faster than real time, so a 30-minute grant ends after {1800 / speed:g} seconds.\n",
          flush=True)
    # SIGTERM ends the demo like Ctrl-C: the stack's processes stop and the temporary directory goes.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with DevStack(config) as stack:
            demo = Demo(stack, speed=speed)
            return demo.run_bundle() if bundle else demo.run()
    except KeyboardInterrupt:
        print("\nbreakglass demo: interrupted; every process it started has been stopped.", flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if keep is None:
            shutil.rmtree(data, ignore_errors=True)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")

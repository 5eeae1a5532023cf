"""The Teams activity handler: routes messages, Adaptive Card invokes (Action.Execute) and legacy Action.Submit
messages, and learns who is who (Entra object id -> Teams id) from every activity and from team rosters."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from botbuilder.core import InvokeResponse, TurnContext
from botbuilder.core.teams import TeamsActivityHandler
from botbuilder.schema import Activity, ChannelAccount

from bot.actions import VOTES, Actions, Origin, thread
from bot.clients import Bounded
from bot.commands import Commands, parse
from bot.intake import Intake
from cards.inspect import executes
from cards.lists import message_card
from cards.verbs import Verb
from policies.model import CardRef
from policies.text import clean_input, one_line
from services.composition import Services
from services.errors import NotFoundError
from services.metrics import METRICS
from services.ports import DirectoryError, TeamsError
from services.settings import Settings
from services.state.limiter import PerUserLimit
from services.state.teams_users import TeamsChannel, TeamsUser
from services.triage import TriageProvider
from services.workflow.access import AccessError, Who
from services.workflow.notify import card_activity

log = logging.getLogger(__name__)
CARD = "application/vnd.microsoft.card.adaptive"
REMEMBER_TTL_S = 300
REMEMBER_MAX = 10_000
TOO_FAST = ("You are sending messages faster than breakglass accepts them; wait a minute, then try again. "
            "(Requests already submitted are not affected.)")
TOO_FAST_NOTICE_S = 60  # at most one such reply per person per minute, however long the flood


def invoke_card(card: dict[str, Any]) -> InvokeResponse:
    # Returned as a plain dict and serialised by our endpoint: the stock AdaptiveCardInvokeResponse path
    # answers HTTP 500 under CloudAdapter in botbuilder 4.17.1 (PROTOCOL_NOTES §2).
    return InvokeResponse(status=200, body={"statusCode": 200, "type": CARD, "value": card})


def invoke_error(status: int, code: str, message: str) -> InvokeResponse:
    return InvokeResponse(status=200, body={"statusCode": status, "type": "application/vnd.microsoft.error",
                                            "value": {"code": code, "message": message}})


def who_of(activity: Activity) -> Who | None:
    sender: ChannelAccount | None = activity.from_property
    oid = getattr(sender, "aad_object_id", None) if sender else None
    if not oid:
        return None
    return Who(object_id=str(oid).lower(), name=one_line(getattr(sender, "name", "") or "", 256), teams_id=sender.id)


def origin_of(activity: Activity) -> Origin:
    return Origin(service_url=activity.service_url or "", conversation_id=activity.conversation.id,
                  reply_to_id=activity.reply_to_id, teams_id=getattr(activity.from_property, "id", None))


class BreakglassBot(TeamsActivityHandler):
    def __init__(self, settings: Settings, services: Services, triage: TriageProvider):
        super().__init__()
        self.settings = settings
        self.services = services
        self.intake = Intake(services, triage)
        self.actions = Actions(services, self.intake)
        self.commands = Commands(services, self.actions)
        # object id -> (last sighting written, REMEMBER_TTL_S window): every activity re-reports its sender, and
        # re-reading the stored user (a thread hop and a Redis GET before the turn) is only worth it when something
        # changed or a while has passed.
        self._remembered = Bounded(REMEMBER_MAX)
        self.limit = (PerUserLimit(services.runtime.redis, settings.key_prefix, "activity", settings.user_rate_per_min,
                                   settings.user_burst) if settings.user_rate_per_min > 0 else None)

    async def _allowed(self, who: Who) -> bool:
        """The person's token bucket: messages, submits and clicks. Over it, nothing is stored."""
        if self.limit is None:
            return True
        if await asyncio.to_thread(self.limit.allow, who.object_id):
            return True
        METRICS.http_rejected.labels(reason="user_rate").inc()
        return False

    async def _too_fast(self, activity: Activity, who: Who) -> None:
        """One polite reply per person per minute (a reply per message would itself be the flood)."""
        store = self.services.runtime.store
        if await asyncio.to_thread(store.first_time, f"too-fast:{who.object_id.lower()}", TOO_FAST_NOTICE_S):
            await self._send(activity, [message_card(TOO_FAST)])

    async def on_turn(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        METRICS.activities.labels(type=activity.type or "unknown").inc()
        sighting = self._sighting(activity)
        seen = (sighting, int(time.monotonic() // REMEMBER_TTL_S))
        if sighting is not None and self._remembered.get(sighting.object_id) != seen:
            await asyncio.to_thread(self.services.notifier.users.remember, sighting)
            self._remembered.remember(sighting.object_id, seen)
        await super().on_turn(turn_context)

    @staticmethod
    def _sighting(activity: Activity) -> TeamsUser | None:
        sender = activity.from_property
        oid = getattr(sender, "aad_object_id", None)
        if not oid or not sender.id:
            return None
        personal = getattr(activity.conversation, "conversation_type", None) == "personal"
        tenant = ((activity.channel_data or {}).get("tenant") or {}).get("id", "") \
            if isinstance(activity.channel_data, dict) else ""
        return TeamsUser(object_id=str(oid).lower(), teams_id=sender.id, name=sender.name or "",
                         service_url=activity.service_url or "", tenant_id=tenant,
                         conversation_id=activity.conversation.id if personal else None)

    async def _send(self, activity: Activity, cards: list[dict[str, Any]]) -> None:
        for card in cards:
            try:
                sent = await asyncio.to_thread(self.services.teams.reply, activity.service_url,
                                               activity.conversation.id, activity.id, card_activity(card))
            except TeamsError as exc:
                log.warning("reply failed", extra={"status": exc.status, "conversation": activity.conversation.id})
                continue
            await self._remember_buttons(activity, card, sent)

    async def _remember_buttons(self, activity: Activity, card: dict[str, Any], sent: str) -> None:
        """A reply whose buttons act on a request (the `pending` list, a command's answer) becomes one of that
        request's card copies: clicks are only accepted from stored copies, and every copy follows the request."""
        verbs: dict[str, set[str]] = {}
        for verb, data in executes(card):
            if isinstance(data.get("requestId"), str):
                verbs.setdefault(data["requestId"], set()).add(verb)
        for request_id, found in verbs.items():
            if not sent:
                log.warning("reply has no activity id; its buttons will be refused", extra={"request_id": request_id})
                continue
            ref = CardRef(service_url=activity.service_url or "", conversation_id=activity.conversation.id,
                          activity_id=sent, audience="approver" if found & set(VOTES) else "requester",
                          user_id=getattr(activity.from_property, "id", None))
            try:
                await asyncio.to_thread(self.actions.remember_card, request_id, ref)
            except NotFoundError:
                pass

    # --- messages -------------------------------------------------------------------------------------------

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        who = who_of(activity)
        if who is None:
            await self._send(activity, [message_card("I could not tell who you are (no Entra object id).")])
            return
        if isinstance(activity.value, dict) and activity.value.get("verb"):
            if not await self._allowed(who):
                await self._too_fast(activity, who)
                return
            await self._legacy_submit(activity, who)
            return
        text = clean_input(TurnContext.remove_recipient_mention(activity) or activity.text or "", 4000)
        if not text:
            return
        if not await self._allowed(who):
            await self._too_fast(activity, who)
            return
        if activity.id and not await asyncio.to_thread(
                self.services.runtime.store.first_time, f"message:{activity.conversation.id}:{activity.id}"):
            return  # Teams retried a delivery we already answered
        command = parse(text)
        try:
            if command is not None:
                cards = await self.commands.run(command, who)
            else:
                cards = [await self.intake.start(who, text)]
        except AccessError as exc:
            cards = [message_card(exc.message)]
        await self._send(activity, cards)

    async def _legacy_submit(self, activity: Activity, who: Who) -> None:
        """Action.Submit from older clients arrives as a message with `value`; there is no invoke response, so the
        card is replaced with a PUT of the original activity."""
        value = dict(activity.value)
        verb = str(value.pop("verb", ""))
        card = await self.actions.dispatch(verb, who, value, origin_of(activity))
        try:
            if activity.reply_to_id:
                await asyncio.to_thread(self.services.teams.update, activity.service_url, activity.conversation.id,
                                        activity.reply_to_id, card_activity(card))
            else:
                await self._send(activity, [card])
        except TeamsError as exc:
            log.warning("legacy card update failed", extra={"status": exc.status})

    # --- invokes --------------------------------------------------------------------------------------------

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
        activity = turn_context.activity
        if activity.name != "adaptiveCard/action":
            return InvokeResponse(status=501)
        value = activity.value if isinstance(activity.value, dict) else {}
        action = value.get("action") if isinstance(value.get("action"), dict) else {}
        verb = str(action.get("verb") or "")
        data = action.get("data") if isinstance(action.get("data"), dict) else {}
        who = who_of(activity)
        if who is None:
            return invoke_error(401, "Unauthorized", "Could not identify you (no Entra object id).")
        if not verb:
            return invoke_error(400, "BadRequest", "The action has no verb.")
        # Teams sends a refresh for every view of a refreshable card: not the person's doing, never counted.
        if verb != Verb.REQUEST_REFRESH and not await self._allowed(who):
            return invoke_card(message_card(TOO_FAST))
        card = await self.actions.dispatch(verb, who, data, origin_of(activity))
        return invoke_card(card)

    # --- installation ---------------------------------------------------------------------------------------

    async def on_conversation_update_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        added = [m for m in (activity.members_added or []) if m.id == activity.recipient.id]
        if added:
            await self._installed(activity, welcome=True)
        await super().on_conversation_update_activity(turn_context)

    async def on_installation_update_add(self, turn_context: TurnContext) -> None:
        await self._installed(turn_context.activity, welcome=False)

    async def _installed(self, activity: Activity, *, welcome: bool) -> None:
        data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
        team = data.get("team") or {}
        tenant = (data.get("tenant") or {}).get("id", self.settings.served_tenant_id)
        conversation = activity.conversation.id
        if team.get("id"):
            channel = ((data.get("settings") or {}).get("selectedChannel") or {}).get("id") or conversation
            found = TeamsChannel(kind="approvals", service_url=activity.service_url, channel_id=channel,
                                 tenant_id=tenant, team_id=team["id"], name=team.get("name", ""))
            placed = await asyncio.to_thread(self._place_install, who_of(activity), found, conversation)
            log.info("installed in a team", extra={"team": team.get("name"), "channel_id": channel,
                                                   "placed": placed})
            await self._learn_roster(activity.service_url, team["id"], tenant)
        elif welcome and getattr(activity.conversation, "conversation_type", None) == "personal":
            await self._send(activity, [message_card("Hi! Describe the access you need, e.g. \"Need Global Admin "
                                                     "for 30 minutes to fix the CA lockout, INC0012345\". Type "
                                                     "help for commands.")])

    def _place_install(self, installer: Who | None, found: TeamsChannel, conversation: str) -> str:
        """Whether this install is the approvals team, teaches it (development only, and only when a member of an
        approver group installs it), or is elsewhere. An install never re-routes an existing channel: one
        elsewhere is audited (`bot.installed_elsewhere`) and alerted, and nothing else happens."""
        notifier = self.services.notifier
        current = notifier.channel("approvals")
        if current is not None:
            ours = {thread(current.channel_id), thread(current.team_id)} - {""}
            if ours & {thread(found.channel_id), thread(found.team_id), thread(conversation)}:
                return "approvals"
        elif self.settings.development and installer is not None and self._is_approver(installer.object_id):
            notifier.users.remember_channel(found)
            self.services.runtime.audit.append("bot.approvals_channel_learned", actor=installer.object_id,
                                               data={"team_id": found.team_id, "team_name": found.name[:200],
                                                     "channel_id": found.channel_id})
            return "learned"
        who = installer.object_id if installer is not None else "unknown"
        self.services.runtime.audit.append("bot.installed_elsewhere", actor=who, data={
            "team_id": found.team_id, "team_name": found.name[:200], "channel_id": found.channel_id,
            "installer_name": (installer.name if installer else "")[:200],
            "approvals_channel": current.channel_id if current else None})
        notifier.alert("breakglass was installed in a team that is not the approvals channel", [
            ("Installed by", f"{installer.name if installer else 'unknown'} ({who})"),
            ("Team", f"{found.name} ({found.team_id})"), ("Channel", found.channel_id),
            ("What happened", "nothing was re-routed; approval cards, receipts and alerts stay where they were")],
            "warning")
        return "elsewhere"

    def _is_approver(self, object_id: str) -> bool:
        """A member (or backup) of an approver group of the current policy, and a principal the directory knows."""
        policy = self.services.runtime.policies.current()
        approvers = {p.object_id for group in policy.approver_groups.values() for p in (*group.members, *group.backup)}
        if object_id.lower() not in approvers:
            return False
        try:
            principal = self.services.directory.principal(object_id)
        except DirectoryError:
            return False
        return principal is not None and principal.enabled

    async def _learn_roster(self, service_url: str, team_id: str, tenant: str) -> None:
        try:
            members = await asyncio.to_thread(self.services.teams.members, service_url, team_id)
        except TeamsError as exc:
            log.warning("could not read the team roster", extra={"status": exc.status})
            return
        users = self.services.notifier.users
        for m in members:
            oid = m.get("aadObjectId") or m.get("objectId")
            if oid and m.get("id"):
                await asyncio.to_thread(users.remember, TeamsUser(
                    object_id=str(oid).lower(), teams_id=m["id"], name=m.get("name", ""), service_url=service_url,
                    tenant_id=tenant, upn=m.get("userPrincipalName", "")))

"""Everything breakglass says in Teams outside a user's own turn: approval cards to the on-call approver and the
approvals channel, escalations, card updates for every copy after a decision, receipts and alerts.

Each copy of a request's card is remembered on the request (CardRef) so that after any transition every copy is
re-rendered from the stored state and PUT back — not only the clicker's.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from cards.approval import approval_base_card, approval_card, decided_card
from cards.lists import message_card
from cards.notice import with_notice
from cards.receipt import alert_card, ended_card, grant_receipt_card
from cards.status import request_card
from cards.text import plain_line
from policies.approval import current_approvers
from policies.lifecycle import State
from policies.model import Approver, CardRef
from policies.record import RequestRecord
from services.clock import Clock
from services.ports import Teams, TeamsError
from services.state.audit import AuditLog
from services.state.policy_source import PolicySource
from services.state.store import RequestStore
from services.state.teams_users import TeamsChannel, TeamsUsers
from services.workflow.install import AppInstaller, NotReached

log = logging.getLogger(__name__)
SYSTEM = "system:notifier"
NEVER_SEEN = "has not used the bot yet"
INSTALL_FIX = ("allow the breakglass app for this user (Teams admin center > Teams apps > Permission policies), "
               "publish it to the org app catalog, or grant the Graph app AppCatalog.Read.All and "
               "TeamsAppInstallation.ReadWriteForUser.All (see docs/deploy-azure.md and breakglass doctor)")


def card_activity(card: dict[str, Any], summary: str = "") -> dict[str, Any]:
    """A message carrying one card. Teams shows a card-only message as "Send a card" in the chat list and in
    notifications: every message gets a one-line `summary` (given, or the card's first line of text), and the card
    a `fallbackText` for clients that cannot render it."""
    line = _one_line(summary) or _one_line(_first_text(card)) or "breakglass"
    if not card.get("fallbackText"):
        card = {**card, "fallbackText": line}
    return {"type": "message", "summary": line, "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}]}


def _first_text(node: Any) -> str:
    if isinstance(node, dict):
        if node.get("type") == "TextBlock" and node.get("text"):
            return str(node["text"])
        for key in ("body", "items", "columns"):
            found = _first_text(node.get(key))
            if found:
                return found
    elif isinstance(node, list):
        for item in node:
            found = _first_text(item)
            if found:
                return found
    return ""


_MARKDOWN_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|~>])")


def _one_line(text: str) -> str:
    """Teams shows `summary` as plain text in toasts and the activity feed: one cleaned, defanged line of at most
    200 characters (it carries deny reasons and Graph's error text). Card text arrives markdown-escaped."""
    plain = _MARKDOWN_ESCAPE.sub(r"\1", text or "")
    return plain_line(plain, 200) if plain.strip() else ""


@dataclass(frozen=True)
class Target:
    """A person's 1:1 conversation with the bot."""

    service_url: str
    conversation_id: str
    teams_id: str  # 29:…; empty for a chat found through a proactive installation until they write to the bot


@dataclass(frozen=True)
class ChannelConfig:
    tenant_id: str
    service_url: str
    approvals_channel_id: str | None = None
    alerts_channel_id: str | None = None


class Notifier:
    def __init__(self, *, store: RequestStore, audit: AuditLog, teams: Teams, policies: PolicySource, clock: Clock,
                 channels: ChannelConfig, installer: AppInstaller | None = None):
        self.store = store
        self.audit = audit
        self.teams = teams
        self.policies = policies
        self.clock = clock
        self.channels = channels
        self.users = TeamsUsers(store)
        self.installer = installer  # None: people the bot has never seen stay unreachable in Teams

    # --- where to post ----------------------------------------------------------------------------------------

    def channel(self, kind: str) -> TeamsChannel | None:
        configured = (self.channels.approvals_channel_id if kind == "approvals" else self.channels.alerts_channel_id)
        if configured:
            service_url = self.users.service_url(self.channels.tenant_id) or self.channels.service_url
            return TeamsChannel(kind=kind, service_url=service_url, channel_id=configured,
                                tenant_id=self.channels.tenant_id)
        learned = self.users.channel(kind)
        if learned is None and kind == "alerts":
            return self.channel("approvals")
        return learned

    def _personal(self, object_id: str, *, name: str = "", request_id: str | None = None) -> Target | NotReached:
        """The user's 1:1 chat: known, opened through the Bot Connector, or (for someone the bot has never seen)
        found by installing the app for them."""
        user = self.users.get(object_id)
        if user is None or (not user.conversation_id and not user.teams_id):
            approvals = self.channel("approvals")
            service_url = approvals.service_url if approvals is not None else self.channels.service_url
            if self.installer is None:
                return NotReached(NEVER_SEEN)
            reached = self.installer.reach(object_id, service_url=service_url, name=name, request_id=request_id)
            if isinstance(reached, NotReached):
                if reached.refused_now:
                    self.alert("Teams app could not be installed for a person breakglass must reach", [
                        ("Person", f"{name} ({object_id})" if name else object_id), ("Reason", reached.reason),
                        ("Request", request_id or "-"), ("Fix", INSTALL_FIX)], "warning")
                return reached
            user = reached
        service_url = user.service_url or self.channels.service_url
        conversation = user.conversation_id
        if not conversation:
            conversation = self.teams.create_personal(service_url, user.teams_id,
                                                      user.tenant_id or self.channels.tenant_id)
            self.users.remember(replace(user, conversation_id=conversation))
        return Target(service_url, conversation, user.teams_id)

    def teams_ids(self, approvers: list[Approver]) -> list[str]:
        out = []
        for a in approvers:
            user = self.users.get(a.object_id)
            if user is not None and user.teams_id:
                out.append(user.teams_id)
        return out

    def _add_cards(self, request_id: str, refs: list[CardRef]) -> RequestRecord:
        now = self.clock.now()

        def change(r: RequestRecord) -> RequestRecord:
            known = {(c.conversation_id, c.activity_id) for c in r.cards}
            new = [c for c in refs if (c.conversation_id, c.activity_id) not in known]
            return r.with_changes(now, cards=(*r.cards, *new)) if new else r

        return self.store.update(request_id, change)

    # --- approvals ----------------------------------------------------------------------------------------------

    def notify_approvers(self, request_id: str, *, backups: bool = False) -> list[str]:
        record = self.store.require(request_id)
        if record.state is not State.PENDING_APPROVAL:
            return []
        now = self.clock.now()
        approvers = current_approvers(record, self.policies.current(), now)
        ids = self.teams_ids(approvers)
        refs: list[CardRef] = []
        reached: list[str] = []
        unreachable: list[str] = []
        if not backups:
            channel = self.channel("approvals")
            if channel is not None:
                try:
                    conv, activity = self.teams.post_to_channel(
                        channel.service_url, channel.channel_id,
                        card_activity(approval_base_card(record, now, ids), f"Approval needed: {record.id}"),
                        channel.tenant_id or self.channels.tenant_id)
                    refs.append(CardRef(service_url=channel.service_url, conversation_id=conv, activity_id=activity,
                                        audience="channel"))
                    reached.append(f"channel:{channel.channel_id}")
                except TeamsError as exc:
                    unreachable.append(f"channel:{channel.channel_id} ({exc.status})")
        wanted = [a for a in approvers if (a.backup if backups else a.notify_first)]
        for approver in wanted:
            try:
                target = self._personal(approver.object_id, name=approver.name, request_id=request_id)
                if isinstance(target, NotReached):
                    unreachable.append(f"{approver.name or approver.object_id} ({target.reason})")
                    continue
                activity_id = self.teams.send(target.service_url, target.conversation_id, card_activity(
                    approval_card(record, now, ids), f"Approval needed: {record.id}"))
                refs.append(CardRef(service_url=target.service_url, conversation_id=target.conversation_id,
                                    activity_id=activity_id, audience="approver", user_id=target.teams_id or None))
                reached.append(approver.object_id)
            except TeamsError as exc:
                unreachable.append(f"{approver.name or approver.object_id} ({exc.status})")
        if refs:
            self._add_cards(request_id, refs)
        self.audit.append("approval.escalated" if backups else "approval.requested", actor=SYSTEM,
                          request_id=request_id, data={"notified": reached, "unreachable": unreachable})
        if not [r for r in reached if not r.startswith("channel:")]:
            self.alert("Approval request could not reach an approver personally", [
                ("Request", record.id), (record.access_label, record.access_name),
                ("Unreachable", "; ".join(unreachable) or "no approver has used the bot yet")], "warning")
        return reached

    def update_cards(self, request_id: str) -> int:
        """Re-render every copy of the request's card from the stored state."""
        record = self.store.require(request_id)
        now = self.clock.now()
        pending = record.state is State.PENDING_APPROVAL
        ids = self.teams_ids(current_approvers(record, self.policies.current(), now)) if pending else []
        updated = 0
        for ref in record.cards:
            if ref.audience == "requester":
                card = request_card(record, now=now, viewer="requester")
            elif ref.audience == "approver":
                card = approval_card(record, now, ids) if pending else decided_card(record, now)
            else:
                card = approval_base_card(record, now, ids) if pending else decided_card(record, now)
            try:
                self.teams.update(ref.service_url, ref.conversation_id, ref.activity_id, card_activity(card))
                updated += 1
            except TeamsError as exc:
                log.warning("card update failed", extra={"request_id": request_id, "status": exc.status})
        self.audit.append("cards.updated", actor=SYSTEM, request_id=request_id,
                          data={"state": record.state.value, "copies": len(record.cards), "updated": updated,
                                "version": record.version})
        return updated

    def tell_requester(self, request_id: str, text: str) -> bool:
        record = self.store.require(request_id)
        return self.tell(record.request.requester, text, name=record.requester_name, request_id=request_id)

    def tell(self, object_id: str, text: str, *, name: str = "", request_id: str | None = None) -> bool:
        """A plain notice in the person's own chat; False when they cannot be reached."""
        target = self._personal(object_id, name=name, request_id=request_id)
        if isinstance(target, NotReached):
            return False
        try:
            self.teams.send(target.service_url, target.conversation_id, card_activity(message_card(text), text))
            return True
        except TeamsError:
            return False

    def send_request_card(self, request_id: str) -> bool:
        record = self.store.require(request_id)
        target = self._personal(record.request.requester, name=record.requester_name, request_id=request_id)
        if isinstance(target, NotReached):
            self.audit.append("notify.unreachable", actor=SYSTEM, request_id=request_id,
                              data={"who": record.request.requester, "why": target.reason})
            return False
        activity_id = self.teams.send(target.service_url, target.conversation_id, card_activity(
            request_card(record, now=self.clock.now(), viewer="requester"),
            f"Request {record.id} was created from {record.request.ticket}"))
        self._add_cards(request_id, [CardRef(service_url=target.service_url, conversation_id=target.conversation_id,
                                             activity_id=activity_id, audience="requester",
                                             user_id=target.teams_id or None)])
        return True

    # --- receipts and alerts ------------------------------------------------------------------------------------

    def channel_receipt(self, request_id: str, rollback: str) -> bool:
        record = self.store.require(request_id)
        channel = self.channel("approvals")
        if channel is None:
            return False
        conv, activity = self.teams.post_to_channel(
            channel.service_url, channel.channel_id,
            card_activity(grant_receipt_card(record, self.clock.now(), rollback), f"Access granted: {record.id}"),
            channel.tenant_id or self.channels.tenant_id)
        self._add_cards(request_id, [CardRef(service_url=channel.service_url, conversation_id=conv,
                                             activity_id=activity, audience="channel")])
        return True

    def expiry_warning(self, request_id: str, left: timedelta) -> bool:
        """The holder's warning that the grant is about to end, on their card with Extend and Deactivate (a card this
        message stores, so its buttons are bound to it like any other copy). False when they cannot be reached."""
        record = self.store.require(request_id)
        if record.grant is None:
            return False
        target = self._personal(record.request.target, name=record.target_name, request_id=request_id)
        if isinstance(target, NotReached):
            return False
        minutes = max(1, round(left.total_seconds() / 60))
        text = (f"Your {record.access_name} access ({record.id}) ends at "
                f"{record.grant.ends_at:%H:%M} UTC, in {minutes} minute{'s' if minutes != 1 else ''}. Extend it if "
                "you need more time, or deactivate it now if you are done.")
        card = with_notice(request_card(record, now=self.clock.now(), viewer="requester"), text, "warning")
        try:
            activity_id = self.teams.send(target.service_url, target.conversation_id, card_activity(card, text))
        except TeamsError:
            return False
        self._add_cards(request_id, [CardRef(service_url=target.service_url, conversation_id=target.conversation_id,
                                             activity_id=activity_id, audience="requester",
                                             user_id=target.teams_id or None)])
        return True

    def ended_notice(self, request_id: str, facts: list[tuple[str, str]]) -> bool:
        """A new message in the approvals channel when a grant ended (not only the card updated in place)."""
        record = self.store.require(request_id)
        channel = self.channel("approvals")
        if channel is None:
            return False
        title = f"Access ended: {record.access_name} for {record.target_name or record.request.target}"
        try:
            self.teams.post_to_channel(channel.service_url, channel.channel_id,
                                       card_activity(ended_card(title, facts), title),
                                       channel.tenant_id or self.channels.tenant_id)
        except TeamsError as exc:
            log.warning("end notice could not be posted", extra={"request_id": request_id, "status": exc.status})
            return False
        return True

    def alert(self, title: str, facts: list[tuple[str, str]], severity: str = "warning", details: str = "") -> bool:
        channel = self.channel("alerts")
        self.audit.append("alert.raised", actor=SYSTEM, data={"title": title, "facts": dict(facts),
                                                              "severity": severity, "details": details[:1000]})
        if channel is None:
            log.error("alert with no channel configured", extra={"title": title, "facts": dict(facts)})
            return False
        try:
            self.teams.post_to_channel(channel.service_url, channel.channel_id,
                                       card_activity(alert_card(title, facts, severity, details), title),  # type: ignore[arg-type]
                                       channel.tenant_id or self.channels.tenant_id)
            return True
        except TeamsError as exc:
            log.error("alert could not be posted", extra={"title": title, "status": exc.status})
            return False

    def alert_person(self, object_id: str, title: str, facts: list[tuple[str, str]], severity: str = "critical", *,
                     name: str = "") -> bool:
        """The alert card in one person's own chat (security on-call, the CISO); False when they cannot be
        reached."""
        target = self._personal(object_id, name=name)
        if isinstance(target, NotReached):
            return False
        try:
            self.teams.send(target.service_url, target.conversation_id,
                            card_activity(alert_card(title, facts, severity), title))  # type: ignore[arg-type]
            return True
        except TeamsError:
            return False

    def post_card(self, kind: str, card: dict[str, Any], summary: str) -> CardRef | None:
        """A new thread in the approvals or alerts channel; None when there is no such channel."""
        channel = self.channel(kind)
        if channel is None:
            return None
        conv, activity = self.teams.post_to_channel(channel.service_url, channel.channel_id,
                                                    card_activity(card, summary),
                                                    channel.tenant_id or self.channels.tenant_id)
        return CardRef(service_url=channel.service_url, conversation_id=conv, activity_id=activity,
                       audience="channel")

    def update_card(self, ref: CardRef, card: dict[str, Any]) -> bool:
        try:
            self.teams.update(ref.service_url, ref.conversation_id, ref.activity_id, card_activity(card))
            return True
        except TeamsError as exc:
            log.warning("card update failed", extra={"conversation": ref.conversation_id, "status": exc.status})
            return False

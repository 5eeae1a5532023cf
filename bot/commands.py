"""Chat commands: help, status / my requests, pending, cancel ID, deactivate ID, extend ID MINUTES.
Anything else is a request in the requester's own words and goes to intake."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from bot.actions import Actions
from cards.lists import help_card, message_card, requests_list_card
from cards.notice import with_notice
from services.composition import Services
from services.workflow.access import AccessError, Who

HELP = [
    ("Need Global Admin for 30 minutes to fix the CA lockout, INC0012345",
     "describe what you need in your own words; you get a form to check and submit"),
    ("status", "your recent requests (also: my requests)"),
    ("pending", "requests waiting for your approval"),
    ("cancel BG-XXXXXX", "withdraw a request that is not active yet"),
    ("deactivate BG-XXXXXX", "end active access now"),
    ("extend BG-XXXXXX 30", "ask for 30 more minutes (policy runs again)"),
    ("report", "who used which role in the last 90 days (approvers: everyone; others: their own use)"),
    ("help", "this list"),
]

_ID = r"(BG-[A-Za-z0-9]{6})"
PATTERNS = [
    ("help", re.compile(r"^(help|\?|hi|hello)$", re.I)),
    ("status", re.compile(r"^(status|my requests|requests|list)$", re.I)),
    ("pending", re.compile(r"^(pending|approvals|to approve)$", re.I)),
    ("report", re.compile(r"^(report|usage|usage report|access review)$", re.I)),
    ("cancel", re.compile(rf"^cancel\s+{_ID}$", re.I)),
    ("deactivate", re.compile(rf"^(?:deactivate|revoke|end)\s+{_ID}$", re.I)),
    ("extend", re.compile(rf"^extend\s+{_ID}\s+([0-9]{{1,4}})(?:\s*(?:m|min|mins|minutes))?$", re.I)),
]


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]


def parse(text: str) -> Command | None:
    cleaned = " ".join(text.strip().split())
    for name, pattern in PATTERNS:
        m = pattern.match(cleaned)
        if m:
            return Command(name, tuple(g.upper() if g.upper().startswith("BG-") else g for g in m.groups()
                                       if g is not None and name != "help"))
    return None


class Commands:
    def __init__(self, services: Services, actions: Actions):
        self.services = services
        self.actions = actions

    async def run(self, command: Command, who: Who) -> list[dict[str, Any]]:
        """Cards to send back, in order."""
        store = self.services.runtime.store
        now = self.services.runtime.clock.now()
        try:
            if command.name == "help":
                return [help_card(HELP)]
            if command.name == "status":
                records = await asyncio.to_thread(store.by_requester, who.object_id, 10)
                return [requests_list_card("Your requests", records, now, "You have no requests yet.")]
            if command.name == "pending":
                records = await asyncio.to_thread(store.pending_for_approver, who.object_id)
                cards = [requests_list_card("Waiting for your approval", records, now,
                                            "Nothing is waiting for your approval.")]
                for record in records[:5]:
                    cards.append(await self.actions.view_for(record, who))
                return cards
            if command.name == "report":
                return [await asyncio.to_thread(self.services.reviews.summary_for, who.object_id)]
            request_id = command.args[0]
            if command.name == "cancel":
                result = await asyncio.to_thread(self.services.access.cancel, request_id, who)
            elif command.name == "deactivate":
                result = await asyncio.to_thread(self.services.access.deactivate, request_id, who)
            else:
                result = await asyncio.to_thread(self.services.access.extend, request_id, who, int(command.args[1]))
            card = await self.actions.view_for(result.record, who)
            return [with_notice(card, result.message, "good" if result.changed else "warning")]
        except AccessError as exc:
            return [message_card(exc.message)]

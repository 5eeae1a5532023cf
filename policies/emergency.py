"""Emergency-account incidents: what a sign-in of an emergency access account was, the incident breakglass keeps
for it (the sign-ins of one burst, the ITSM incident, the alert card) and its post-use checklist.

Pure data and rules: the watch (services/workflow/emergency) reads the logs and stores these; the bot ticks them.
Everything that came from Graph's logs is cleaned once here (`SignIn.from_row`): an app's display name, a failure
reason or a location can carry whatever an attacker registered.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from policies.model import AwareDatetime, CardRef, Frozen, TicketFacts
from policies.text import one_line

CHECKLIST: tuple[tuple[str, str], ...] = (
    ("reason", "Reason documented in the incident"),
    ("actions", "Actions reviewed"),
    ("rotated", "Credentials rotated"),
    ("review", "Security review done"),
)
ITEM_NAMES = dict(CHECKLIST)
MAX_ACTIONS = 500  # kept on the incident (newest); the count says how many there were in all


def _text(value: Any, limit: int = 200) -> str:
    return one_line(str(value), limit) if value not in (None, "") else ""


def _when(value: Any) -> datetime:
    parsed = datetime.fromisoformat(str(value))  # 3.11 takes Graph's "Z" and seven fractional digits
    if parsed.tzinfo is None:
        raise ValueError("a log record's time must carry its offset")
    return parsed


class SignIn(Frozen):
    """One row of `GET /auditLogs/signIns` (v1.0), reduced to what the incident and the alert say."""

    id: str
    at: AwareDatetime
    user_id: str
    upn: str = ""
    app: str = ""
    client: str = ""
    ip: str = ""
    location: str = ""
    succeeded: bool
    result: str
    ca_status: str = ""
    ca_policies: tuple[str, ...] = ()

    @staticmethod
    def from_row(row: dict[str, Any]) -> SignIn:
        status = row.get("status") or {}
        code = status.get("errorCode") if isinstance(status, dict) else None
        succeeded = code in (0, None)
        reason = _text(status.get("failureReason") if isinstance(status, dict) else "", 300)
        place = row.get("location") or {}
        where = ", ".join(_text(place.get(k), 80) for k in ("city", "state", "countryOrRegion")
                          if isinstance(place, dict) and place.get(k))
        policies = tuple(f"{_text(p.get('displayName'), 120)}: {_text(p.get('result'), 40)}"
                         for p in (row.get("appliedConditionalAccessPolicies") or [])[:10] if isinstance(p, dict))
        return SignIn(
            id=_text(row.get("id"), 100), at=_when(row["createdDateTime"]),
            user_id=_text(row.get("userId"), 64).lower(),
            upn=_text(row.get("userPrincipalName"), 256), app=_text(row.get("appDisplayName"), 200),
            client=_text(row.get("clientAppUsed"), 80), ip=_text(row.get("ipAddress"), 64), location=where,
            succeeded=succeeded,
            result="success" if succeeded else f"failure {code}" + (f": {reason}" if reason else ""),
            ca_status=_text(row.get("conditionalAccessStatus"), 40), ca_policies=policies)

    def facts(self) -> list[tuple[str, str]]:
        """The sign-in in words, as the incident, the alert and the card give them."""
        return [("Time", f"{self.at:%Y-%m-%d %H:%M:%S} UTC"), ("Result", self.result),
                ("IP address", self.ip or "unknown"),
                ("Application", self.app + (f" ({self.client})" if self.client else "") or "unknown"),
                ("Location", self.location or "unknown"),
                ("Conditional Access", (self.ca_status or "unknown")
                 + (f" ({'; '.join(self.ca_policies)})" if self.ca_policies else "")),
                ("Sign-in id", self.id)]


class DirectoryAction(Frozen):
    """One directory change the account made (`GET /auditLogs/directoryAudits`, initiated by it)."""

    id: str
    at: AwareDatetime
    activity: str
    category: str = ""
    result: str = ""
    targets: str = ""

    @staticmethod
    def from_row(row: dict[str, Any]) -> DirectoryAction:
        targets = []
        for t in (row.get("targetResources") or [])[:5]:
            if isinstance(t, dict):
                name = t.get("userPrincipalName") or t.get("displayName") or t.get("id")
                targets.append(f"{_text(t.get('type'), 30)} {_text(name, 120)}".strip())
        return DirectoryAction(id=_text(row.get("id"), 200), at=_when(row["activityDateTime"]),
                               activity=_text(row.get("activityDisplayName"), 200) or "unknown activity",
                               category=_text(row.get("category"), 60), result=_text(row.get("result"), 40),
                               targets=", ".join(targets))

    def line(self) -> str:
        on = f" on {self.targets}" if self.targets else ""
        return f"{self.at:%Y-%m-%d %H:%M:%S} UTC {self.activity}{on} ({self.result or 'result unknown'})"


class Tick(Frozen):
    item: str
    by: str  # object id
    by_name: str = ""
    at: AwareDatetime


class EmergencyIncident(Frozen):
    """breakglass's record of one burst of sign-ins by one emergency account. `done` remembers each outward step
    (the ITSM incident, the alert, each person told, the card, each note) so that a retry repeats none of them."""

    id: str  # EA-XXXXXX
    account: str  # object id
    account_upn: str = ""
    account_name: str = ""
    sign_ins: tuple[SignIn, ...]
    opened_at: AwareDatetime
    ticket: TicketFacts | None = None
    card: CardRef | None = None
    done: dict[str, str] = {}
    attempts: dict[str, int] = {}
    ticks: tuple[Tick, ...] = ()
    actions: tuple[DirectoryAction, ...] = ()
    actions_total: int = 0
    actions_checked_at: AwareDatetime | None = None
    completed_at: AwareDatetime | None = None
    version: int = 1

    @property
    def first_at(self) -> datetime:
        return min(s.at for s in self.sign_ins)

    @property
    def account_label(self) -> str:
        return self.account_name or self.account_upn or self.account

    def joins(self, sign_in: SignIn, window: timedelta) -> bool:
        """A sign-in within `window` of the incident's first one (either side: logs arrive out of order) joins it,
        unless the checklist is already complete: a sign-in after the review is a new incident."""
        return self.completed_at is None and abs(sign_in.at - self.first_at) <= window

    def has(self, sign_in_id: str) -> bool:
        return any(s.id == sign_in_id for s in self.sign_ins)

    def ticked(self, item: str) -> Tick | None:
        return next((t for t in self.ticks if t.item == item), None)

    @property
    def complete(self) -> bool:
        return all(self.ticked(item) is not None for item, _ in CHECKLIST)

    def changed(self, **changes: Any) -> EmergencyIncident:
        return self.model_copy(update={**changes, "version": self.version + 1})

    def with_sign_in(self, sign_in: SignIn) -> EmergencyIncident:
        if self.has(sign_in.id):
            return self
        return self.changed(sign_ins=tuple(sorted((*self.sign_ins, sign_in), key=lambda s: s.at)))

    def mark(self, step: str, what: str) -> EmergencyIncident:
        return self.changed(done={**self.done, step: what})

    def tick(self, item: str, by: str, by_name: str, now: datetime) -> EmergencyIncident:
        """The item ticked by `by`; unchanged when it already was (the first tick stands)."""
        if item not in ITEM_NAMES:
            raise ValueError(f"unknown checklist item {item!r}")
        if self.ticked(item) is not None:
            return self
        ticked = self.changed(ticks=(*self.ticks, Tick(item=item, by=by.lower(), by_name=by_name, at=now)))
        return ticked.model_copy(update={"completed_at": now}) if ticked.complete else ticked

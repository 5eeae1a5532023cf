"""What triage hands back: a Suggestion (what was recognised) and a PrefillResult (the form values).

Neither type has a field through which anything could be approved, granted or executed: a suggestion only ever
becomes prefill values for an intake form that a human edits and submits.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from policies.document import PolicyDocument


class Suggestion(BaseModel):
    """What triage recognised in a requester's text. Advisory: `prefill` decides what reaches the form."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entitlement: str | None = None  # an entitlement id from the policy, never free text
    duration_minutes: int | None = None
    ticket: str | None = None
    severity: Literal[1, 2, 3, 4] | None = None  # P1..P4 words seen in the text
    justification: str | None = None  # cleaned text to prefill
    target_upn: str | None = None  # "for alice@contoso.example"
    least_privilege: str | None = None  # entitlement id that would be enough, when smaller than requested
    notes: list[str] = []  # short human-readable explanations of what was recognised
    source: Literal["rules", "llm"]


class PrefillResult(BaseModel):
    """Values to prefill the intake form with. The requester still edits and submits the form themselves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entitlement: str | None  # an id from the requester's eligible entitlements, or None
    duration_minutes: int | None  # whole minutes, 1..the chosen entitlement's longest maximum
    justification: str
    ticket: str  # "" when none was recognised
    target: str  # a UPN, or "" for the requester themselves
    note: str | None  # "Suggested from your message: Global Administrator, 30 minutes, INC0012345"
    dropped: list[str]  # what was suggested but not used, and why


@runtime_checkable
class TriageProvider(Protocol):
    async def suggest(self, text: str, policy: PolicyDocument) -> Suggestion | None: ...

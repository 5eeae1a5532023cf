"""What triage hands back: a Suggestion (what was recognised) and a PrefillResult (the form values).

Neither type has a field through which anything could be approved, granted or executed: a suggestion only ever
becomes prefill values for an intake form that a human edits and submits.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from policies.document import PolicyDocument

FieldSource = Literal["message", "rules", "ai"]


class Suggestion(BaseModel):
    """What triage recognised in a requester's text. Advisory: `prefill` decides what reaches the form."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entitlement: str | None = None  # an entitlement id from the policy, never free text
    # A bundle id from the policy: the message named the bundle, or exactly its roles (never more than asked).
    bundle: str | None = None
    duration_minutes: int | None = None
    ticket: str | None = None
    severity: Literal[1, 2, 3, 4] | None = None  # P1..P4 words seen in the text
    justification: str | None = None  # the person's own text, cleaned (the model never writes one)
    target_upn: str | None = None  # "for alice@contoso.example"
    least_privilege: str | None = None  # entitlement id that would be enough, when smaller than requested
    notes: list[str] = []  # short explanations of what was recognised (our words, never the model's)
    source: Literal["rules", "llm"]
    # Per set field, where it came from: the person's own words, the deterministic rules, or the model. A field
    # without an entry came from `source` ("llm" meaning the model).
    origins: dict[str, FieldSource] = {}
    # The role the person's message named, or the rules derived from the task it describes; never the model's.
    asked: str | None = None
    # The model's role when it is not the one in `entitlement` (kept out of the form; said in a note).
    ai_entitlement: str | None = None

    def origin(self, field: str) -> FieldSource:
        if field == "justification":
            return "message"
        return self.origins.get(field) or ("ai" if self.source == "llm" else "rules")


class PrefillResult(BaseModel):
    """Values to prefill the intake form with. The requester still edits and submits the form themselves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entitlement: str | None  # an id from the requester's eligible entitlements or bundles, or None
    duration_minutes: int | None  # whole minutes, 1..the longest this requester can get
    justification: str  # always the person's own words
    ticket: str  # "" when none was recognised
    target: str  # a UPN, or "" for the requester themselves
    # Form field -> "message" / "rules" / "ai", for every field given a value.
    origins: dict[str, FieldSource] = {}
    asked: str | None = None  # the role the message named or the rules derived, if any
    notes: list[str] = []  # sentences for the card: what was suggested, from where, and what was not used
    dropped: list[str] = []  # the sentences among `notes` about what was suggested but not used, and why

    @property
    def note(self) -> str | None:
        return " ".join(self.notes) or None

    def by_ai(self) -> list[str]:
        return [f for f, o in self.origins.items() if o == "ai"]


@runtime_checkable
class TriageProvider(Protocol):
    async def suggest(self, text: str, policy: PolicyDocument) -> Suggestion | None: ...

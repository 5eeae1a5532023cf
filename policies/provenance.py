"""Where each field of a submitted request came from, kept on the stored request so that every card says what the
audit says: what the person wrote, what the deterministic rules read in it, and what a model chose.

Provenance is computed on the server from the stored draft (what the form was prefilled with, and from where) and
the submitted values; nothing the card sends back can claim a field was the person's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from policies.model import Frozen


class Origin(StrEnum):
    MESSAGE = "message"  # copied from the person's own words
    RULES = "rules"  # recognised in the person's message by the deterministic rules
    AI = "ai"  # chosen by the model and left as it was
    DEFAULT = "default"  # a form default: nothing was recognised
    FORM = "form"  # entered or changed by the person on the form


# Form value key -> provenance field.
FORM_FIELDS: dict[str, str] = {
    "entitlement": "entitlement",
    "duration_minutes": "duration",
    "justification": "justification",
    "ticket": "ticket",
    "target": "target",
}


class Provenance(Frozen):
    entitlement: Origin = Origin.FORM
    duration: Origin = Origin.FORM
    justification: Origin = Origin.FORM
    ticket: Origin = Origin.FORM
    target: Origin = Origin.FORM
    # The role the person's message named (or the rules derived from the task), whatever was finally submitted.
    asked: str | None = None
    asked_name: str = ""

    def by(self, origin: Origin) -> list[str]:
        return [f for f in FORM_FIELDS.values() if getattr(self, f) is origin]


def _same(a: object, b: object) -> bool:
    def norm(v: object) -> object:
        return "" if v is None else (v.strip() if isinstance(v, str) else v)
    return norm(a) == norm(b)


def settle(prefilled: Mapping[str, object], origins: Mapping[str, str], submitted: Mapping[str, object], *,
           asked: str | None = None, asked_name: str = "") -> Provenance:
    """A field keeps its prefill origin when the person submitted the prefilled value unchanged, else it is theirs."""
    values: dict[str, object] = {"asked": asked, "asked_name": asked_name}
    for key, field in FORM_FIELDS.items():
        if key in prefilled and _same(prefilled.get(key), submitted.get(key)):
            try:
                values[field] = Origin(str(origins.get(key) or Origin.DEFAULT))
            except ValueError:
                values[field] = Origin.FORM
        else:
            values[field] = Origin.FORM
    return Provenance.model_validate(values)

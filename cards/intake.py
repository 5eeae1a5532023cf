"""The request form. It comes back pre-filled with the user's input and inline errors when the server refuses it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cards import layout as lay
from cards.builder import Element, choice_input, container, execute, render, text, text_input
from cards.verbs import (
    INPUT_AFFECTED,
    INPUT_DURATION,
    INPUT_ENTITLEMENT,
    INPUT_JUSTIFICATION,
    INPUT_TARGET,
    INPUT_TICKET,
    Verb,
    draft_data,
)
from policies.durations import format_duration

DURATION_MINUTES = (15, 30, 60, 120, 240, 480)
JUSTIFICATION_MAX = 2000
TICKET_MAX = 64
TARGET_MAX = 256


@dataclass(frozen=True)
class EntitlementChoice:
    id: str
    display_name: str
    max_duration: timedelta
    needs_approval: bool
    is_group: bool = False  # a group's membership or ownership rather than a directory role


@dataclass(frozen=True)
class IntakeForm:
    entitlement: str | None
    duration_minutes: int | None
    justification: str
    ticket: str
    target: str  # UPN, or "" for the requester themself
    affected: str = ""  # UPN of the incident's affected account, or "" (the ticket may name it)


# Form value key (as triage and the draft record name them) -> the input on the card.
_INPUT_OF = {"entitlement": INPUT_ENTITLEMENT, "duration_minutes": INPUT_DURATION,
             "justification": INPUT_JUSTIFICATION, "ticket": INPUT_TICKET, "target": INPUT_TARGET}
AI_MARK = "Suggested by AI, not by you: check it before you submit."


def intake_card(choices: list[EntitlementChoice], form: IntakeForm, *, draft_id: str,
                field_errors: dict[str, str] | None = None, problems: list[str] | None = None,
                triage_note: str | None = None, triage_notes: list[str] | None = None,
                suggested_by_ai: frozenset[str] = frozenset(),
                allow_other_target: bool = False, ask_affected: bool = False) -> dict[str, Any]:
    """`triage_notes`: sentences saying what was prefilled and from where; `suggested_by_ai`: form values the model
    chose (keys as in `IntakeForm`), each marked under its input."""
    errors = dict(field_errors or {})
    fields = [INPUT_ENTITLEMENT, INPUT_DURATION, INPUT_JUSTIFICATION, INPUT_TICKET]
    if allow_other_target:
        fields.append(INPUT_TARGET)
    if ask_affected:
        fields.append(INPUT_AFFECTED)
    # An error for a field that is not on the card must not get lost: it joins the list at the top.
    top = [*(problems or []), *(msg for key, msg in errors.items() if key not in fields)]

    body: list[Element] = [lay.header("Request temporary admin access", kicker="breakglass")]
    if top:
        body.append(container([text("Please fix:", bold=True, color="attention"),
                               *lay.bullets(top, color="attention")], style="attention"))
    if triage_note:
        body.append(text(triage_note, limit=500, subtle=True))
    if triage_notes:
        # Each note is a sentence with its own lead ("Suggested from your message: ...", "Suggested by AI ...").
        body.extend(lay.bullets(triage_notes[:8], limit=300))
    if not choices:
        body.append(text("No roles are available to you under the current policy.", color="attention"))
        return render(body, fallback_text="Request temporary admin access")

    inputs: dict[str, Element] = {
        INPUT_ENTITLEMENT: _entitlement_input(choices, form),
        INPUT_DURATION: _duration_input(choices, form),
        INPUT_JUSTIFICATION: text_input(
            INPUT_JUSTIFICATION, label="Justification", value=form.justification, multiline=True, required=True,
            max_length=JUSTIFICATION_MAX, placeholder="What will you do, and why?",
            error_message="Say what you will do and why."),
        INPUT_TICKET: text_input(INPUT_TICKET, label="Ticket", value=form.ticket, placeholder="INC0012345",
                                 max_length=TICKET_MAX),
        INPUT_TARGET: text_input(INPUT_TARGET, label="For someone else (UPN)", value=form.target,
                                 placeholder="leave empty for yourself", max_length=TARGET_MAX),
        INPUT_AFFECTED: text_input(INPUT_AFFECTED, label="Affected account (UPN; security incidents only)",
                                   value=form.affected, max_length=TARGET_MAX,
                                   placeholder="the compromised account; leave empty if the ticket names it"),
    }
    by_ai = {_INPUT_OF[f] for f in suggested_by_ai if f in _INPUT_OF}
    for field in fields:
        body.append(inputs[field])
        if field in by_ai:
            body.append(text(AI_MARK, color="warning", spacing="small"))
        if errors.get(field):
            body.append(text(errors[field], limit=300, color="attention", spacing="small"))

    submit = execute("Submit request", Verb.REQUEST_SUBMIT, draft_data(draft_id), style="positive")
    return render(body, [submit], fallback_text="Request temporary admin access")


def _entitlement_input(choices: list[EntitlementChoice], form: IntakeForm) -> Element:
    options = [(f"{c.display_name} (up to {format_duration(c.max_duration)}, "
                f"{'needs approval' if c.needs_approval else 'no approval'})", c.id) for c in choices]
    value = form.entitlement if form.entitlement in {c.id for c in choices} else None
    if any(c.is_group for c in choices):
        return choice_input(INPUT_ENTITLEMENT, options, label="Role or group", value=value,
                            placeholder="Choose a role or a group", required=True,
                            error_message="Choose a role or a group.")
    return choice_input(INPUT_ENTITLEMENT, options, label="Role", value=value, placeholder="Choose a role",
                        required=True, error_message="Choose a role.")


def _duration_input(choices: list[EntitlementChoice], form: IntakeForm) -> Element:
    longest = max(int(c.max_duration.total_seconds() // 60) for c in choices)
    minutes = {m for m in DURATION_MINUTES if m <= longest} or ({longest} if longest > 0 else set())
    # A prefill beyond every role's maximum (a triage guess of "99 hours") is not offered at all.
    prefill = form.duration_minutes if form.duration_minutes and 0 < form.duration_minutes <= longest else None
    if prefill is not None:
        minutes.add(prefill)
    return choice_input(INPUT_DURATION, [(lay.minutes_words(m), str(m)) for m in sorted(minutes)],
                        label="Duration", value=str(prefill) if prefill is not None else None,
                        placeholder="Choose a duration", required=True, error_message="Choose a duration.")

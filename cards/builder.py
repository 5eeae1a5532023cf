"""The one place that talks to adaptive-cards-py: element factories and `render()` to a plain dict.

Every markdown-rendered string (TextBlock text, Fact title and value, card fallbackText) is escaped here with
`safe_text`/`safe_line`, so callers pass raw strings and cannot forget (or double-apply) the escaping.

Quirks of adaptive-cards-py 0.4.x worked around here and nowhere else:
* `AdaptiveCard.to_dict()` returns enum members (`Colors.ATTENTION`), not strings: we dump with mode="json".
* Every action serialises `"mode": "primary"` by default: the action factories pass `mode=None`.
* `types.Refresh.action` is typed `str`, but the schema wants an Action.Execute object (and pydantic would
  serialise a subclass by the declared type anyway): `render()` dumps the Execute action itself and writes the
  `refresh` object into the card dict.
* Cards nested in Action.ShowCard default to version "1.0": `show_card()` sets the card version.
* `ChoiceInputStyle.FILTERED` is a 1.6 value the 1.5 schema rejects: `choice_input()` only uses "compact".
* Models put "type" last; `render()` moves it first so the JSON reads like the documentation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from adaptive_cards import card as ac
from adaptive_cards import types as at
from pydantic import BaseModel

from cards.text import input_value, plain_line, safe_line, safe_text
from cards.verbs import VERB_KEY, Verb

SCHEMA_URL = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.5"
MAX_REFRESH_USERS = 60  # Teams ignores refresh.userIds beyond 60 entries
TEAMS_USER_PREFIX = "29:"

Color = Literal["default", "dark", "light", "accent", "good", "warning", "attention"]
Size = Literal["default", "small", "medium", "large", "extraLarge"]
Spacing = Literal["default", "none", "small", "medium", "large", "extraLarge", "padding"]
ContainerStyle = Literal["default", "emphasis", "good", "attention", "warning", "accent"]
ActionStyle = Literal["default", "positive", "destructive"]

# The library's model types the other modules may name (only this module imports adaptive_cards).
Element = (ac.TextBlock | ac.FactSet | ac.Container | ac.ColumnSet | ac.ActionSet | ac.InputText
           | ac.InputChoiceSet)
Action = ac.ActionExecute | ac.ActionShowCard
Fact = ac.Fact
ColumnSet = ac.ColumnSet


# --- text -----------------------------------------------------------------------------------------------------

def text(value: str, *, limit: int = 1000, line: bool = False, size: Size | None = None, bold: bool = False,
         color: Color | None = None, subtle: bool = False, heading: bool = False, spacing: Spacing | None = None,
         separator: bool = False) -> ac.TextBlock:
    """A wrapped TextBlock; `value` is raw text and is escaped here."""
    return ac.TextBlock(
        text=safe_line(value, limit) if line else safe_text(value, limit),
        wrap=True,
        size=at.FontSize(size) if size else None,
        weight=at.FontWeight.BOLDER if bold else None,
        color=at.Colors(color) if color else None,
        is_subtle=True if subtle else None,
        style=at.TextBlockStyle.HEADING if heading else None,
        spacing=at.Spacing(spacing) if spacing else None,
        separator=True if separator else None,
    )


def fact(title: str, value: str, *, limit: int = 300) -> Fact:
    return ac.Fact(title=safe_line(title, 60), value=safe_text(value, limit) or "—")


def fact_set(facts: Iterable[Fact], *, spacing: Spacing | None = None) -> ac.FactSet:
    return ac.FactSet(facts=list(facts), spacing=at.Spacing(spacing) if spacing else None)


# --- layout ---------------------------------------------------------------------------------------------------

def container(items: Sequence[Element], *, style: ContainerStyle | None = None, spacing: Spacing | None = None,
              separator: bool = False) -> ac.Container:
    return ac.Container(items=list(items), style=at.ContainerStyle(style) if style else None,
                        spacing=at.Spacing(spacing) if spacing else None, separator=True if separator else None)


def columns(*cols: tuple[Sequence[Element], str], spacing: Spacing | None = None,
            separator: bool = False) -> ColumnSet:
    """A ColumnSet from (items, width) pairs; width is "auto", "stretch" or a weight such as "2"."""
    return ac.ColumnSet(
        columns=[ac.Column(items=list(items), width=width, vertical_content_alignment=at.VerticalAlignment.CENTER)
                 for items, width in cols],
        spacing=at.Spacing(spacing) if spacing else None,
        separator=True if separator else None,
    )


# --- inputs ---------------------------------------------------------------------------------------------------

def text_input(input_id: str, *, label: str, value: str = "", placeholder: str | None = None,
               multiline: bool = False, required: bool = False, max_length: int = 200,
               error_message: str | None = None) -> ac.InputText:
    prefill = input_value(value, max_length, multiline=multiline)
    return ac.InputText(
        id=input_id, label=label, placeholder=placeholder, value=prefill or None,
        is_multiline=True if multiline else None, is_required=True if required else None, max_length=max_length,
        error_message=error_message,
    )


def choice_input(input_id: str, choices: Iterable[tuple[str, str]], *, label: str, value: str | None = None,
                 placeholder: str | None = None, required: bool = False,
                 error_message: str | None = None) -> ac.InputChoiceSet:
    """A compact (drop-down) ChoiceSet from (title, value) pairs; titles are shown without markdown."""
    return ac.InputChoiceSet(
        id=input_id, label=label, style=at.ChoiceInputStyle.COMPACT, value=value, placeholder=placeholder,
        choices=[ac.InputChoice(title=plain_line(title, 120), value=val) for title, val in choices],
        is_required=True if required else None, error_message=error_message,
    )


# --- actions --------------------------------------------------------------------------------------------------

def execute(title: str, verb: Verb, data: Mapping[str, str], *, style: ActionStyle | None = None) -> ac.ActionExecute:
    """Action.Execute with an Action.Submit fallback carrying {"verb": ..., **data} for legacy clients."""
    payload = dict(data)
    action_style = at.ActionStyle(style) if style else None
    fallback = ac.ActionSubmit(title=title, data={VERB_KEY: verb.value, **payload}, style=action_style, mode=None)
    return ac.ActionExecute(title=title, verb=verb.value, data=payload, style=action_style, fallback=fallback,
                            mode=None)


def action_set(actions: Sequence[Action], *, spacing: Spacing | None = None) -> ac.ActionSet:
    """Buttons inside the body (next to the line they act on), not at the card's foot."""
    return ac.ActionSet(actions=list(actions), spacing=at.Spacing(spacing) if spacing else None)


def show_card(title: str, body: Sequence[Element], actions: Sequence[Action],
              *, style: ActionStyle | None = None) -> ac.ActionShowCard:
    inner = ac.AdaptiveCard(version=CARD_VERSION, body=list(body), actions=list(actions) or None)
    return ac.ActionShowCard(title=title, card=inner, style=at.ActionStyle(style) if style else None, mode=None)


@dataclass(frozen=True)
class Refresh:
    """`refresh` for Universal Actions: Teams runs `action` for `user_ids` (MRIs) and shows them the result."""

    action: ac.ActionExecute
    user_ids: tuple[str, ...]


def refresh(action: ac.ActionExecute, user_ids: Iterable[str]) -> Refresh:
    """userIds must be Teams MRIs ("29:..."), at most 60. Anything else (an Entra object id passed by mistake)
    is left out rather than failing the whole card: those users still get the base card, and approvers also
    get their personal approval card."""
    ids = [i for i in dict.fromkeys(user_ids) if i.startswith(TEAMS_USER_PREFIX)]
    return Refresh(action=action, user_ids=tuple(ids[:MAX_REFRESH_USERS]))


# --- rendering ------------------------------------------------------------------------------------------------

def render(body: Sequence[Element], actions: Sequence[Action] = (), *, refresh: Refresh | None = None,
           fallback_text: str | None = None) -> dict[str, Any]:
    """The finished card as a plain JSON-able dict (Adaptive Cards 1.5, no None values)."""
    card = ac.AdaptiveCard(
        version=CARD_VERSION, schema_=SCHEMA_URL, body=list(body), actions=list(actions) or None,
        fallback_text=safe_line(fallback_text, 200) if fallback_text else None,
    )
    dumped = _dump(card)
    out: dict[str, Any] = {"$schema": SCHEMA_URL, "type": "AdaptiveCard", "version": CARD_VERSION}
    if refresh is not None:
        out["refresh"] = {"action": _dump(refresh.action), "userIds": list(refresh.user_ids)}
    out.update((k, v) for k, v in dumped.items() if k not in out)
    if _has_inputs_or_tables(out.get("body")) or _has_inputs_or_tables(out.get("actions")):
        # Teams' host extension: at the default width a choice set's options and a fact table's values are cut off.
        out["msteams"] = {"width": "Full"}
    return out


def _has_inputs_or_tables(node: Any) -> bool:
    if isinstance(node, dict):
        if str(node.get("type", "")).startswith("Input.") or node.get("type") in {"Table", "FactSet"}:
            return True
        return any(_has_inputs_or_tables(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_inputs_or_tables(v) for v in node)
    return False


def prepare() -> None:
    """Complete adaptive-cards-py's pydantic models now. The library leaves most of them unfinished (forward
    references) and pydantic builds each on first use; a forked RQ work horse repeats that build for every job and
    throws it away on exit (50-70 ms, most of a card job's time). Workers call this before forking."""
    for module in (ac, at):
        for value in list(vars(module).values()):
            if (isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == module.__name__
                    and not value.__pydantic_complete__):
                value.model_rebuild()


def _dump(model: ac.ComponentBaseModel) -> dict[str, Any]:
    data = model.model_dump(mode="json", by_alias=True, exclude_none=True, warnings=False)
    return _type_first(data)


def _type_first(value: Any) -> Any:
    if isinstance(value, dict):
        ordered = {"type": value["type"]} if "type" in value else {}
        ordered.update((k, _type_first(v)) for k, v in value.items() if k != "type")
        return ordered
    if isinstance(value, list):
        return [_type_first(v) for v in value]
    return value

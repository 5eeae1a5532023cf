"""Assertions shared by the card tests: schema validity, plain JSON, no clickable links, action data shape."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft6Validator

from cards.text import BIDI_CONTROLS, ZERO_WIDTH
from cards.verbs import Verb

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "adaptive-card-1.5.json"
MAX_CARD_BYTES = 28_000  # Teams refuses cards above roughly 28 KB

# --- links ----------------------------------------------------------------------------------------------------

_RAW_PATTERNS = [
    ("markdown link", re.compile(r"\]\(")),
    ("markdown reference link", re.compile(r"\]\[")),
    ("markdown image", re.compile(r"!\[")),
    ("url scheme", re.compile(r"://")),
    ("www host", re.compile(r"(?i)(?<![\w.-])www\.")),
    ("mailto", re.compile(r"(?i)mailto:")),
    ("template function", re.compile(r"\{\{")),
]
# Checked after masking backslash escapes, so "\[x\] (y)" is fine but "[x] (y)" is not.
_UNESCAPED_PATTERNS = [
    ("markdown link", re.compile(r"\[[^\]\n]*\]\s*[\(\[]")),
    ("markdown image", re.compile(r"!\[")),
    ("markdown reference definition", re.compile(r"(?m)^\s{0,3}\[[^\]\n]*\]:")),
    ("autolink", re.compile(r"<[A-Za-z][A-Za-z0-9+.-]*:")),
    ("html anchor", re.compile(r"(?i)<a[\s>]")),
]
_URL_KEYS = {"url", "iconUrl", "backgroundImage", "selectAction"}


def text_links(value: str) -> list[str]:
    """Link-shaped things in one string: markdown links/images, URL schemes, www hosts, autolinks."""
    found = [f"{name}: {value[:80]!r}" for name, rx in _RAW_PATTERNS if rx.search(value)]
    masked = re.sub(r"\\.", "\x00", value, flags=re.DOTALL)
    found += [f"{name}: {value[:80]!r}" for name, rx in _UNESCAPED_PATTERNS if rx.search(masked)]
    return found


def find_links(card: dict[str, Any]) -> list[str]:
    """Every clickable (or remote-loading) thing in a card: link markdown, "://", www/mailto, Action.OpenUrl,
    url-bearing properties. Not scanned: "$schema", input values (what the user typed, shown back in an input
    box, never rendered as markdown) and choice values (ids)."""
    return list(_find(card, "$"))


def _find(node: Any, path: str, in_choices: bool = False) -> Iterator[str]:
    if isinstance(node, dict):
        if node.get("type") == "Action.OpenUrl":
            yield f"{path}: Action.OpenUrl"
        is_input = str(node.get("type", "")).startswith("Input.")
        for key, value in node.items():
            if key in _URL_KEYS:
                yield f"{path}.{key}: url-bearing property"
            if key == "$schema" or (key == "value" and (is_input or in_choices)):
                continue
            yield from _find(value, f"{path}.{key}", in_choices=is_input and key == "choices")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _find(value, f"{path}[{i}]", in_choices)
    elif isinstance(node, str):
        yield from (f"{path}: {hit}" for hit in text_links(node))


# --- walking --------------------------------------------------------------------------------------------------

def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def of_type(card: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [d for d in walk(card) if d.get("type") == type_]


def texts(card: dict[str, Any]) -> list[str]:
    """Every TextBlock text and fact "title: value", in order."""
    out = []
    for d in walk(card):
        if d.get("type") == "TextBlock":
            out.append(d["text"])
        elif "title" in d and "value" in d and "type" not in d:
            out.append(f"{d['title']}: {d['value']}")
    return out


def all_text(card: dict[str, Any]) -> str:
    return "\n".join(texts(card))


def facts(card: dict[str, Any]) -> dict[str, str]:
    return {f["title"]: f["value"] for fs in of_type(card, "FactSet") for f in fs["facts"]}


def executes(card: dict[str, Any]) -> list[dict[str, Any]]:
    """Action.Execute buttons (the refresh action excluded)."""
    refresh = card.get("refresh", {}).get("action")
    return [d for d in of_type(card, "Action.Execute") if d is not refresh]


def inputs(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in walk(card) if str(d.get("type", "")).startswith("Input.")}


# --- the invariants every card must hold ----------------------------------------------------------------------

@cache
def validator() -> Draft6Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft6Validator.check_schema(schema)
    return Draft6Validator(schema)


# The one Teams host extension our cards use (full-width cards, so inputs and tables are not truncated); the 1.5
# schema forbids every unknown key, so it is allow-listed here and nothing else is (schemas/README.md).
TEAMS_FULL_WIDTH = {"width": "Full"}


def schema_errors(card: dict[str, Any]) -> list[str]:
    if card.get("msteams") == TEAMS_FULL_WIDTH:
        card = {k: v for k, v in card.items() if k != "msteams"}
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator().iter_errors(card)]


def has_inputs_or_tables(node: Any) -> bool:
    if isinstance(node, dict):
        if str(node.get("type", "")).startswith("Input.") or node.get("type") in {"Table", "FactSet"}:
            return True
        return any(has_inputs_or_tables(v) for k, v in node.items() if k != "refresh")
    if isinstance(node, list):
        return any(has_inputs_or_tables(v) for v in node)
    return False


def assert_plain_json(node: Any, path: str = "$") -> None:
    """Only dict/list/str/int/float/bool (exact types, no enums or models) and no None."""
    assert node is not None, f"None at {path}"
    if isinstance(node, dict):
        assert type(node) is dict, f"{type(node)} at {path}"
        for key, value in node.items():
            assert type(key) is str, f"key {key!r} at {path}"
            assert_plain_json(value, f"{path}.{key}")
    elif isinstance(node, list):
        assert type(node) is list, f"{type(node)} at {path}"
        for i, value in enumerate(node):
            assert_plain_json(value, f"{path}[{i}]")
    else:
        assert type(node) in (str, int, float, bool), f"{type(node).__name__} at {path}: {node!r}"


ALLOWED_DATA = {
    Verb.REQUEST_SUBMIT: {"draftId"},
    Verb.REQUEST_APPROVE: {"requestId", "terms"},
    Verb.REQUEST_DENY: {"requestId", "terms"},
    Verb.REQUEST_CANCEL: {"requestId"},
    Verb.REQUEST_REFRESH: {"requestId"},
    Verb.GRANT_DEACTIVATE: {"requestId"},
    Verb.GRANT_EXTEND: {"requestId"},
}


def assert_actions_well_formed(card: dict[str, Any]) -> None:
    for action in of_type(card, "Action.Execute"):
        verb = Verb(action["verb"])
        assert set(action["data"]) == ALLOWED_DATA[verb], action
        fallback = action.get("fallback")
        assert isinstance(fallback, dict) and fallback["type"] == "Action.Submit", action
        assert fallback["data"] == {"verb": verb.value, **action["data"]}, fallback
    for action in of_type(card, "Action.Submit"):
        assert "verb" in action.get("data", {}), f"Action.Submit outside a fallback: {action}"


def assert_no_invisible(card: dict[str, Any]) -> None:
    blob = json.dumps(card, ensure_ascii=False)
    bad = {ch for ch in blob if ch in BIDI_CONTROLS or ch in ZERO_WIDTH or unicodedata.category(ch) == "Cf"}
    assert not bad, f"invisible characters: {sorted(map(hex, map(ord, bad)))}"


def check_card(card: dict[str, Any]) -> None:
    """Everything any card must satisfy, whatever it shows."""
    errors = schema_errors(card)
    assert not errors, "\n".join(errors[:10])
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.5"
    assert_plain_json(card)
    assert json.loads(json.dumps(card)) == card
    assert find_links(card) == []
    assert_actions_well_formed(card)
    assert_no_invisible(card)
    # Full width exactly where a card has inputs or tables (at the default width Teams truncates the Role choice).
    assert card.get("msteams") == (TEAMS_FULL_WIDTH if has_inputs_or_tables(card) else None), card.get("msteams")
    assert len(json.dumps(card).encode()) < MAX_CARD_BYTES

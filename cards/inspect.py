"""Reading cards back (the demo, tests and tooling): inputs and their values, Action.Execute verbs and data, and
the text a person sees. Pure functions over the dicts the renderers produce."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any


def _nodes(node: Any, *, skip: frozenset[str] = frozenset()) -> Iterator[dict[str, Any]]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(v for k, v in reversed(list(item.items())) if k not in skip)
        elif isinstance(item, list):
            stack.extend(reversed(item))


def inputs(card: dict[str, Any]) -> dict[str, Any]:
    """id -> value of every input on a card (walking containers, columns and show-cards)."""
    return {n["id"]: n.get("value") for n in _nodes(card)
            if str(n.get("type", "")).startswith("Input.") and "id" in n}


def executes(card: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(verb, data) of every Action.Execute a person can click (the refresh action is not a button)."""
    return [(n["verb"], n.get("data") or {}) for n in _nodes(card, skip=frozenset({"refresh"}))
            if n.get("type") == "Action.Execute"]


def execute_data(card: dict[str, Any], verb: str) -> dict[str, Any]:
    for found, data in executes(card):
        if found == verb:
            return data
    raise KeyError(f"no {verb} button on the card")


def text(card: dict[str, Any]) -> str:
    """The words on the card, markdown escapes removed ("Auto\\-approved" reads "Auto-approved")."""
    parts = [n[key] for n in _nodes(card) for key in ("text", "value", "title") if isinstance(n.get(key), str)]
    return re.sub(r"\\(.)", r"\1", "\n".join(parts))

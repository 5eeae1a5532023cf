"""A one-line notice on top of a card ("Already approved by Dana at 10:04 UTC"), for invoke responses."""

from __future__ import annotations

import copy
from typing import Any, Literal

from cards.text import safe_text

Tone = Literal["info", "good", "warning", "attention"]
_COLORS = {"info": "accent", "good": "good", "warning": "warning", "attention": "attention"}


def with_notice(card: dict[str, Any], message: str, tone: Tone = "info") -> dict[str, Any]:
    out = copy.deepcopy(card)
    block = {"type": "TextBlock", "text": safe_text(message, 400), "wrap": True, "weight": "Bolder",
             "color": _COLORS[tone]}
    out["body"] = [block, *out.get("body", [])]
    return out

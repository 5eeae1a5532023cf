"""Text typed by people, cleaned once where it enters breakglass (the intake form, the ITSM webhook, chat messages,
approvers' deny reasons, display names from Teams).

Cleaning keeps what a person meant and drops what only changes how text renders or is read back: control
characters other than the newline (ESC, CR, BEL, BS ... a CR alone or CRLF becomes a newline), bidirectional
controls (U+202E can make "4h" display as "h4"), zero-width and other format characters, surrogates, private-use
and unassigned code points. Cleaning is idempotent. It is not encoding: every sink (a ServiceNow work note, HTML
for Freshservice and Halo, the evidence Markdown, a Teams summary, a card) still encodes for itself.
"""

from __future__ import annotations

import re
import unicodedata

BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff")
# Not format characters, but render as nothing (fillers, the combining grapheme joiner, Khmer inherent vowels).
INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180e\u3164\uffa0")
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def clean_input(value: object, limit: int | None = None, *, multiline: bool = True) -> str:
    """What a person typed, safe to store: NFC, no invisible or control characters except newlines (with
    `multiline`; otherwise one line with single spaces), trailing spaces and runs of blank lines trimmed, at most
    `limit` characters."""
    text = unicodedata.normalize("NFC", str(value) if value is not None else "")
    if limit is not None:
        text = text[: limit * 4]  # bounds the work on a huge paste before anything is dropped
    out: list[str] = []
    for ch in text.replace("\r\n", "\n"):
        if ch in _LINE_BREAKS:
            out.append("\n" if multiline else " ")
        elif ch == "\t":
            out.append(" ")
        elif ch in BIDI_CONTROLS or ch in ZERO_WIDTH or ch in INVISIBLE:
            continue
        elif unicodedata.category(ch) in _DROPPED_CATEGORIES:
            continue
        else:
            out.append(ch)
    cleaned = "".join(out)
    if multiline:
        cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(line.rstrip() for line in cleaned.split("\n"))).strip()
    else:
        cleaned = " ".join(cleaned.split())
    # Again: a dropped character between a letter and its accent leaves a sequence NFC composes.
    cleaned = unicodedata.normalize("NFC", cleaned)
    if limit is not None and len(cleaned) > limit:
        cleaned = cleaned[:limit].rstrip()
    return cleaned


def one_line(value: object, limit: int | None = None) -> str:
    """A cleaned value folded onto one line (names, ticket numbers, reasons placed inside a sentence)."""
    return clean_input(value, limit, multiline=False)

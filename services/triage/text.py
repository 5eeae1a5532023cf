"""Text helpers shared by the rules, the LLM boundary and prefill."""

from __future__ import annotations

import re
import unicodedata

# Characters an approver would not see but that change how text renders or compares: zero-width joiners,
# bidirectional overrides (which can make "4h" display as "h4"), control characters other than newline/tab.
_INVISIBLE = {"Cf", "Cc", "Co", "Cs"}
_KEEP = {"\n", "\t"}

EMAIL = re.compile(r"[a-z0-9._%+'#!$&*=?^`{|}~-]{1,64}@"
                   r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", re.IGNORECASE)
_UPN = re.compile(rf"^{EMAIL.pattern}$", re.IGNORECASE)
UPN_MAX = 113  # Entra: 64 for the prefix, 48 for the domain, the "@"


def strip_invisible(text: str) -> str:
    return "".join(ch for ch in text if ch in _KEEP or unicodedata.category(ch) not in _INVISIBLE)


def clean_text(text: str, limit: int) -> str:
    """The requester's words tidied for a form field: NFC, no invisible characters, trimmed, ≤ `limit`."""
    text = strip_invisible(unicodedata.normalize("NFC", text)).replace("\t", " ")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    out = "\n".join(lines).strip()
    out = re.sub(r"\n{3,}", "\n\n", out)
    if len(out) > limit:
        out = out[:limit].rstrip()
    return out


def fold(text: str) -> str:
    """Compatibility-folded, lower-cased text without invisible characters (for matching)."""
    return strip_invisible(unicodedata.normalize("NFKC", text)).lower()


def words(text: str) -> str:
    """Lower-cased alphanumeric words separated by single spaces: "Global-Admin's" -> "global admin s"."""
    return " ".join(re.findall(r"[^\W_]+", fold(text)))


def looks_like_upn(value: str) -> bool:
    return len(value) <= UPN_MAX and bool(_UPN.match(value))


def quote(fragment: str, limit: int = 40) -> str:
    fragment = " ".join(fragment.split())
    return fragment if len(fragment) <= limit else fragment[: limit - 1] + "…"
